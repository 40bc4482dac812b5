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
    /// `HOST=IP`: reach the peer host HOST at IP instead of looking it up in DNS (the port stays
    /// the peer URL's), like curl's `--resolve`. Repeatable; the environment variable takes a
    /// comma-separated list. For machines where the members' names are not in DNS.
    #[arg(long = "peer-resolve", env = "CONFLUX_PEER_RESOLVE", value_name = "HOST=IP", value_delimiter = ',')]
    pub peer_resolve: Vec<crate::client::HostAddress>,
    /// Node id of a new data directory (1 to 2^53-1), so a node certificate naming it
    /// (`node-<id>.conflux`) can be issued before the first start; an existing data directory must
    /// already have this id [default: a random id, created with the data directory].
    #[arg(long, env = "CONFLUX_NODE_ID")]
    pub node_id: Option<u64>,
    /// Certificate chain (PEM) the client listener serves TLS with; needs --tls-key-file. Without
    /// both, the client listener speaks plain HTTP.
    #[arg(long, env = "CONFLUX_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, env = "CONFLUX_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// This node's certificate (PEM, with the SAN `node-<id>.conflux`): served on the peer
    /// listener and presented on calls to peers. Needs --peer-tls-key-file and --peer-tls-ca-file.
    #[arg(long, env = "CONFLUX_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-tls-cert-file.
    #[arg(long, env = "CONFLUX_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,
    /// CA (PEM, one or more certificates) peer certificates must be signed by: Raft calls must
    /// present one naming their sender, and outbound peer calls trust only it.
    #[arg(long, env = "CONFLUX_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,
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
    /// Largest accepted config body, in bytes (at most 64 MiB). The peer listener's body limit is
    /// derived from it.
    #[arg(long, env = "CONFLUX_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest snapshot this node accepts from a leader, in bytes; chunks past it are refused.
    /// Also the largest backup file a restore (`POST /admin/restore`) accepts.
    #[arg(long, env = "CONFLUX_MAX_SNAPSHOT_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_snapshot_bytes: u64,
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
    /// How a linearizable read confirms this node's view: `read-index` (a heartbeat round to a
    /// quorum for each batch of reads) or `lease` (the leader trusts a quorum acknowledgement
    /// younger than 4/5 of `--election-timeout-max-ms`, with no round trip; see README
    /// "Lease reads"). Set the same value on every member.
    #[arg(long, env = "CONFLUX_READ_POLICY", value_enum, default_value = "read-index")]
    pub read_policy: ReadPolicy,
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

/// Whether requests must carry a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Enabled,
    Disabled,
}

/// How linearizable reads are confirmed; see [`crate::service::read_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadPolicy {
    ReadIndex,
    Lease,
}

/// The largest `--max-body-bytes`: a log entry may carry a full batch plus one command of twice
/// this size, and every peer body must stay far below what a node can buffer.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;
/// What a command adds beyond its content and one more body-sized field (a JSON body's message or
/// a release's rules): names, origin, a query-string message (hyper caps URIs at 64 KiB), bincode.
const COMMAND_OVERHEAD_BYTES: usize = 256 * 1024;
/// openraft's snapshot chunk size, set in [`NodeConfig::raft_config`].
const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// What one peer body adds beyond its entries or chunk: log ids, votes, membership, bincode.
const PEER_BODY_OVERHEAD_BYTES: usize = 1024 * 1024;

/// A setting that cannot work, named so the user knows what to change.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// Which listeners speak TLS, with which files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub client: Option<crate::tls::ServerFiles>,
    pub peer: Option<crate::tls::PeerFiles>,
}

