//! Prometheus metrics: the process-wide `conflux_*` registry, the bridge that turns openraft's
//! metrics stream into gauges, and the text exposition served on `/metrics`.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::types::typ;

/// Every metric a node exports.
pub struct Metrics {
    pub registry: Registry,
    pub raft_term: IntGauge,
    pub raft_state: IntGaugeVec,
    pub raft_leader_id: IntGauge,
    pub raft_leader_changes: IntCounter,
    pub raft_last_log_index: IntGauge,
    pub raft_committed_index: IntGauge,
    pub raft_applied_index: IntGauge,
    pub raft_snapshot_index: IntGauge,
    pub raft_purged_index: IntGauge,
    pub raft_voters: IntGauge,
    pub raft_learners: IntGauge,
    pub replication_matched_index: IntGaugeVec,
    pub replication_lag_entries: IntGaugeVec,
    pub snapshots_built: IntCounter,
    pub snapshots_installed: IntCounter,
    pub snapshot_size_bytes: IntGauge,
    pub write_batch_commands: Histogram,
    pub wal_sync_group_appends: Histogram,
    pub storage_size_bytes: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub watchers: IntGauge,
    pub watch_notify_seconds: Histogram,
    pub watch_responses: IntCounterVec,
    pub listener_connections: IntGaugeVec,
    pub listener_closed: IntCounterVec,
    pub requests_shed: IntCounterVec,
    pub requests_inflight: IntGauge,
    pub write_queue_bytes: IntGauge,
}

const STATES: [&str; 5] = ["Leader", "Follower", "Candidate", "Learner", "Shutdown"];

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let counter = |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric"));
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let latency_buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Metrics {
            raft_term: gauge("conflux_raft_term", "Current Raft term"),
            raft_state: gauge_vec("conflux_raft_state", "1 for this node's current Raft state", &["state"]),
            raft_leader_id: gauge("conflux_raft_leader_id", "Node id of the known leader, -1 when none"),
            raft_leader_changes: counter("conflux_raft_leader_changes_total", "Times the known leader changed"),
            raft_last_log_index: gauge("conflux_raft_last_log_index", "Index of the last log entry"),
            raft_committed_index: gauge("conflux_raft_committed_index", "Index of the last committed entry"),
            raft_applied_index: gauge("conflux_raft_applied_index", "Index of the last applied entry"),
            raft_snapshot_index: gauge("conflux_raft_snapshot_index", "Last log index in the current snapshot"),
            raft_purged_index: gauge("conflux_raft_purged_index", "Last purged log index"),
            raft_voters: gauge("conflux_raft_voters", "Voters in the effective membership"),
            raft_learners: gauge("conflux_raft_learners", "Learners in the effective membership"),
            replication_matched_index: gauge_vec(
                "conflux_raft_replication_matched_index",
                "Leader only: last index known replicated to each follower",
                &["peer"],
            ),
            replication_lag_entries: gauge_vec(
                "conflux_raft_replication_lag_entries",
                "Leader only: entries each follower is behind the leader's log",
                &["peer"],
            ),
            snapshots_built: counter("conflux_snapshots_built_total", "Snapshots built"),
            snapshots_installed: counter("conflux_snapshots_installed_total", "Snapshots installed from a leader"),
            snapshot_size_bytes: gauge("conflux_snapshot_size_bytes", "Size of the last built snapshot"),
            write_batch_commands: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "conflux_write_batch_commands",
                        "Client writes proposed together as one Raft log entry",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
                )
                .expect("valid metric"),
            ),
            wal_sync_group_appends: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "conflux_wal_sync_group_appends",
                        "Raft log appends made durable together by one WAL fsync",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
                )
                .expect("valid metric"),
            ),
            storage_size_bytes: gauge("conflux_storage_size_bytes", "Approximate RocksDB size"),
            http_requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new("conflux_http_requests_total", "HTTP requests by route and status"),
                    &["route", "status"],
                )
                .expect("valid metric"),
            ),
            http_request_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("conflux_http_request_duration_seconds", "HTTP request latency")
                        .buckets(latency_buckets),
                    &["route", "status"],
                )
                .expect("valid metric"),
            ),
            watchers: gauge("conflux_watchers", "Open watch sessions (long-polls and streams) on this node"),
            watch_notify_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "conflux_watch_notify_seconds",
                        "From this node's apply of a change to the watch answer carrying it",
                    )
                    .buckets(vec![0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
                )
                .expect("valid metric"),
            ),
            watch_responses: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "conflux_watch_responses_total",
                        "Watch answers and stream events by outcome: changed, timeout (or progress), unavailable, refused",
                    ),
                    &["outcome"],
                )
                .expect("valid metric"),
            ),
            listener_connections: gauge_vec(
                "conflux_listener_connections",
                "Open connections by listener (client, peer)",
                &["listener"],
            ),
            listener_closed: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "conflux_listener_connections_closed_total",
                        "Connections closed by the node: connection_cap, handshake_timeout, header_timeout, \
                         idle_timeout, body_timeout",
                    ),
                    &["listener", "reason"],
                )
                .expect("valid metric"),
            ),
            requests_shed: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "conflux_requests_shed_total",
                        "Requests answered 503 overloaded: inflight_requests, inflight_body_bytes, write_queue",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            requests_inflight: gauge(
                "conflux_requests_inflight",
                "Client requests executing now (as bounded by --max-inflight-requests)",
            ),
            write_queue_bytes: gauge("conflux_write_queue_bytes", "Bytes of writes waiting for the next proposal"),
            registry: r,
        }
    }

    /// Updates the Raft gauges from one openraft metrics value. Returns whether the leader changed.
    pub fn observe_raft(&self, m: &typ::RaftMetrics, previous_leader: Option<u64>) -> bool {
        self.raft_term.set(m.current_term as i64);
        let state = format!("{:?}", m.state);
        for s in STATES {
            self.raft_state.with_label_values(&[s]).set(i64::from(s == state));
        }
        self.raft_leader_id.set(m.current_leader.map_or(-1, |id| id as i64));
        let last_log = m.last_log_index.unwrap_or(0);
        self.raft_last_log_index.set(last_log as i64);
        self.raft_applied_index.set(m.last_applied.map_or(0, |l| l.index) as i64);
        self.raft_snapshot_index.set(m.snapshot.map_or(0, |l| l.index) as i64);
        self.raft_purged_index.set(m.purged.map_or(0, |l| l.index) as i64);
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        self.raft_voters.set(voters as i64);
        self.raft_learners.set(membership.learner_ids().count() as i64);
        self.replication_matched_index.reset();
        self.replication_lag_entries.reset();
        if let Some(replication) = &m.replication {
            for (peer, matched) in replication {
                let matched = matched.map_or(0, |l| l.index);
                let peer = peer.to_string();
                self.replication_matched_index.with_label_values(&[&peer]).set(matched as i64);
                self.replication_lag_entries.with_label_values(&[&peer]).set(last_log.saturating_sub(matched) as i64);
            }
        }
        let changed = m.current_leader.is_some() && m.current_leader != previous_leader;
        if changed {
            self.raft_leader_changes.inc();
        }
        changed
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding into a Vec cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
