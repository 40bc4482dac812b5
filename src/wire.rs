//! JSON bodies of the client and admin APIs, shared by the server, the typed client, the CLI and
//! tests. Changing a field here changes the public API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Raft member's id: generated once per data directory, below 2^53 so JSON readers keep it exact.
pub type NodeId = u64;

/// Answer to a successful write or delete of a configuration (and to a `dry_run` write, which
/// says what would have been written: the version number it would get, at the current revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub version: u64,
    pub revision: u64,
    /// `sha256:<hex>` of the content written (absent for deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One entry of a namespace listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub name: String,
    pub version: u64,
    pub format: String,
    pub revision: u64,
}

/// Answer to `GET /api/v1/configs/{tenant}/{app}/{env}`: one page of live configs by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigList {
    pub configs: Vec<ConfigSummary>,
    pub revision: u64,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An RFC 9457 problem document; `code` is stable and meant for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    pub detail: String,
    /// Each place in the request that is wrong (content line/column, schema JSON pointer, rule).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemDetail>,
}

/// One located error inside a problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemDetail {
    pub message: String,
    /// JSON pointer into the content (schema violations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// 1-based line and column in the content (parse errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// One page of a listing; pass `next_cursor` as `?cursor=` for the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// The revision this node had applied when it answered.
    pub revision: u64,
}

/// Answer to a change of a tenant, app, env or schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub revision: u64,
    /// For a `PUT`: whether it created the resource (else it updated it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Per-tenant limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_config_bytes: u64,
    pub max_configs: u64,
    pub max_versions_kept: u32,
}

/// Quotas to change; absent fields keep their value (defaults: 1 MiB, 10,000, 100).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_config_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_configs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_versions_kept: Option<u32>,
}

/// `PUT /api/v1/tenants/{tenant}` body (all optional; an empty body creates with defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<QuotaSpec>,
}

/// `PUT` body of an app or env (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A tenant, an app or an env as served by `GET`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// `tenant`, `tenant/app` or `tenant/app/env`.
    pub path: String,
    pub name: String,
    pub description: String,
    pub created_revision: u64,
    pub created_at_ms: u64,
    pub revision: u64,
    /// Tenants only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// Tenants: apps in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<u64>,
    /// Apps: envs in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envs: Option<u64>,
    /// Live configs under it.
    pub configs: u64,
}

/// `POST .../versions` body: a new version as JSON (`PUT` on the config takes the raw content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    pub content: String,
    /// json, yaml, toml, properties or text; default: the config's current format, else text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One immutable version's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub format: String,
    pub author: String,
    pub message: String,
    pub created_at_ms: u64,
    pub size: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub revision: u64,
}

/// One version with its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub content: String,
}

/// One path-level change between two structured versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathChange {
    /// add, remove or replace.
    pub op: String,
    /// JSON pointer.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<serde_json::Value>,
}

/// `GET .../diff?from=A&to=B`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub from: u64,
    pub to: u64,
    /// Unified text diff; empty when the contents are equal.
    pub unified: String,
    /// Path-level changes, when both versions are json, yaml, toml or properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<PathChange>>,
}