/// The largest node id: ids stay below 2^53 so JSON clients in any language read them exactly.
pub const MAX_NODE_ID: u64 = (1 << 53) - 1;

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

    /// The most bytes one `Command` can take once encoded: its content (at most one body) and
    /// another body-sized field, plus fixed overhead.
    pub fn max_command_bytes(&self) -> usize {
        self.max_body_bytes.saturating_mul(2).saturating_add(COMMAND_OVERHEAD_BYTES)
    }

    /// The peer listener's body limit, which is also the most bytes a peer reply may have: the
    /// largest of one AppendEntries (entries cut at `APPEND_BYTES_BUDGET`, or one entry when it is
    /// larger: a write batch grows until `MAX_BATCH_BYTES`, then takes at most one more command),
    /// one snapshot chunk, and one forwarded command, plus overhead.
    pub fn peer_body_limit(&self) -> usize {
        let entry = crate::service::write_batcher::MAX_BATCH_BYTES.saturating_add(self.max_command_bytes());
        let append = entry.max(crate::network::client::APPEND_BYTES_BUDGET as usize);
        append.max(SNAPSHOT_CHUNK_BYTES as usize).saturating_add(PEER_BODY_OVERHEAD_BYTES)
    }

    /// The read policy, with openraft's leader lease (`election_timeout_max`).
    pub fn read_lease(&self) -> crate::service::read_lease::ReadLease {
        crate::service::read_lease::ReadLease::new(self.read_policy, self.election_timeout_max())
    }

    /// The upper bound of the election timeout: openraft's leader lease, and how long a follower
    /// may go without hearing from its leader before it campaigns.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
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

    /// The TLS files of both listeners; refuses half-configured settings (a certificate without
    /// its key, peer TLS without its CA) and an advertised peer URL whose scheme disagrees.
    pub fn tls_settings(&self) -> Result<TlsSettings, ConfigError> {
        let client = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::ServerFiles { cert: cert.clone(), key: key.clone(), client_ca: None })
            }
            (None, None) => None,
            (Some(_), None) => return Err(needs("tls-cert-file", "--tls-key-file")),
            (None, Some(_)) => return Err(needs("tls-key-file", "--tls-cert-file")),
        };
        let peer = match (&self.peer_tls_cert_file, &self.peer_tls_key_file, &self.peer_tls_ca_file) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(crate::tls::PeerFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() })
            }
            (None, None, None) => None,
            (cert, key, ca) => {
                let missing: Vec<&str> =
                    [(cert, "--peer-tls-cert-file"), (key, "--peer-tls-key-file"), (ca, "--peer-tls-ca-file")]
                        .into_iter()
                        .filter(|(file, _)| file.is_none())
                        .map(|(_, flag)| flag)
                        .collect();
                return Err(ConfigError {
                    key: "peer-tls-*-file",
                    reason: format!("peer TLS needs a certificate, its key and a CA; missing {}", missing.join(", ")),
                });
            }
        };
        if let Some(url) = &self.advertise_peer {
            let https = url.starts_with("https://");
            if peer.is_some() && !https {
                return Err(ConfigError {
                    key: "advertise-peer",
                    reason: format!("{url} is not https:// but the peer listener speaks TLS"),
                });
            }
            if peer.is_none() && https {
                return Err(ConfigError {
                    key: "advertise-peer",
                    reason: format!("{url} is https:// but no peer TLS is configured (--peer-tls-*-file)"),
                });
            }
        }
        if let Some(id) = self.node_id {
            if id == 0 || id > MAX_NODE_ID {
                return Err(ConfigError { key: "node-id", reason: format!("{id} is not within 1..={MAX_NODE_ID}") });
            }
        }
        Ok(TlsSettings { client, peer })
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
        if self.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(ConfigError {
                key: "max-body-bytes",
                reason: format!(
                    "{} bytes is over the limit of {MAX_BODY_BYTES_LIMIT} bytes: Raft entries carrying such configs \
                     would be larger than peers accept",
                    self.max_body_bytes
                ),
            });
        }
        if self.max_snapshot_bytes < SNAPSHOT_CHUNK_BYTES {
            return Err(ConfigError {
                key: "max-snapshot-bytes",
                reason: format!("must be at least one snapshot chunk ({SNAPSHOT_CHUNK_BYTES} bytes)"),
            });
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
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_in_snapshot_log_to_keep: self.keep_logs,
            purge_batch_size: self.snapshot_logs.clamp(1, 256),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError { key: "heartbeat-ms / election-timeout-*-ms", reason: e.to_string() })
    }
}

