//! The read side of the configuration state: single records, paginated listings (names ascending,
//! histories newest first, audit by revision) and audit queries, all from this node's applied
//! state. Listings take the last item of the previous page as their cursor and fetch one item
//! more than asked, so they know whether another page exists.

use rocksdb::{Direction, IteratorMode};
use serde::de::DeserializeOwned;

use super::{decode, keys, Store, StoreError, CF_SM_DATA};
use crate::model::access::TokenRecord;
use crate::model::audit::{AuditFilter, AuditRecord};
use crate::model::config::{Release, VersionMeta};
use crate::model::hierarchy::{AppRecord, EnvRecord, TenantRecord};
use crate::model::{ConfigKey, ConfigRecord, Namespace};

/// One page of a listing and the cursor of the next page, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// At most this many audit records are examined per query page, matching or not, so a selective
/// filter over a long log answers promptly with a cursor to continue from.
const AUDIT_SCAN_BUDGET: usize = 10_000;

impl Store {
    fn get<T: DeserializeOwned>(&self, what: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        let raw = self.db.get_cf(Self::cf(&self.db, CF_SM_DATA), key)?;
        raw.map(|r| decode(what, &r)).transpose()
    }

    /// Up to `limit` items whose keys start with `prefix`, in key order, starting after `after`
    /// (a full key); `keep` filters and converts each (key suffix, value).
    fn scan_forward<T, V: DeserializeOwned>(
        &self,
        what: &'static str,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
        mut keep: impl FnMut(&[u8], V) -> Option<T>,
    ) -> Result<(Vec<T>, bool), StoreError> {
        let start = after.clone().unwrap_or_else(|| prefix.to_vec());
        let iter = self.db.iterator_cf(Self::cf(&self.db, CF_SM_DATA), IteratorMode::From(&start, Direction::Forward));
        let mut items = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if after.as_deref() == Some(&key[..]) {
                continue;
            }
            if let Some(kept) = keep(&key[prefix.len()..], decode(what, &value)?) {
                if items.len() == limit {
                    return Ok((items, true));
                }
                items.push(kept);
            }
        }
        Ok((items, false))
    }

    /// Up to `limit` values of numbered keys under `prefix`, highest number first, below `before`.
    fn scan_numbered_backward<V: DeserializeOwned>(
        &self,
        what: &'static str,
        prefix: &[u8],
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<V>, bool), StoreError> {
        let mut start = prefix.to_vec();
        start.extend_from_slice(&before.unwrap_or(u64::MAX).to_be_bytes());
        let iter = self.db.iterator_cf(Self::cf(&self.db, CF_SM_DATA), IteratorMode::From(&start, Direction::Reverse));
        let mut items = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if key[..] == start[..] {
                continue;
            }
            if items.len() == limit {
                return Ok((items, true));
            }
            items.push(decode(what, &value)?);
        }
        Ok((items, false))
    }

    /// A page of names under `prefix`, ascending, after the name `after`.
    fn named_page<V: DeserializeOwned>(
        &self,
        what: &'static str,
        prefix: Vec<u8>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&V) -> bool,
    ) -> Result<Page<(String, V)>, StoreError> {
        let after_key = after.map(|name| [prefix.as_slice(), name.as_bytes()].concat());
        let (items, more) = self.scan_forward(what, &prefix, after_key, limit, |suffix, value: V| {
            keep(&value).then(|| (String::from_utf8_lossy(suffix).into_owned(), value))
        })?;
        let next = if more { items.last().map(|(name, _)| name.clone()) } else { None };
        Ok(Page { items, next })
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get("token record", &keys::token(id))
    }

    /// Tokens by id, those `keep` accepts.
    pub fn tokens(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&TokenRecord) -> bool,
    ) -> Result<Page<(String, TokenRecord)>, StoreError> {
        self.named_page("token record", keys::token_prefix(), after, limit, keep)
    }

    pub fn tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.get("tenant record", &keys::tenant(tenant))
    }

    pub fn tenants(&self, after: Option<&str>, limit: usize) -> Result<Page<(String, TenantRecord)>, StoreError> {
        self.named_page("tenant record", keys::tenant_prefix(), after, limit, |_| true)
    }

    pub fn app(&self, tenant: &str, app: &str) -> Result<Option<AppRecord>, StoreError> {
        self.get("app record", &keys::app(tenant, app))
    }

    pub fn apps(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, AppRecord)>, StoreError> {
        self.named_page("app record", keys::app_prefix(tenant), after, limit, |_| true)
    }

    pub fn env(&self, namespace: &Namespace) -> Result<Option<EnvRecord>, StoreError> {
        self.get("env record", &keys::env(namespace))
    }

    pub fn envs(
        &self,
        tenant: &str,
        app: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, EnvRecord)>, StoreError> {
        self.named_page("env record", keys::env_prefix(tenant, app), after, limit, |_| true)
    }

    /// A configuration's record, also while it is deleted (its history stays readable).
    pub fn config_record(&self, key: &ConfigKey) -> Result<Option<ConfigRecord>, StoreError> {
        self.get("config record", &keys::record(key))
    }

    /// The record and head content of one live configuration.
    pub fn get_config(&self, key: &ConfigKey) -> Result<Option<(ConfigRecord, Vec<u8>)>, StoreError> {
        let Some(record) = self.config_record(key)? else { return Ok(None) };
        let Some(version) = record.current_version else { return Ok(None) };
        let content = self.version_content(key, version)?.unwrap_or_default();
        Ok(Some((record, content)))
    }

    /// A page of the live configurations in a namespace, by name.
    pub fn list_configs(
        &self,
        namespace: &Namespace,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<(String, ConfigRecord)>, StoreError> {
        self.named_page("config record", keys::record_prefix(namespace), after, limit, |r: &ConfigRecord| {
            r.current_version.is_some()
        })
    }

    pub fn version_meta(&self, key: &ConfigKey, version: u64) -> Result<Option<VersionMeta>, StoreError> {
        self.get("version metadata", &keys::version_meta(key, version))
    }

    pub fn version_content(&self, key: &ConfigKey, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(Self::cf(&self.db, CF_SM_DATA), keys::version(key, version))?)
    }

    /// A page of a config's kept versions, newest first, below version `before`.
    pub fn versions(
        &self,
        key: &ConfigKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<VersionMeta>, StoreError> {
        let (items, more) =
            self.scan_numbered_backward("version metadata", &keys::version_meta_prefix(key), before, limit)?;
        let next = if more { items.last().map(|m: &VersionMeta| m.version.to_string()) } else { None };
        Ok(Page { items, next })
    }

    pub fn release(&self, key: &ConfigKey, number: u64) -> Result<Option<Release>, StoreError> {
        self.get("release", &keys::release(key, number))
    }

    /// A page of a config's release history, newest first, below release `before`.
    pub fn releases(&self, key: &ConfigKey, before: Option<u64>, limit: usize) -> Result<Page<Release>, StoreError> {
        let (items, more) = self.scan_numbered_backward("release", &keys::release_prefix(key), before, limit)?;
        let next = if more { items.last().map(|r: &Release| r.number.to_string()) } else { None };
        Ok(Page { items, next })
    }

    pub fn schema(&self, key: &ConfigKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(Self::cf(&self.db, CF_SM_DATA), keys::schema(key))?)
    }

    /// A page of a tenant's audit records matching `filter`, in revision order, after the record
    /// at `after` (revision, position). The cursor is `revision.position`; a page may hold fewer
    /// than `limit` records and still have a next page when the scan budget ran out first.
    pub fn audit(
        &self,
        tenant: &str,
        filter: &AuditFilter,
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let prefix = keys::audit_prefix(tenant);
        let after_key = after.map(|(revision, seq)| keys::audit(tenant, revision, seq));
        let mut scanned = 0usize;
        let mut last_seen = None;
        let mut budget_spent = false;
        let (items, more) =
            self.scan_forward("audit record", &prefix, after_key, limit, |_, record: AuditRecord| {
                if budget_spent {
                    return None;
                }
                scanned += 1;
                if scanned > AUDIT_SCAN_BUDGET {
                    budget_spent = true;
                    return None;
                }
                last_seen = Some((record.revision, record.seq));
                filter.matches(&record).then_some(record)
            })?;
        let cursor = |(revision, seq): (u64, u32)| format!("{revision}.{seq}");
        let next = if more {
            items.last().map(|r| cursor((r.revision, r.seq)))
        } else if budget_spent {
            last_seen.map(cursor)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}
