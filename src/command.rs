//! The Raft log payload: what client changes become once they enter consensus, and what applying
//! them answers. One log entry carries a [`CommandBatch`]: the changes that concurrent clients sent
//! while the previous entry was being committed, stamped with the proposing leader's clock (apply
//! never reads a clock, so every replica records the same times). Encoded with bincode.

use serde::{Deserialize, Serialize};

use crate::model::access::{Role, Scope as AccessScope};
use crate::model::hierarchy::QuotaUpdate;
use crate::model::release::Rule;
use crate::model::{ConfigKey, Format, Namespace};

/// Who asked for a change, recorded in its audit record, and the client's `Idempotency-Key`, if
/// it sent one: a change with a key this actor used within the last day is not applied again (it
/// answers what it answered then).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub actor: String,
    pub request_id: String,
    pub idempotency_key: Option<String>,
}

impl Origin {
    /// An origin without an idempotency key.
    pub fn new(actor: &str, request_id: &str) -> Origin {
        Origin { actor: actor.to_string(), request_id: request_id.to_string(), idempotency_key: None }
    }
}

/// A change to the configuration state and who asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub origin: Origin,
    pub change: Change,
}

/// A change to the configuration state, replicated through Raft. Writing anything creates its
/// missing parents (tenant, app, env) with default settings, each with its own audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Create a tenant, or update its description and quotas.
    PutTenant {
        tenant: String,
        description: Option<String>,
        quotas: QuotaUpdate,
    },
    /// Delete a tenant; refused while it has apps unless `force` (which deletes everything under it).
    DeleteTenant {
        tenant: String,
        force: bool,
    },
    PutApp {
        tenant: String,
        app: String,
        description: Option<String>,
    },
    DeleteApp {
        tenant: String,
        app: String,
        force: bool,
    },
    PutEnv {
        namespace: Namespace,
        description: Option<String>,
    },
    DeleteEnv {
        namespace: Namespace,
        force: bool,
    },
    /// Store `content` as the next immutable version of `key`. The content was parsed and checked
    /// against the schema whose checksum is `checked_schema` (None: no schema); if the config's
    /// schema changed since, nothing is written and the writer checks again.
    WriteVersion {
        key: ConfigKey,
        format: Format,
        content: Vec<u8>,
        message: String,
        expected_version: Option<u64>,
        checked_schema: Option<String>,
        /// The writer named no format and `format` is the config's as the writer's node saw it:
        /// if the config's format at apply differs, nothing is written and the writer checks again.
        format_from_config: bool,
    },
    /// Make `key` absent; its version and release numbers are never reused.
    DeleteConfig {
        key: ConfigKey,
        expected_version: Option<u64>,
    },
    /// Set (Some) or clear (None) the JSON Schema new versions of `key` must satisfy.
    SetSchema {
        key: ConfigKey,
        schema: Option<Vec<u8>>,
        checksum: Option<String>,
    },
    /// Replace the release of `key`, only if its current release number is `expected_release`.
    SetRelease {
        key: ConfigKey,
        rules: Vec<Rule>,
        expected_release: u64,
        message: String,
        kind: ReleaseKind,
    },
    /// Store a new access token. Only the secret's sha256 travels and is kept; it expires
    /// `ttl_ms` after the entry's (leader) time, if set.
    CreateToken {
        id: String,
        name: String,
        role: Role,
        scope: AccessScope,
        secret_sha256: [u8; 32],
        ttl_ms: Option<u64>,
    },
    /// Revoke a token; its record stays (marked revoked) so listings show who revoked it when.
    RevokeToken {
        id: String,
    },
}

/// What kind of release change a `SetRelease` is, as recorded in history and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseKind {
    Set,
    Publish,
    Rollback { to: u64 },
}

/// One log entry's payload: commands applied in order, atomically, all at the entry's index (so
/// they share one revision, as the writes of one etcd transaction do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch {
    /// The proposing leader's clock, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub commands: Vec<Command>,
}

impl std::fmt::Display for CommandBatch {
    /// How openraft names an entry's payload in its logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commands at {} ms", self.commands.len(), self.time_ms)
    }
}

/// The configs a change can alter what clients resolve for: one config, or every config under a
/// tenant, app or env (forced deletes). Watchers of configs outside it need not look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(String),
    App { tenant: String, app: String },
    Env(Namespace),
    Config(ConfigKey),
}

impl Scope {
    pub fn contains(&self, key: &ConfigKey) -> bool {
        match self {
            Scope::Tenant(tenant) => key.tenant == *tenant,
            Scope::App { tenant, app } => key.tenant == *tenant && key.app == *app,
            Scope::Env(namespace) => {
                key.tenant == namespace.tenant && key.app == namespace.app && key.env == namespace.env
            }
            Scope::Config(config) => key == config,
        }
    }