/// One release rule: clients carrying all `labels` (and inside `percent`, when set) receive
/// `version`; the highest `priority` that matches wins. Exactly one rule has neither labels nor
/// percent: the default, with the lowest priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub version: u64,
    pub priority: u32,
    /// In (0, 100], at most two decimals; clients are picked by a stable hash of their id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// `PUT .../release` body (needs `If-Match` with the current release's ETag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseSpec {
    pub rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST .../release/publish` body: `version` becomes the default for everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST .../release/rollback` body: restore the rules of release `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub to: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A release as served by `GET .../release` (ETag `"r<number>"`) and in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    pub number: u64,
    pub rules: Vec<Rule>,
    /// initial, set, publish or rollback.
    pub action: String,
    /// For a rollback: the release whose rules it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<u64>,
    pub author: String,
    pub message: String,
    pub created_at_ms: u64,
    pub revision: u64,
}

/// Answer to a release change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub release: u64,
    pub revision: u64,
}

/// The rule that decided what a client receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedRule {
    /// Position in the release's rule list.
    pub index: usize,
    pub priority: u32,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
}

/// What one client receives for one config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    pub config: String,
    pub format: String,
    pub version: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub content: String,
    pub release: u64,
    pub rule: MatchedRule,
    /// The revision the serving node had applied: send it back as `min_revision`.
    pub revision: u64,
}

/// `POST /api/v1/resolve/{tenant}/{app}/{env}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveMany {
    /// Config names; empty means every live config of the env (up to `limit`, then a cursor).
    #[serde(default)]
    pub configs: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_revision: Option<u64>,
}

/// Answer to a batch resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedMany {
    pub items: Vec<Resolved>,
    /// Named configs that do not exist (or are deleted).
    pub missing: Vec<String>,
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub revision: u64,
    pub seq: u32,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// Version (config writes, deletes) or release (release changes) before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    pub request_id: String,
}

/// `GET /admin/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub cluster_id: Option<String>,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// On the leader: the last index known replicated to each other member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<BTreeMap<NodeId, u64>>,
    /// On the leader: milliseconds since a quorum of voters last acknowledged it. It keeps
    /// growing on a leader cut off from its quorum (a Raft leader does not step down by itself),
    /// which is how a lone surviving leader is told from one that still leads. Absent on other
    /// members and on a leader no quorum has acknowledged yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_acked_ms_ago: Option<u64>,
}

/// `POST /admin/init` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResult {
    pub node_id: NodeId,
    pub cluster_id: String,
}

/// `POST /admin/learners` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddLearner {
    pub node_id: NodeId,
    pub peer_url: String,
}

/// `POST /admin/learners` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerResult {
    pub node_id: NodeId,
    /// Whether the learner had caught up with the leader's log when the call returned.
    pub caught_up: bool,
    pub matched_index: u64,
}

/// `POST /admin/leader` body: the voter to hand leadership to; without one, the most caught-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeader {
    #[serde(default)]
    pub to: Option<NodeId>,
}

/// `POST /admin/leader` answer: who led, who leads now, in which term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderTransfer {
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
}

/// `PUT /admin/voters` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVoters {
    pub voters: Vec<NodeId>,
}

/// Answer to membership changes: the membership now in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub log_index: u64,
}

/// What a watching client holds of one config: a version number (0: it knows the config is
/// absent), optionally with the checksum it was handed, which tells a config recreated after a
/// forced delete (numbered from 1 again) from the one the client holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Held {
    Version(u64),
    Exact {
        version: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
}

impl Held {
    pub fn version(&self) -> u64 {
        match self {
            Held::Version(version) | Held::Exact { version, .. } => *version,
        }
    }

    pub fn checksum(&self) -> Option<&str> {
        match self {
            Held::Version(_) => None,
            Held::Exact { checksum, .. } => checksum.as_deref(),
        }
    }
}

/// `POST /api/v1/watch` and `POST /api/v1/watch/stream` body: who is watching, what it holds,
/// and the last revision it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    pub tenant: String,
    pub app: String,
    pub env: String,
    /// The configs to watch; absent means every config of the env, including ones created later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// What the client holds, by config name. A config it does not name here is new to it.
    #[serde(default)]
    pub known: BTreeMap<String, Held>,
    /// The `revision` of the last answer: the node first applies at least this much.
    #[serde(default)]
    pub since_revision: u64,
    /// How long a long-poll may be parked before it answers with no changes (default 30 s,
    /// 1 s to 300 s; the node adds up to 1/16 of it as jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Contents up to this size travel in the answer (default 64 KiB, at most 1 MiB; 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_max_bytes: Option<u64>,
    /// Streams only: how often a `progress` event is sent while nothing changes (default 5 s,
    /// 100 ms to 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_ms: Option<u64>,
}

