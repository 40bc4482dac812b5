//! The peer listener's node-to-node routes: Raft RPCs (append, vote, snapshot, transfer leader), writes and
//! read-index requests forwarded by followers, membership changes forwarded to the leader, each
//! node's watchers of a config (for the cluster-wide list), a ping for health probes, and the
//! join call a leader makes before adding this node. Every call must pass [`ClusterIdentity`]
//! checks first (the join call: token and target node only). Bodies are bincode, at most
//! [`PeerLimits::body_bytes`]; no concurrency limit is applied here (Raft traffic must never queue
//! behind clients). What a peer sends is checked as a client's request would be: forwarded
//! commands pass `Command::check`, snapshot chunks must continue the snapshot being received.
//! With peer TLS, each call must also come with a node certificate naming its sender, a member
//! (`identity::check_certificate`); the admin API merged onto this listener never looks at
//! certificates, only at admin tokens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use openraft::async_runtime::WatchReceiver;
use openraft_legacy::network_v1::ChunkedSnapshotReceiver;

use super::client::{PATH_APPEND, PATH_SNAPSHOT, PATH_TRANSFER_LEADER, PATH_VOTE};
use super::identity::{check_certificate, IdentityError};
use super::{BINCODE, HEADER_CLUSTER_ID, HEADER_FROM_NODE, HEADER_TARGET_NODE};
use crate::command::{Command, CommandResponse};
use crate::service::membership::{
    JoinCluster, MembershipChange, MembershipOutcome, PATH_FORWARD_ADMIN, PATH_JOIN, PATH_PING,
};
use crate::service::watchers::{WatchersQuery, PATH_WATCHERS};
use crate::service::{self, Service, PATH_FORWARD_WRITE, PATH_READ_INDEX};
use crate::tls::TlsConnection;
use crate::types::{typ, NodeId};

/// What peers may send this node.
#[derive(Debug, Clone, Copy)]
pub struct PeerLimits {
    /// Largest peer request body (`NodeConfig::peer_body_limit`).
    pub body_bytes: usize,
    /// Largest config body a client may send (`--max-body-bytes`), for forwarded commands.
    pub max_body_bytes: usize,
    /// Largest snapshot accepted (`--max-snapshot-bytes`).
    pub snapshot_bytes: u64,
}

/// What the peer routes share.
#[derive(Clone)]
struct PeerState {
    service: Arc<Service>,
    limits: PeerLimits,
    /// Peer TLS is on: every call must come with a node certificate naming its sender, a member.
    certificates: bool,
    snapshot: Arc<tokio::sync::Mutex<SnapshotReceipt>>,
    refusals: Arc<RateLimitedLog>,
}

/// Routes for node-to-node traffic, behind the identity check.
pub fn router(service: Arc<Service>, limits: PeerLimits, certificates: bool) -> Router {
    let state = PeerState {
        service,
        limits,
        certificates,
        snapshot: Default::default(),
        refusals: Arc::new(RateLimitedLog::new(REFUSAL_LOG_INTERVAL)),
    };
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_TRANSFER_LEADER, post(transfer_leader))
        .route(PATH_FORWARD_WRITE, post(forwarded_write))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_FORWARD_ADMIN, post(forwarded_membership_change))
        .route(PATH_PING, post(ping))
        .route(PATH_WATCHERS, post(watchers))
        .route(PATH_JOIN, post(join))
        .layer(middleware::from_fn_with_state(state.clone(), check_identity))
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
        .with_state(state)
}