    /// The smallest key the scope contains, where an ordered scan over keys starts.
    pub fn first_key(&self) -> ConfigKey {
        let key = |tenant: &str, app: &str, env: &str, name: &str| ConfigKey {
            tenant: tenant.into(),
            app: app.into(),
            env: env.into(),
            name: name.into(),
        };
        match self {
            Scope::Tenant(tenant) => key(tenant, "", "", ""),
            Scope::App { tenant, app } => key(tenant, app, "", ""),
            Scope::Env(ns) => key(&ns.tenant, &ns.app, &ns.env, ""),
            Scope::Config(config) => config.clone(),
        }
    }
}

impl Change {
    /// What this change may alter for resolving clients; `None` for changes that never do
    /// (creating or describing a level, schemas). Only deletes of whole levels reach past one config.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Change::DeleteTenant { tenant, .. } => Some(Scope::Tenant(tenant.clone())),
            Change::DeleteApp { tenant, app, .. } => Some(Scope::App { tenant: tenant.clone(), app: app.clone() }),
            Change::DeleteEnv { namespace, .. } => Some(Scope::Env(namespace.clone())),
            Change::WriteVersion { key, .. } | Change::DeleteConfig { key, .. } | Change::SetRelease { key, .. } => {
                Some(Scope::Config(key.clone()))
            }
            Change::PutTenant { .. }
            | Change::PutApp { .. }
            | Change::PutEnv { .. }
            | Change::SetSchema { .. }
            | Change::CreateToken { .. }
            | Change::RevokeToken { .. } => None,
        }
    }
}

/// Why a command was refused before it was proposed; says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command: {0}")]
pub struct InvalidCommand(pub String);

impl Command {
    /// Roughly how many bytes this command adds to a log entry: never less than its variable-length
    /// fields, so the write batcher's byte bound holds however the bytes are spread.
    pub fn size_hint(&self) -> usize {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
        let origin = self.origin.actor.len() + self.origin.request_id.len() + text(&self.origin.idempotency_key);
        let variable = match &self.change {
            Change::PutTenant { tenant, description, .. } => tenant.len() + text(description),
            Change::DeleteTenant { tenant, .. } => tenant.len(),
            Change::PutApp { tenant, app, description } => tenant.len() + app.len() + text(description),
            Change::DeleteApp { tenant, app, .. } => tenant.len() + app.len(),
            Change::PutEnv { namespace, description } => namespace_len(namespace) + text(description),
            Change::DeleteEnv { namespace, .. } => namespace_len(namespace),
            Change::WriteVersion { key, content, message, checked_schema, .. } => {
                key_len(key) + content.len() + message.len() + text(checked_schema)
            }
            Change::DeleteConfig { key, .. } => key_len(key),
            Change::SetSchema { key, schema, checksum } => {
                key_len(key) + schema.as_ref().map_or(0, Vec::len) + text(checksum)
            }
            Change::SetRelease { key, rules, message, .. } => {
                let labels = |rule: &Rule| rule.labels.iter().map(|(k, v)| 16 + k.len() + v.len()).sum::<usize>();
                key_len(key) + message.len() + rules.iter().map(|rule| 64 + labels(rule)).sum::<usize>()
            }
            Change::CreateToken { id, name, scope, .. } => {
                id.len() + name.len() + 32 + scope.path.iter().map(|s| 8 + s.len()).sum::<usize>()
            }
            Change::RevokeToken { id } => id.len(),
        };
        origin + 64 + variable
    }

