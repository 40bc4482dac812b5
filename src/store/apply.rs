//! Applying commands to the state-machine data: the rules of each change (existence, counters,
//! quotas, version and release CAS, retention, audit) written into one `WriteBatch` through an
//! overlay, so later commands of the same batch read what earlier ones wrote. Every change checks
//! everything it can refuse before it writes anything, so a refusal leaves no trace.

use std::collections::BTreeMap;

use rocksdb::{WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{decode, encode, keys, Store, StoreError, CF_SM_DATA};
use crate::command::{Change, Command, CommandResponse, Level, Origin, ReleaseKind};
use crate::model::access::{Revocation, TokenRecord};
use crate::model::audit::{AuditAction, AuditRecord};
use crate::model::config::{default_format, versions_to_drop, Release, ReleaseAction, VersionMeta};
use crate::model::hierarchy::{AppRecord, EnvRecord, LevelInfo, QuotaUpdate, Quotas, TenantRecord};
use crate::model::release::{self, Labels, Rule};
use crate::model::{ConfigKey, ConfigRecord, Format, Namespace};

/// Reads through the writes of the current batch. Writes are kept by key, last one winning, and
/// become one `WriteBatch` at the end ([`Overlay::into_batch`]): range deletes first, then every
/// key's final value in key order. A key written by many commands of a batch (an env, app or
/// tenant record whose counters each new config moves) reaches RocksDB once, and sorted inserts
/// let the memtable's skiplist reuse its last position instead of searching from the top.
pub(super) struct Overlay<'a> {
    db: &'a DB,
    written: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    dropped_ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(db: &'a DB) -> Self {
        Overlay { db, written: BTreeMap::new(), dropped_ranges: Vec::new() }
    }

    /// The committed state under the batch (for scans; reads of single keys go through `get`).
    pub(super) fn db(&self) -> &'a DB {
        self.db
    }

    pub(super) fn data(&self) -> &'a rocksdb::ColumnFamily {
        Store::cf(self.db, CF_SM_DATA)
    }

    pub(super) fn get<T: DeserializeOwned>(&self, what: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        let raw = match self.written.get(key) {
            Some(value) => value.clone(),
            None if self.dropped_ranges.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice()) => {
                None
            }
            None => self.db.get_cf(self.data(), key)?,
        };
        raw.map(|r| decode(what, &r)).transpose()
    }

    fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.written.insert(key, Some(value));
    }

    pub(super) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.put_raw(key, encode(value));
    }

    pub(super) fn delete(&mut self, key: Vec<u8>) {
        self.written.insert(key, None);
    }

    /// Drops every key in each `[start, end)`, including what this batch wrote there before.
    fn delete_ranges(&mut self, ranges: Vec<(Vec<u8>, Vec<u8>)>) {
        for (start, end) in ranges {
            self.written.retain(|key, _| !(key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice()));
            self.dropped_ranges.push((start, end));
        }
    }

    /// The batch's effect on the data column family: the range deletes, then each written key's
    /// last value (a key written after a range delete that covers it was kept in `written`).
    pub(super) fn into_batch(self) -> WriteBatch {
        let data = Store::cf(self.db, CF_SM_DATA);
        let mut batch = WriteBatch::default();
        for (start, end) in &self.dropped_ranges {
            batch.delete_range_cf(data, start, end);
        }
        for (key, value) in self.written {
            match value {
                Some(value) => batch.put_cf(data, &key, &value),
                None => batch.delete_cf(data, &key),
            }
        }
        batch
    }
}

/// Applies the commands of one log entry: they share its revision and its leader timestamp.
pub(super) struct EntryApplier<'o, 'db> {
    pub(super) overlay: &'o mut Overlay<'db>,
    pub(super) revision: u64,
    pub(super) time_ms: u64,
    audit_seq: u32,
}

type Applied = Result<CommandResponse, StoreError>;

fn not_found(level: Level, name: impl ToString) -> CommandResponse {
    CommandResponse::NotFound { level, name: name.to_string() }
}

