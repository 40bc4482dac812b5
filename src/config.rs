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
    /// Open connections on the client listener; more are closed as soon as they are accepted.
    #[arg(long, env = "CONFLUX_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// Open connections on the peer listener (Raft and admin), apart from the client listener's.
    #[arg(long, env = "CONFLUX_PEER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub peer_max_connections: usize,
    /// A request head must arrive within this many milliseconds (both listeners).
    #[arg(long, env = "CONFLUX_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this many milliseconds of its head, else 408 (both listeners).
    #[arg(long, env = "CONFLUX_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection idle this many milliseconds is closed (both listeners; longer than
    /// the peer client's 60 s pool idle time, so peers never reuse a connection being closed).
    #[arg(long, env = "CONFLUX_IDLE_TIMEOUT_MS", default_value_t = 120_000)]
    pub idle_timeout_ms: u64,
    /// Client API requests executing at once (parked watches, health and metrics not counted);
    /// more are answered 503 `overloaded` at once.
    #[arg(long, env = "CONFLUX_MAX_INFLIGHT_REQUESTS", default_value_t = 1024)]
    pub max_inflight_requests: usize,
    /// Request body bytes the executing client requests may hold (by Content-Length; a body of
    /// unknown length counts as --max-body-bytes); past it, 503 `overloaded`.
    #[arg(long, env = "CONFLUX_MAX_INFLIGHT_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
    /// Bytes of writes waiting for the next Raft proposal; a write that does not fit is answered
    /// 503 `overloaded`.
    #[arg(long, env = "CONFLUX_WRITE_QUEUE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub write_queue_max_bytes: usize,
    /// Writes waiting for the next Raft proposal; past it, 503 `overloaded`.
    #[arg(long, env = "CONFLUX_WRITE_QUEUE_MAX_WRITES", default_value_t = 8192)]
    pub write_queue_max_writes: usize,
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

    /// The connection, request and write-queue bounds (see `listener`, `api::shed`,
    /// `service::write_batcher`).
    pub fn overload_limits(&self) -> crate::overload::OverloadLimits {
        crate::overload::OverloadLimits {
            max_connections: self.max_connections,
            peer_max_connections: self.peer_max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_inflight_requests: self.max_inflight_requests,
            max_inflight_body_bytes: self.max_inflight_body_bytes,
            write_queue_max_bytes: self.write_queue_max_bytes,
            write_queue_max_writes: self.write_queue_max_writes,
        }
    }

    /// Checks relations between settings and builds openraft's configuration.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError { key: "max-body-bytes", reason: "must be positive".into() });
        }
        self.overload_limits().check(self.max_body_bytes)?;
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