/// At most one log line per this interval about refused peer calls; the rest are counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A log line that is written at most once per interval, with the count of those suppressed since.
pub struct RateLimitedLog {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog { interval, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// Whether to write the line for an event at `now`: `Some(suppressed since the last line)`, or
    /// `None` (counted) when a line was written less than an interval ago.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if now.saturating_duration_since(at) < self.interval => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

async fn check_identity(State(state): State<PeerState>, request: Request, next: Next) -> Response {
    let identity = state.service.peers.identity();
    // A Raft call holds the gate until its answer: a node changing clusters waits for the ones
    // already admitted. The other peer calls change no Raft state here.
    let raft_call = [PATH_APPEND, PATH_VOTE, PATH_SNAPSHOT, PATH_TRANSFER_LEADER].contains(&request.uri().path());
    let _admitted = if raft_call { Some(identity.admit().await) } else { None };
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let token = identity.check_token(text(header::AUTHORIZATION.as_str()));
    let join = request.uri().path() == PATH_JOIN;
    let checked = if join {
        // The join call is how a node without a cluster gets one; its handler checks the cluster.
        token.and_then(|_| identity.check_target(text(HEADER_TARGET_NODE)))
    } else {
        token.and_then(|_| identity.check_peer_call(text(HEADER_TARGET_NODE), text(HEADER_CLUSTER_ID)))
    };
    let checked = checked.and_then(|_| {
        if !state.certificates {
            return Ok(());
        }
        let connection = request.extensions().get::<ConnectInfo<TlsConnection>>();
        let certificate = connection.and_then(|c| c.0.peer_certificate.as_ref());
        // The leader calls /raft/join on a node that knows no membership yet.
        let members = (!join).then(|| {
            let metrics = state.service.raft.metrics();
            let membership = metrics.borrow_watched();
            let nodes = membership.membership_config.membership().nodes();
            nodes.map(|(id, node)| (*id, node.peer_url.clone())).collect::<BTreeMap<NodeId, String>>()
        });
        check_certificate(certificate, text(HEADER_FROM_NODE), identity.node_id(), members.as_ref())
    });
    match checked {
        Ok(()) => next.run(request).await,
        Err(e) => refusal(&state, e),
    }
}

fn refusal(state: &PeerState, e: IdentityError) -> Response {
    let status = match e {
        IdentityError::BadToken => StatusCode::UNAUTHORIZED,
        IdentityError::WrongNode { .. } => StatusCode::MISDIRECTED_REQUEST,
        IdentityError::InvalidCluster(_) => StatusCode::BAD_REQUEST,
        IdentityError::WrongCluster { .. } | IdentityError::MissingCluster | IdentityError::NotJoined => {
            StatusCode::CONFLICT
        }
        IdentityError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        IdentityError::NoCertificate
        | IdentityError::CertificateNamesOtherNode { .. }
        | IdentityError::NotAMember { .. } => StatusCode::FORBIDDEN,
    };
    if let Some(suppressed) = state.refusals.admit(Instant::now()) {
        tracing::warn!(error = %e, suppressed, "refused peer call (suppressed: refusals not logged since the last)");
    } else {
        tracing::debug!(error = %e, "refused peer call");
    }
    (status, e.to_string()).into_response()
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    bincode::deserialize(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable peer request: {e}")).into_response())
}

fn reply<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, BINCODE)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding reply: {e}")).into_response(),
    }
}

async fn append(State(state): State<PeerState>, body: Bytes) -> Response {
    match decode::<typ::AppendEntriesRequest>(&body) {
        Ok(request) => {
            let answered = state.service.raft.append_entries(request).await;
            if answered.is_ok() {
                state.service.leader_contact.record_if_caught_up(&state.service.raft.metrics().borrow_watched());
            }
            reply(&answered)
        }
        Err(refusal) => refusal,
    }
}

async fn vote(State(state): State<PeerState>, body: Bytes) -> Response {
    match decode::<typ::VoteRequest>(&body) {
        Ok(request) => {
            state.service.read_lease.hold_vote(&request).await;
            reply(&state.service.raft.vote(request).await)
        }
        Err(refusal) => refusal,
    }
}

/// The leader hands leadership to this node (which then campaigns at once) or to another one
/// (this node stops honouring the old leader's lease).
async fn transfer_leader(State(state): State<PeerState>, body: Bytes) -> Response {
    match decode::<typ::TransferLeaderRequest>(&body) {
        Ok(request) => reply(&state.service.raft.handle_transfer_leader(request).await),
        Err(refusal) => refusal,
    }
}

/// How much of which snapshot this node has received. openraft 0.9 writes a chunk wherever its
/// `offset` says (zero-filling any gap), so a chunk must start within what was received of its
/// snapshot (a resent chunk starts before its end) and end within the size limit. openraft-legacy's
/// receiver keeps the 0.9 behaviour.
#[derive(Debug, Default)]
pub struct SnapshotReceipt {
    receiving: Option<(String, u64)>,
}

impl SnapshotReceipt {
    /// Refuses a chunk that would leave a gap or pass `limit`.
    pub fn check(&self, id: &str, offset: u64, len: usize, limit: u64) -> Result<(), String> {
        let end = offset.checked_add(len as u64).filter(|end| *end <= limit);
        if end.is_none() {
            return Err(format!("snapshot chunk at offset {offset} of {len} bytes passes the limit of {limit} bytes"));
        }
        match &self.receiving {
            Some((receiving, received)) if receiving == id && offset > *received => {
                Err(format!("snapshot chunk at offset {offset} leaves a gap: {received} bytes were received"))
            }
            Some((receiving, _)) if receiving == id => Ok(()),
            _ if offset != 0 => Err(format!("snapshot chunk at offset {offset} of a snapshot not being received")),
            _ => Ok(()),
        }
    }

    /// Records a chunk openraft accepted.
    pub fn accepted(&mut self, id: &str, offset: u64, len: usize, done: bool) {
        let end = offset + len as u64;
        self.receiving = match self.receiving.take() {
            _ if done => None,
            Some((receiving, received)) if receiving == id => Some((receiving, received.max(end))),
            _ if offset == 0 => Some((id.to_string(), end)),
            other => other,
        };
    }
}

