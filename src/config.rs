//! `conflux serve` settings: flags, their `CONFLUX_*` environment twins, defaults, and the checks
//! that relate them. Turned into openraft's `Config` here and nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Everything a node needs to start.
#[derive(Debug, Clone, Args)]
pub struct NodeConfig {
    /// Data directory (RocksDB, node id, generated cluster token).
    #[arg(long, env = "CONFLUX_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Client API listen address (configs, metrics, health). Port 0 picks a free port.
    #[arg(long, env = "CONFLUX_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Peer listen address (Raft RPCs and the admin API). Port 0 picks a free port.
    #[arg(long, env = "CONFLUX_PEER_LISTEN", default_value = "127.0.0.1:7001")]
    pub peer_listen: SocketAddr,
    /// URL other members use to reach this node's peer listener [default: http://<peer-listen>].
    #[arg(long, env = "CONFLUX_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Cluster mode: start uninitialized and wait to be added to a cluster (or `cluster init`).
    /// Without it, a new data directory bootstraps a single-voter cluster.
    #[arg(long, env = "CONFLUX_JOIN")]
    pub join: bool,
    /// File holding the cluster token peers and admins must present. Also `CONFLUX_CLUSTER_TOKEN`.
    #[arg(long, env = "CONFLUX_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
    /// Access control: `enabled` (every route but /healthz, /readyz and the OpenAPI document needs
    /// a token) or `disabled` (anyone who can reach the node may do anything; for a laptop only).
    #[arg(long, env = "CONFLUX_AUTH", value_enum, default_value = "enabled")]
    pub auth: AuthMode,
    /// File holding the bootstrap admin token (cluster-wide admin, the same on every member). Also
    /// `CONFLUX_ADMIN_TOKEN`. Without either, a single node creates one in <data>/admin-token.
    #[arg(long, env = "CONFLUX_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted config body, in bytes.
    #[arg(long, env = "CONFLUX_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Upper bound for one client write or linearizable read, in milliseconds.
    #[arg(long, env = "CONFLUX_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Raft heartbeat interval in milliseconds (also the AppendEntries timeout).
    #[arg(long, env = "CONFLUX_HEARTBEAT_MS", default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, in milliseconds.
    #[arg(long, env = "CONFLUX_ELECTION_TIMEOUT_MIN_MS", default_value_t = 1000)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, in milliseconds.
    #[arg(long, env = "CONFLUX_ELECTION_TIMEOUT_MAX_MS", default_value_t = 2000)]
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "CONFLUX_SNAPSHOT_LOGS", default_value_t = 20_000)]
    pub snapshot_logs: u64,
    /// Log entries kept below the snapshot so briefly lagging followers catch up by log.
    #[arg(long, env = "CONFLUX_KEEP_LOGS", default_value_t = 1000)]
    pub keep_logs: u64,
    /// Open watch requests and streams one tenant may have on this node; more get 429.
    #[arg(long, env = "CONFLUX_MAX_WATCHERS_PER_TENANT", default_value_t = 10_000)]
    pub max_watchers_per_tenant: usize,
    /// Configs one watch may cover (named, or a whole env).
    #[arg(long, env = "CONFLUX_MAX_CONFIGS_PER_WATCH", default_value_t = 1000)]
    pub max_configs_per_watch: usize,
}

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Enabled,
    Disabled,
}

/// A setting that cannot work, named so the user knows what to change.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl NodeConfig {
    /// A config for `data_dir` with every other setting at its default.
    pub fn with_data_dir(data_dir: PathBuf) -> NodeConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: NodeConfig,
        }
        let mut config = Defaults::parse_from(["conflux"]).config;
        config.data_dir = data_dir;
        config
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Watcher bounds; a node that knows no leader for two maximal election timeouts sends its
    /// watchers elsewhere.
    pub fn watch_limits(&self) -> crate::watch::WatchLimits {
        crate::watch::WatchLimits {
            max_watchers_per_tenant: self.max_watchers_per_tenant,
            max_configs_per_watch: self.max_configs_per_watch.max(1),
            leaderless_grace: Duration::from_millis(self.election_timeout_max_ms.saturating_mul(2)),
        }
    }

    /// Checks relations between settings and builds openraft's configuration.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError { key: "max-body-bytes", reason: "must be positive".into() });
        }
        if self.request_timeout_ms < self.election_timeout_max_ms {
            return Err(ConfigError {
                key: "request-timeout-ms",
                reason: format!(
                    "{} ms is shorter than election-timeout-max-ms ({} ms): requests would fail during every election",
                    self.request_timeout_ms, self.election_timeout_max_ms
                ),
            });
        }
        let config = openraft::Config {
            cluster_name: "conflux".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: 30_000,
            max_payload_entries: 512,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            replication_lag_threshold: self.snapshot_logs.saturating_mul(2),
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: self.snapshot_logs.clamp(1, 256),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError { key: "heartbeat-ms / election-timeout-*-ms", reason: e.to_string() })
    }
}