fn needs(key: &'static str, other: &str) -> ConfigError {
    ConfigError { key, reason: format!("needs {other} as well") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_configured_tls_is_refused_at_start_up() {
        let base = NodeConfig::with_data_dir("unused".into());
        assert_eq!(base.tls_settings().unwrap(), TlsSettings::default());
        let cert_only = NodeConfig { tls_cert_file: Some("c.pem".into()), ..base.clone() };
        assert_eq!(cert_only.tls_settings().unwrap_err().key, "tls-cert-file");
        let key_only = NodeConfig { tls_key_file: Some("k.pem".into()), ..base.clone() };
        assert_eq!(key_only.tls_settings().unwrap_err().key, "tls-key-file");
        let no_ca = NodeConfig {
            peer_tls_cert_file: Some("c.pem".into()),
            peer_tls_key_file: Some("k.pem".into()),
            ..base.clone()
        };
        let err = no_ca.tls_settings().unwrap_err();
        assert!(err.to_string().contains("missing --peer-tls-ca-file"), "{err}");
        let peer = NodeConfig { peer_tls_ca_file: Some("ca.pem".into()), ..no_ca };
        assert!(peer.tls_settings().unwrap().peer.is_some());
        let plain_advertised = NodeConfig { advertise_peer: Some("http://a:7001".into()), ..peer.clone() };
        assert_eq!(plain_advertised.tls_settings().unwrap_err().key, "advertise-peer");
        let https_without_tls = NodeConfig { advertise_peer: Some("https://a:7001".into()), ..base.clone() };
        assert_eq!(https_without_tls.tls_settings().unwrap_err().key, "advertise-peer");
        let zero = NodeConfig { node_id: Some(0), ..base };
        assert_eq!(zero.tls_settings().unwrap_err().key, "node-id");
    }

    fn with_body(max_body_bytes: usize) -> NodeConfig {
        NodeConfig { max_body_bytes, ..NodeConfig::with_data_dir("unused".into()) }
    }

    #[test]
    fn body_limits_past_what_peers_accept_are_refused_at_start_up() {
        for bytes in [MAX_BODY_BYTES_LIMIT + 1, 64 * 1024 * 1024 * 1024, usize::MAX] {
            let err = with_body(bytes).raft_config().unwrap_err();
            assert_eq!(err.key, "max-body-bytes", "{err}");
            assert!(err.to_string().contains("over the limit"), "{err}");
        }
        assert_eq!(with_body(0).raft_config().unwrap_err().key, "max-body-bytes");
        assert!(with_body(MAX_BODY_BYTES_LIMIT).raft_config().is_ok());
        let small_snapshot = NodeConfig { max_snapshot_bytes: 1024, ..with_body(1024) };
        assert_eq!(small_snapshot.raft_config().unwrap_err().key, "max-snapshot-bytes");
    }

    #[test]
    fn the_peer_body_limit_holds_a_full_batch_of_the_largest_commands_for_every_accepted_body_limit() {
        for bytes in [1, 1024, 1024 * 1024, 5 * 1024 * 1024, 60 * 1024 * 1024, MAX_BODY_BYTES_LIMIT] {
            let config = with_body(bytes);
            assert!(config.raft_config().is_ok());
            let limit = config.peer_body_limit();
            // A batch grows while under MAX_BATCH_BYTES, then takes one more command.
            let largest_entry = crate::service::write_batcher::MAX_BATCH_BYTES + config.max_command_bytes();
            assert!(limit > largest_entry, "{bytes}: {limit} <= {largest_entry}");
            assert!(limit > crate::network::client::APPEND_BYTES_BUDGET as usize);
            assert!(limit > 2 * bytes + 64 * 1024, "a body plus a query-string message fits");
        }
        // Larger bodies raise the peer limit beyond the old fixed 64 MiB.
        assert!(with_body(MAX_BODY_BYTES_LIMIT).peer_body_limit() > 128 * 1024 * 1024);
    }
}