/// Hex sha256 of `bytes`: the checksum of version contents and schemas.
pub fn checksum(bytes: &[u8]) -> String {
    crate::backup::hex(&Sha256::digest(bytes))
}

impl<'o, 'db> EntryApplier<'o, 'db> {
    pub(super) fn new(overlay: &'o mut Overlay<'db>, revision: u64, time_ms: u64) -> Self {
        EntryApplier { overlay, revision, time_ms, audit_seq: 0 }
    }

    /// Applies one command, once per idempotency key (see `idempotency.rs`).
    pub(super) fn apply(&mut self, command: Command) -> Applied {
        match command.origin.idempotency_key.clone() {
            Some(key) => self.apply_once(&key, command),
            None => self.apply_change(command),
        }
    }

    pub(super) fn apply_change(&mut self, command: Command) -> Applied {
        let Command { origin, change } = command;
        match change {
            Change::PutTenant { tenant, description, quotas } => self.put_tenant(&origin, &tenant, description, quotas),
            Change::DeleteTenant { tenant, force } => self.delete_tenant(&origin, &tenant, force),
            Change::PutApp { tenant, app, description } => self.put_app(&origin, &tenant, &app, description),
            Change::DeleteApp { tenant, app, force } => self.delete_app(&origin, &tenant, &app, force),
            Change::PutEnv { namespace, description } => self.put_env(&origin, &namespace, description),
            Change::DeleteEnv { namespace, force } => self.delete_env(&origin, &namespace, force),
            Change::WriteVersion {
                key,
                format,
                content,
                message,
                expected_version,
                checked_schema,
                format_from_config,
            } => {
                let write =
                    VersionWrite { format, content, message, expected_version, checked_schema, format_from_config };
                self.write_version(&origin, &key, write)
            }
            Change::DeleteConfig { key, expected_version } => self.delete_config(&origin, &key, expected_version),
            Change::SetSchema { key, schema, checksum } => self.set_schema(&origin, &key, schema, checksum),
            Change::SetRelease { key, rules, expected_release, message, kind } => {
                self.set_release(&origin, &key, rules, expected_release, message, kind)
            }
            Change::CreateToken { id, name, role, scope, secret_sha256, ttl_ms } => {
                let record = TokenRecord {
                    id,
                    name,
                    role,
                    scope,
                    secret_sha256,
                    created_ms: self.time_ms,
                    created_by: origin.actor,
                    expires_ms: ttl_ms.map(|ttl| self.time_ms.saturating_add(ttl)),
                    revoked: None,
                };
                self.create_token(record)
            }
            Change::RevokeToken { id } => self.revoke_token(&origin, &id),
        }
    }

    fn audit(
        &mut self,
        origin: &Origin,
        action: AuditAction,
        resource: String,
        before: Option<u64>,
        after: Option<u64>,
    ) {
        let tenant = resource.split('/').next().unwrap_or_default().to_string();
        let record = AuditRecord {
            revision: self.revision,
            seq: self.audit_seq,
            time_ms: self.time_ms,
            actor: origin.actor.clone(),
            action,
            resource,
            before,
            after,
            request_id: origin.request_id.clone(),
        };
        self.overlay.put(keys::audit(&tenant, self.revision, self.audit_seq), &record);
        self.audit_seq += 1;
    }

    /// Tokens are not in a tenant's audit log (a cluster-wide token has no tenant): the record
    /// itself keeps who created and who revoked it, and when.
    fn create_token(&mut self, record: TokenRecord) -> Applied {
        let key = keys::token(&record.id);
        if self.overlay.get::<TokenRecord>("token record", &key)?.is_some() {
            return Ok(CommandResponse::AlreadyExists { detail: format!("token {} exists", record.id) });
        }
        self.overlay.put(key, &record);
        Ok(CommandResponse::Done { revision: self.revision })
    }

    /// Revoking twice keeps the first revocation.
    fn revoke_token(&mut self, origin: &Origin, id: &str) -> Applied {
        let key = keys::token(id);
        let Some(mut record) = self.overlay.get::<TokenRecord>("token record", &key)? else {
            return Ok(not_found(Level::Token, id));
        };
        if record.revoked.is_none() {
            record.revoked = Some(Revocation { time_ms: self.time_ms, by: origin.actor.clone() });
            self.overlay.put(key, &record);
        }
        Ok(CommandResponse::Done { revision: self.revision })
    }