    /// The checks the client API makes before it proposes a command, for commands that arrive
    /// from elsewhere (a follower's forwarded write): names, content that parses as its format,
    /// sizes, schemas that compile, rules and quotas that are valid. What depends on the state
    /// (versions, quotas in use) is checked at apply, as for every command.
    pub fn check(&self, max_body_bytes: usize) -> Result<(), InvalidCommand> {
        use crate::model::{access, check_segment, release, schema::Schema};
        let invalid = |e: &dyn std::fmt::Display| InvalidCommand(e.to_string());
        let body = |what: &str, len: usize| {
            if len > max_body_bytes {
                return Err(InvalidCommand(format!(
                    "{what} of {len} bytes is over the limit of {max_body_bytes} bytes"
                )));
            }
            Ok(())
        };
        let description = |d: &Option<String>| body("description", d.as_ref().map_or(0, String::len));
        let key =
            |k: &ConfigKey| ConfigKey::new(&k.tenant, &k.app, &k.env, &k.name).map(|_| ()).map_err(|e| invalid(&e));
        let namespace = |n: &Namespace| Namespace::new(&n.tenant, &n.app, &n.env).map(|_| ()).map_err(|e| invalid(&e));
        // A message comes in a JSON body or in the query string, which `http` caps below 64 KiB.
        let message = |m: &String| {
            if m.len() > max_body_bytes.max(MAX_URI_BYTES) {
                return Err(InvalidCommand(format!("message of {} bytes is too long", m.len())));
            }
            Ok(())
        };
        let idempotency_key = self.origin.idempotency_key.as_ref().map_or(0, String::len);
        let origin = self.origin.actor.len() + self.origin.request_id.len() + idempotency_key;
        if origin > MAX_URI_BYTES {
            return Err(InvalidCommand(format!("origin of {origin} bytes is too long")));
        }
        match &self.change {
            Change::PutTenant { tenant, description: d, quotas } => {
                check_segment("tenant", tenant).map_err(|e| invalid(&e))?;
                quotas.validate().map_err(|e| invalid(&e))?;
                description(d)
            }
            Change::DeleteTenant { tenant, .. } => check_segment("tenant", tenant).map_err(|e| invalid(&e)),
            Change::PutApp { tenant, app, description: d } => {
                check_segment("tenant", tenant).and_then(|_| check_segment("app", app)).map_err(|e| invalid(&e))?;
                description(d)
            }
            Change::DeleteApp { tenant, app, .. } => {
                check_segment("tenant", tenant).and_then(|_| check_segment("app", app)).map_err(|e| invalid(&e))
            }
            Change::PutEnv { namespace: n, description: d } => {
                namespace(n)?;
                description(d)
            }
            Change::DeleteEnv { namespace: n, .. } => namespace(n),
            Change::WriteVersion { key: k, format, content, message: text, .. } => {
                key(k)?;
                body("content", content.len())?;
                message(text)?;
                format.parse_tree(content).map(|_| ()).map_err(|e| invalid(&e))
            }
            Change::DeleteConfig { key: k, .. } => key(k),
            Change::SetSchema { key: k, schema, checksum } => {
                key(k)?;
                match (schema, checksum) {
                    (None, None) => Ok(()),
                    (Some(schema), Some(_)) => {
                        body("schema", schema.len())?;
                        Schema::compile(schema).map(|_| ()).map_err(|e| invalid(&e))
                    }
                    _ => Err(InvalidCommand("a schema and its checksum come together".into())),
                }
            }
            Change::SetRelease { key: k, rules, message: text, .. } => {
                key(k)?;
                message(text)?;
                release::validate(rules, |_| true).map_err(|e| invalid(&e))
            }
            Change::CreateToken { id, name, scope, ttl_ms, .. } => {
                access::check_token_id(id).map_err(|e| invalid(&e))?;
                access::check_new_token(name, scope, ttl_ms.map(|ms| ms.div_ceil(1000))).map_err(|e| invalid(&e))
            }
            Change::RevokeToken { id } => access::check_token_id(id).map_err(|e| invalid(&e)),
        }
    }
}

/// The longest URI the `http` crate parses; bounds what a query string or header can carry.
const MAX_URI_BYTES: usize = 64 * 1024;

fn namespace_len(namespace: &Namespace) -> usize {
    namespace.tenant.len() + namespace.app.len() + namespace.env.len()
}

fn key_len(key: &ConfigKey) -> usize {
    key.tenant.len() + key.app.len() + key.env.len() + key.name.len()
}

/// Which level of the hierarchy an answer is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Tenant,
    App,
    Env,
    Config,
    Version,
    Release,
    Token,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Tenant => "tenant",
            Level::App => "app",
            Level::Env => "env",
            Level::Config => "config",
            Level::Version => "version",
            Level::Release => "release",
            Level::Token => "token",
        }
    }
}

/// The result of applying one command. Refusals change nothing and write no audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A tenant, app or env was created (`created`) or updated.
    Put { created: bool, revision: u64 },
    /// A tenant, app, env or schema change took effect.
    Done { revision: u64 },
    /// A new version was stored and is the head.
    Written { version: u64, revision: u64 },
    /// The configuration was deleted; `version` was the head before.
    Deleted { version: u64, revision: u64 },
    /// The release is now number `release`.
    Released { release: u64, revision: u64 },
    /// What the change names does not exist.
    NotFound { level: Level, name: String },
    /// `expected_version` did not match; `current` is the head now.
    VersionMismatch { current: Option<u64> },
    /// `expected_release` did not match; `current` is the current release now.
    ReleaseMismatch { current: Option<u64> },
    /// The rules were refused; `detail` names the rule and what to fix.
    RulesInvalid { detail: String },
    /// The schema, or the format a write took from the config, changed after the content was
    /// checked: check again and resend.
    ChecksOutdated,
    /// A delete named a level that still holds something; `detail` says what.
    NotEmpty { detail: String },
    /// The content is larger than the tenant's `max_config_bytes`.
    TooLarge { size: u64, limit: u64 },
    /// A count quota would be exceeded.
    QuotaExceeded { detail: String },
    /// What the change creates exists already; `detail` says what.
    AlreadyExists { detail: String },
    /// The `Idempotency-Key` was used by this actor within the last day for a different change.
    IdempotencyKeyReused,
}