async fn snapshot(State(state): State<PeerState>, body: Bytes) -> Response {
    let request = match decode::<typ::InstallSnapshotRequest>(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let (id, offset, len, done) = (request.meta.snapshot_id.clone(), request.offset, request.data.len(), request.done);
    let vote = request.vote;
    // Held across the install so that chunks are checked and recorded in the order they apply.
    let mut receipt = state.snapshot.lock().await;
    if let Err(reason) = receipt.check(&id, offset, len, state.limits.snapshot_bytes) {
        tracing::warn!(snapshot_id = %id, reason, "refused snapshot chunk");
        return (StatusCode::BAD_REQUEST, reason).into_response();
    }
    let result = state.service.raft.install_snapshot(request).await;
    // openraft answers a stale vote with its own vote without receiving the chunk.
    if matches!(&result, Ok(response) if response.vote <= vote) {
        receipt.accepted(&id, offset, len, done);
    }
    reply(&result)
}

/// A follower's client write: checked as the client API checks it, then applied here only if this
/// node leads (never forwarded again).
async fn forwarded_write(State(state): State<PeerState>, body: Bytes) -> Response {
    let command: Command = match decode(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    if let Err(invalid) = command.check(state.limits.max_body_bytes) {
        tracing::warn!(error = %invalid, "refused a forwarded command");
        let refused: Result<CommandResponse, service::Error> = Err(service::Error::InvalidCommand(invalid.to_string()));
        return reply(&refused);
    }
    let result: Result<CommandResponse, service::Error> = state.service.write_as_leader(command).await;
    reply(&result)
}

/// A leader is about to add this node as a member of its cluster.
async fn join(State(state): State<PeerState>, body: Bytes) -> Response {
    let request: JoinCluster = match decode(&body) {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    match state.service.peers.identity().join(&request.cluster_id) {
        Ok(()) => reply(&()),
        Err(e) => refusal(&state, e),
    }
}

async fn read_index(State(state): State<PeerState>) -> Response {
    let service = &state.service;
    let result: Result<u64, service::Error> = if service.raft.current_leader().await == Some(service.node_id()) {
        service.read_index_as_leader().await
    } else {
        Err(service::Error::NoLeader)
    };
    reply(&result)
}

async fn forwarded_membership_change(State(state): State<PeerState>, body: Bytes) -> Response {
    let change: MembershipChange = match decode(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let result: Result<MembershipOutcome, service::Error> = state.service.change_membership_as_leader(change).await;
    reply(&result)
}

/// This node's watchers of one config, for a member assembling the cluster-wide list.
async fn watchers(State(state): State<PeerState>, body: Bytes) -> Response {
    match decode::<WatchersQuery>(&body) {
        Ok(query) => reply(&state.service.local_watchers(&query)),
        Err(refusal) => refusal,
    }
}

async fn ping(State(state): State<PeerState>) -> Response {
    let id: NodeId = state.service.node_id();
    reply(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_peer_calls_are_logged_once_per_interval_with_the_count_suppressed() {
        let log = RateLimitedLog::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        let admitted = (1..1000).filter(|i| log.admit(start + Duration::from_millis(*i)).is_some()).count();
        assert_eq!(admitted, 0, "a flood within the interval writes no more lines");
        assert_eq!(log.admit(start + Duration::from_secs(10)), Some(999));
        assert_eq!(log.admit(start + Duration::from_secs(11)), None);
        assert_eq!(log.admit(start + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn snapshot_chunks_must_continue_what_was_received_and_stay_within_the_limit() {
        let limit = 100 * 1024 * 1024;
        let mut receipt = SnapshotReceipt::default();
        assert!(receipt.check("s1", 0, 1000, limit).is_ok());
        receipt.accepted("s1", 0, 1000, false);
        assert!(receipt.check("s1", 1000, 1000, limit).is_ok(), "the next chunk");
        assert!(receipt.check("s1", 0, 1000, limit).is_ok(), "a resent chunk");
        assert!(receipt.check("s1", 1 << 40, 10, limit).unwrap_err().contains("limit"));
        assert!(receipt.check("s1", 1001, 10, limit).unwrap_err().contains("gap"));
        assert!(receipt.check("s1", u64::MAX, 10, limit).is_err(), "no overflow");
        receipt.accepted("s1", 1000, 1000, false);
        assert!(receipt.check("s1", 2000, 10, limit).is_ok());
        receipt.accepted("s1", 2000, 10, true);
        assert!(receipt.receiving.is_none(), "done ends the snapshot");
        assert!(receipt.check("s2", 0, 10, limit).is_ok(), "a new snapshot starts at 0");
        assert!(receipt.check("s2", 10, 10, limit).unwrap_err().contains("not being received"));
        assert!(receipt.check("s2", 0, limit as usize + 1, limit).is_err());
    }
}