    fn new_info(&self, description: Option<String>) -> LevelInfo {
        LevelInfo {
            description: description.unwrap_or_default(),
            created_revision: self.revision,
            created_ms: self.time_ms,
            revision: self.revision,
        }
    }

    fn tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.overlay.get("tenant record", &keys::tenant(tenant))
    }

    fn app(&self, tenant: &str, app: &str) -> Result<Option<AppRecord>, StoreError> {
        self.overlay.get("app record", &keys::app(tenant, app))
    }

    fn env(&self, namespace: &Namespace) -> Result<Option<EnvRecord>, StoreError> {
        self.overlay.get("env record", &keys::env(namespace))
    }

    fn config(&self, key: &ConfigKey) -> Result<Option<ConfigRecord>, StoreError> {
        self.overlay.get("config record", &keys::record(key))
    }

    /// The tenant's record, created (and audited) with default settings if it is missing.
    fn ensure_tenant(&mut self, origin: &Origin, tenant: &str) -> Result<TenantRecord, StoreError> {
        if let Some(record) = self.tenant(tenant)? {
            return Ok(record);
        }
        let record = TenantRecord { info: self.new_info(None), quotas: Quotas::default(), apps: 0, configs: 0 };
        self.overlay.put(keys::tenant(tenant), &record);
        self.audit(origin, AuditAction::TenantCreate, tenant.to_string(), None, None);
        Ok(record)
    }

    fn ensure_app(&mut self, origin: &Origin, tenant: &str, app: &str) -> Result<AppRecord, StoreError> {
        if let Some(record) = self.app(tenant, app)? {
            return Ok(record);
        }
        let mut owner = self.ensure_tenant(origin, tenant)?;
        owner.apps += 1;
        self.overlay.put(keys::tenant(tenant), &owner);
        let record = AppRecord { info: self.new_info(None), envs: 0, configs: 0 };
        self.overlay.put(keys::app(tenant, app), &record);
        self.audit(origin, AuditAction::AppCreate, format!("{tenant}/{app}"), None, None);
        Ok(record)
    }

    fn ensure_env(&mut self, origin: &Origin, namespace: &Namespace) -> Result<EnvRecord, StoreError> {
        if let Some(record) = self.env(namespace)? {
            return Ok(record);
        }
        let mut owner = self.ensure_app(origin, &namespace.tenant, &namespace.app)?;
        owner.envs += 1;
        self.overlay.put(keys::app(&namespace.tenant, &namespace.app), &owner);
        let record = EnvRecord { info: self.new_info(None), configs: 0 };
        self.overlay.put(keys::env(namespace), &record);
        self.audit(origin, AuditAction::EnvCreate, namespace.to_string(), None, None);
        Ok(record)
    }

    /// Adds `delta` live configs to the env, its app and its tenant (all of which exist).
    fn count_configs(&mut self, namespace: &Namespace, delta: i64) -> Result<(), StoreError> {
        let shift = |count: u64| count.saturating_add_signed(delta);
        if let Some(mut env) = self.env(namespace)? {
            env.configs = shift(env.configs);
            self.overlay.put(keys::env(namespace), &env);
        }
        if let Some(mut app) = self.app(&namespace.tenant, &namespace.app)? {
            app.configs = shift(app.configs);
            self.overlay.put(keys::app(&namespace.tenant, &namespace.app), &app);
        }
        if let Some(mut tenant) = self.tenant(&namespace.tenant)? {
            tenant.configs = shift(tenant.configs);
            self.overlay.put(keys::tenant(&namespace.tenant), &tenant);
        }
        Ok(())
    }

    fn put_tenant(
        &mut self,
        origin: &Origin,
        tenant: &str,
        description: Option<String>,
        quotas: QuotaUpdate,
    ) -> Applied {
        let revision = self.revision;
        let (record, created) = match self.tenant(tenant)? {
            Some(mut record) => {
                record.info.description = description.unwrap_or(record.info.description);
                record.info.revision = revision;
                record.quotas = quotas.applied_to(record.quotas);
                (record, false)
            }
            None => {
                let info = self.new_info(description);
                (TenantRecord { info, quotas: quotas.applied_to(Quotas::default()), apps: 0, configs: 0 }, true)
            }
        };
        self.overlay.put(keys::tenant(tenant), &record);
        let action = if created { AuditAction::TenantCreate } else { AuditAction::TenantUpdate };
        self.audit(origin, action, tenant.to_string(), None, None);
        Ok(CommandResponse::Put { created, revision })
    }

    fn delete_tenant(&mut self, origin: &Origin, tenant: &str, force: bool) -> Applied {
        let Some(record) = self.tenant(tenant)? else { return Ok(not_found(Level::Tenant, tenant)) };
        if record.apps > 0 && !force {
            let detail = format!(
                "tenant {tenant} still has {} app(s) and {} config(s): delete them first, or pass force=true to delete everything under it",
                record.apps, record.configs
            );
            return Ok(CommandResponse::NotEmpty { detail });
        }
        self.overlay.delete_ranges(keys::tenant_subtree(tenant));
        self.overlay.delete(keys::tenant(tenant));
        self.audit(origin, AuditAction::TenantDelete, tenant.to_string(), None, None);
        Ok(CommandResponse::Done { revision: self.revision })
    }

    fn put_app(&mut self, origin: &Origin, tenant: &str, app: &str, description: Option<String>) -> Applied {
        let revision = self.revision;
        let created = self.app(tenant, app)?.is_none();
        let mut record = self.ensure_app(origin, tenant, app)?;
        if !created {
            record.info.description = description.unwrap_or(record.info.description);
            record.info.revision = revision;
            self.audit(origin, AuditAction::AppUpdate, format!("{tenant}/{app}"), None, None);
        } else if let Some(description) = description {
            record.info.description = description;
        }
        self.overlay.put(keys::app(tenant, app), &record);
        Ok(CommandResponse::Put { created, revision })
    }

    fn delete_app(&mut self, origin: &Origin, tenant: &str, app: &str, force: bool) -> Applied {
        let Some(record) = self.app(tenant, app)? else { return Ok(not_found(Level::App, format!("{tenant}/{app}"))) };
        if record.envs > 0 && !force {
            let detail = format!(
                "app {tenant}/{app} still has {} env(s) and {} config(s): delete them first, or pass force=true to delete everything under it",
                record.envs, record.configs
            );
            return Ok(CommandResponse::NotEmpty { detail });
        }
        if let Some(mut owner) = self.tenant(tenant)? {
            owner.apps = owner.apps.saturating_sub(1);
            owner.configs = owner.configs.saturating_sub(record.configs);
            self.overlay.put(keys::tenant(tenant), &owner);
        }
        self.overlay.delete_ranges(keys::app_subtree(tenant, app));
        self.overlay.delete(keys::app(tenant, app));
        self.audit(origin, AuditAction::AppDelete, format!("{tenant}/{app}"), None, None);
        Ok(CommandResponse::Done { revision: self.revision })
    }

    fn put_env(&mut self, origin: &Origin, namespace: &Namespace, description: Option<String>) -> Applied {
        let revision = self.revision;
        let created = self.env(namespace)?.is_none();
        let mut record = self.ensure_env(origin, namespace)?;
        if !created {
            record.info.description = description.unwrap_or(record.info.description);
            record.info.revision = revision;
            self.audit(origin, AuditAction::EnvUpdate, namespace.to_string(), None, None);
        } else if let Some(description) = description {
            record.info.description = description;
        }
        self.overlay.put(keys::env(namespace), &record);
        Ok(CommandResponse::Put { created, revision })
    }

    fn delete_env(&mut self, origin: &Origin, namespace: &Namespace, force: bool) -> Applied {
        let Some(record) = self.env(namespace)? else { return Ok(not_found(Level::Env, namespace)) };
        if record.configs > 0 && !force {
            let detail = format!(
                "env {namespace} still has {} config(s): delete them first, or pass force=true to delete everything under it",
                record.configs
            );
            return Ok(CommandResponse::NotEmpty { detail });
        }
        self.count_configs(namespace, -(record.configs as i64))?;
        if let Some(mut owner) = self.app(&namespace.tenant, &namespace.app)? {
            owner.envs = owner.envs.saturating_sub(1);
            self.overlay.put(keys::app(&namespace.tenant, &namespace.app), &owner);
        }
        self.overlay.delete_ranges(keys::env_subtree(namespace));
        self.overlay.delete(keys::env(namespace));
        self.audit(origin, AuditAction::EnvDelete, namespace.to_string(), None, None);
        Ok(CommandResponse::Done { revision: self.revision })
    }

    fn write_version(&mut self, origin: &Origin, key: &ConfigKey, write: VersionWrite) -> Applied {
        let record = self.config(key)?;
        let current = record.as_ref().and_then(|r| r.current_version);
        if write.expected_version.is_some_and(|expected| current != Some(expected)) {
            return Ok(CommandResponse::VersionMismatch { current });
        }
        let schema_changed = record.as_ref().and_then(|r| r.schema_checksum.as_ref()) != write.checked_schema.as_ref();
        let format_changed = write.format_from_config && default_format(record.as_ref()) != write.format;
        if schema_changed || format_changed {
            return Ok(CommandResponse::ChecksOutdated);
        }
        let tenant = self.tenant(&key.tenant)?;
        let quotas = tenant.as_ref().map_or_else(Quotas::default, |t| t.quotas);
        let size = write.content.len() as u64;
        if size > quotas.max_config_bytes {
            return Ok(CommandResponse::TooLarge { size, limit: quotas.max_config_bytes });
        }
        let becomes_live = current.is_none();
        let live_in_tenant = tenant.as_ref().map_or(0, |t| t.configs);
        if becomes_live && live_in_tenant >= quotas.max_configs {
            let detail = format!(
                "tenant {} already has {live_in_tenant} configs, its max_configs quota; delete some or raise the quota",
                key.tenant
            );
            return Ok(CommandResponse::QuotaExceeded { detail });
        }

        self.ensure_env(origin, &key.namespace())?;
        let mut record = record.unwrap_or_else(|| empty_record(write.format));
        let version = record.latest_version + 1;
        let meta = VersionMeta {
            version,
            format: write.format,
            author: origin.actor.clone(),
            message: write.message,
            created_ms: self.time_ms,
            size,
            checksum: checksum(&write.content),
            revision: self.revision,
        };
        self.overlay.put_raw(keys::version(key, version), write.content);
        self.overlay.put(keys::version_meta(key, version), &meta);
        record.format = write.format;
        record.current_version = Some(version);
        record.latest_version = version;
        record.revision = self.revision;
        record.kept_versions.push(version);
        if becomes_live {
            // The first version after creation (or a delete) is what everyone receives.
            let rules = vec![Rule { labels: Labels::new(), version, priority: 0, percent: None }];
            let release = self.new_release(&mut record, rules, ReleaseAction::Initial, origin, String::new());
            self.overlay.put(keys::release(key, release.number), &release);
            record.release = Some(release);
        }
        for dropped in versions_to_drop(&record.kept_versions, quotas.max_versions_kept, record.release.as_ref()) {
            self.overlay.delete(keys::version(key, dropped));
            self.overlay.delete(keys::version_meta(key, dropped));
            record.kept_versions.retain(|v| *v != dropped);
        }
        self.overlay.put(keys::record(key), &record);
        if becomes_live {
            self.count_configs(&key.namespace(), 1)?;
        }
        self.audit(origin, AuditAction::ConfigWrite, key.to_string(), current, Some(version));
        Ok(CommandResponse::Written { version, revision: self.revision })
    }

    fn new_release(
        &self,
        record: &mut ConfigRecord,
        rules: Vec<Rule>,
        action: ReleaseAction,
        origin: &Origin,
        message: String,
    ) -> Release {
        record.latest_release += 1;
        Release {
            number: record.latest_release,
            rules,
            action,
            author: origin.actor.clone(),
            message,
            created_ms: self.time_ms,
            revision: self.revision,
        }
    }

    fn delete_config(&mut self, origin: &Origin, key: &ConfigKey, expected_version: Option<u64>) -> Applied {
        let record = self.config(key)?;
        let Some((mut record, version)) = record.and_then(|r| r.current_version.map(|v| (r, v))) else {
            return Ok(not_found(Level::Config, key));
        };
        if expected_version.is_some_and(|expected| expected != version) {
            return Ok(CommandResponse::VersionMismatch { current: Some(version) });
        }
        record.current_version = None;
        record.release = None;
        record.revision = self.revision;
        self.overlay.put(keys::record(key), &record);
        self.count_configs(&key.namespace(), -1)?;
        self.audit(origin, AuditAction::ConfigDelete, key.to_string(), Some(version), None);
        Ok(CommandResponse::Deleted { version, revision: self.revision })
    }

    fn set_schema(
        &mut self,
        origin: &Origin,
        key: &ConfigKey,
        schema: Option<Vec<u8>>,
        schema_checksum: Option<String>,
    ) -> Applied {
        let existing = self.config(key)?;
        if existing.is_none() {
            self.ensure_env(origin, &key.namespace())?;
        }
        let mut record = existing.unwrap_or_else(|| empty_record(Format::Json));
        let action = match schema {
            Some(schema) => {
                self.overlay.put_raw(keys::schema(key), schema);
                AuditAction::SchemaSet
            }
            None => {
                self.overlay.delete(keys::schema(key));
                AuditAction::SchemaClear
            }
        };
        record.schema_checksum = schema_checksum;
        record.revision = self.revision;
        self.overlay.put(keys::record(key), &record);
        self.audit(origin, action, key.to_string(), None, None);
        Ok(CommandResponse::Done { revision: self.revision })
    }

    fn set_release(
        &mut self,
        origin: &Origin,
        key: &ConfigKey,
        rules: Vec<Rule>,
        expected_release: u64,
        message: String,
        kind: ReleaseKind,
    ) -> Applied {
        let Some(mut record) = self.config(key)?.filter(|r| r.current_version.is_some()) else {
            return Ok(not_found(Level::Config, key));
        };
        let current = record.release.as_ref().map(|r| r.number);
        if current != Some(expected_release) {
            return Ok(CommandResponse::ReleaseMismatch { current });
        }
        if let Err(e) = release::validate(&rules, |v| record.kept_versions.binary_search(&v).is_ok()) {
            return Ok(CommandResponse::RulesInvalid { detail: e.to_string() });
        }
        let (action, audited) = match kind {
            ReleaseKind::Set => (ReleaseAction::Set, AuditAction::ReleaseSet),
            ReleaseKind::Publish => (ReleaseAction::Publish, AuditAction::ReleasePublish),
            ReleaseKind::Rollback { to } => (ReleaseAction::Rollback { to }, AuditAction::ReleaseRollback),
        };
        let release = self.new_release(&mut record, rules, action, origin, message);
        let number = release.number;
        self.overlay.put(keys::release(key, number), &release);
        record.release = Some(release);
        record.revision = self.revision;
        self.overlay.put(keys::record(key), &record);
        self.audit(origin, audited, key.to_string(), current, Some(number));
        Ok(CommandResponse::Released { release: number, revision: self.revision })
    }
}

/// The parts of a `WriteVersion` after its key.
struct VersionWrite {
    format: Format,
    content: Vec<u8>,
    message: String,
    expected_version: Option<u64>,
    checked_schema: Option<String>,
    format_from_config: bool,
}

fn empty_record(format: Format) -> ConfigRecord {
    ConfigRecord {
        format,
        current_version: None,
        latest_version: 0,
        revision: 0,
        kept_versions: Vec::new(),
        release: None,
        latest_release: 0,
        schema_checksum: None,
    }
}