/// One config whose resolved version differs from what the client holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChange {
    pub config: String,
    pub format: String,
    pub version: u64,
    /// `sha256:<hex>`.
    pub checksum: String,
    pub size: u64,
    pub release: u64,
    /// The content, when it is no larger than the request's `inline_max_bytes`; otherwise fetch
    /// it with resolve, passing this answer's `revision` as `min_revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A watch answer (and the data of a stream's `changes` event). An empty `changes` and
/// `deleted` means the long-poll timed out with nothing new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnswer {
    /// Send it back as `since_revision` (or the stream's `Last-Event-ID`).
    pub revision: u64,
    pub changes: Vec<WatchChange>,
    /// Configs the client holds that no longer exist: hold them as version 0.
    pub deleted: Vec<String>,
}

/// A stream's `progress` event: nothing changed up to this revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchProgress {
    pub revision: u64,
}

/// One live watcher of a config, as `GET …/configs/{c}/clients` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWatcher {
    /// `None` for a client that sent no `client_id`.
    pub client_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The version it holds (0: none, or it knows the config is absent).
    pub version: u64,
    /// The node it watches through.
    pub node: NodeId,
    /// When this client started watching the config on that node, in ms since the Unix epoch.
    pub since_ms: u64,
    /// Whether a watch request of it is open right now (a long-poll client is briefly between
    /// requests after each answer).
    pub connected: bool,
}

/// `GET …/configs/{c}/clients`: the watchers of one config on the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWatchers {
    pub config: String,
    /// Up to `limit` watchers ordered by (client id, node); `next_cursor` continues.
    pub watchers: Vec<ConfigWatcher>,
    /// Watchers per held version over all of them (not only this page), version as a string.
    pub versions: BTreeMap<String, u64>,
    pub total: u64,
    /// Members that did not answer; their watchers are missing from the list and the counts.
    pub unreachable: Vec<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/tokens`: a new token's name (a note for people), role (`client`, `viewer`,
/// `editor`, `publisher`, `admin`), scope (`*`, `tenant`, `tenant/app` or `tenant/app/env`) and
/// optional lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequest {
    pub name: String,
    pub role: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: String,
    pub scope: String,
    pub created_ms: u64,
    /// The actor that created it (`token:<id>` or `bootstrap-admin`).
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

/// The answer to creating a token. `token` is shown this once: only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
    pub revision: u64,
}

/// `GET /api/v1/whoami`: the caller as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// What audit records name as the actor of this caller's changes.
    pub actor: String,
    pub role: String,
    pub scope: String,
}

/// What `Client::backup` wrote: a backup file of one node's applied state (`GET /admin/backup`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The cluster whose state the backup holds.
    pub cluster_id: String,
    /// The revision of that state: every change up to it is in the backup, none after it.
    pub revision: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// sha256 of the whole file, in hex (what `sha256sum FILE` prints).
    pub sha256: String,
    /// When the node took the backup, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// `POST /admin/restore` answer: the node now leads a new cluster holding the backup's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResult {
    /// The restored node, the single voter of the new cluster.
    pub node_id: NodeId,
    /// The new cluster's id (never the backup's).
    pub cluster_id: String,
    /// The backup's revision; the new cluster's next change gets a higher one.
    pub revision: u64,
}

/// `POST /admin/recover` body: the id of the cluster the node belongs to now, as confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {
    pub cluster_id: String,
}

/// `POST /admin/recover` answer: the node now leads a new single-voter cluster holding every
/// change it had applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverResult {
    /// The recovered node, the single voter of the new cluster.
    pub node_id: NodeId,
    /// The new cluster's id.
    pub cluster_id: String,
    /// The revision the kept state has in the new cluster: above every revision the old cluster
    /// gave out through this node; the next change gets a higher one.
    pub revision: u64,
}
