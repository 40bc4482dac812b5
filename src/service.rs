//! Configuration-center operations over Raft: writes (forwarded to the leader when this node is
//! not it), linearizable and serializable reads, and the errors they can end in. The HTTP layer
//! (`api`) calls only this; this never knows about status codes.

pub mod backup;
pub mod leader_contact;
pub mod leadership;
pub mod membership;
pub mod read_barrier;
pub mod read_lease;
pub mod resolve;
pub mod schemas;
pub mod watchers;
pub mod write_batcher;

use openraft::async_runtime::WatchReceiver;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandResponse};
use crate::model::{ConfigKey, ConfigRecord};
use crate::network::{PeerCallError, PeerClient};
use crate::store::{Store, StoreError};
use crate::types::{typ, NodeId};
use crate::watch::WatchHub;
use leader_contact::LeaderContact;
use read_barrier::ReadBarrier;
use read_lease::ReadLease;
use schemas::SchemaCache;
use write_batcher::{Rejected, WriteBatcher};

pub const PATH_FORWARD_WRITE: &str = "/raft/write";
pub const PATH_READ_INDEX: &str = "/raft/read-index";

/// How a service call failed. Serializable because a leader sends it back to a forwarding node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    #[error("no leader is known right now; retry shortly")]
    NoLeader,
    #[error("the leader (node {leader_id}) could not be reached: {reason}")]
    LeaderUnreachable { leader_id: NodeId, reason: String },
    #[error("a majority of voters did not confirm in time; the cluster may be partitioned")]
    QuorumUnavailable,
    #[error("the request did not complete within {millis} ms; a write may or may not have been applied")]
    Timeout { millis: u64 },
    #[error("this node is shutting down or stopped after a fatal error: {0}")]
    Stopped(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("this node already belongs to a cluster")]
    AlreadyInitialized,
    #[error("this node is not a member of any cluster yet")]
    NotInitialized,
    #[error("node {0} is not a member of this cluster")]
    UnknownMember(NodeId),
    #[error("invalid membership change: {0}")]
    InvalidMembership(String),
    #[error("another membership change is in progress; retry when it completes")]
    MembershipInProgress,
    /// A forwarded command the leader refused before proposing it (see `Command::check`).
    #[error("{0}")]
    InvalidCommand(String),
    /// A forwarded write was sent but no answer came back: it may or may not have been applied.
    #[error("the leader (node {leader_id}) did not answer a forwarded write: {reason}")]
    OutcomeUnknown { leader_id: NodeId, reason: String },
    /// Refused at once rather than queued: the node holds as much as its bounds allow.
    #[error("{0}")]
    Overloaded(String),
    /// A recover named another cluster than the one this node belongs to.
    #[error("this node belongs to cluster {local}, not {requested}; name its cluster to confirm")]
    ClusterIdMismatch { local: String, requested: String },
    /// A recover on a node that can still confirm reads with a quorum of its cluster.
    #[error("this node's cluster still has a quorum; recover is only for a cluster that lost it")]
    QuorumAvailable,
    /// Something this node does not control right now is in the way; retrying may succeed.
    #[error("{0}")]
    Busy(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Storage(e.to_string())
    }
}

/// Timeouts the service applies to client-facing operations.
#[derive(Debug, Clone)]
pub struct ServiceTimeouts {
    /// Upper bound for one client write or linearizable read, forwarding included.
    pub request: Duration,
    /// How long a request waits for an election to produce a leader before answering 503.
    pub leader_wait: Duration,
}

/// What bounds the service: its timeouts and its queue of writes waiting for Raft.
#[derive(Debug, Clone)]
pub struct ServiceLimits {
    pub timeouts: ServiceTimeouts,
    pub write_queue: crate::overload::WriteQueueLimits,
    pub read_lease: ReadLease,
    /// How recently a leader's AppendEntries must have found a follower caught up for it to be ready.
    pub leader_contact_within: Duration,
}

/// The node's operations, shared by the client API, the admin API and the peer routes.
pub struct Service {
    pub raft: typ::Raft,
    pub store: Store,
    pub peers: PeerClient,
    pub timeouts: ServiceTimeouts,
    pub advertise_peer: String,
    pub committed_index: Arc<AtomicU64>,
    pub schemas: SchemaCache,
    pub watch: Arc<WatchHub>,
    /// The read policy, and the startup hold a lease policy needs (the vote route applies it).
    pub read_lease: ReadLease,
    /// When a leader's AppendEntries last found this node caught up (the append route records it).
    pub leader_contact: LeaderContact,
    reads: ReadBarrier,
    writes: WriteBatcher,
    /// Held by a restore or recover: one at a time.
    recovery: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(
        raft: typ::Raft,
        store: Store,
        peers: PeerClient,
        limits: ServiceLimits,
        advertise_peer: String,
        committed_index: Arc<AtomicU64>,
        watch: Arc<WatchHub>,
    ) -> Arc<Service> {
        let ServiceLimits { timeouts, write_queue, read_lease, leader_contact_within } = limits;
        read_lease.hold_elections(&raft);
        let reads = ReadBarrier::start(raft.clone(), peers.clone(), timeouts.clone(), read_lease.clone());
        let writes = WriteBatcher::start(raft.clone(), timeouts.request, write_queue);
        let schemas = SchemaCache::default();
        Arc::new(Service {
            raft,
            store,
            peers,
            timeouts,
            advertise_peer,
            committed_index,
            schemas,
            watch,
            read_lease,
            leader_contact: LeaderContact::new(leader_contact_within),
            reads,
            writes,
            recovery: Default::default(),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.peers.identity().node_id()
    }

    pub fn committed_index(&self) -> u64 {
        self.committed_index.load(Ordering::Relaxed)
    }

    /// Commits `command` through Raft, on this node if it leads, else on the leader.
    pub async fn write(&self, command: Command) -> Result<CommandResponse, Error> {
        let deadline = tokio::time::Instant::now() + self.timeouts.request;
        let millis = self.timeouts.request.as_millis() as u64;
        tokio::time::timeout_at(deadline, self.write_until(command, deadline))
            .await
            .unwrap_or(Err(Error::Timeout { millis }))
    }

    async fn write_until(&self, command: Command, deadline: tokio::time::Instant) -> Result<CommandResponse, Error> {
        loop {
            match self.writes.submit(command.clone()).await {
                Ok(response) => return Ok(response),
                Err(Rejected::NotLeader { leader: None }) => {
                    wait_for_leader(&self.raft, &self.timeouts, deadline).await?
                }
                Err(Rejected::NotLeader { leader: Some((leader_id, peer_url)) }) => {
                    match self.forward_write(leader_id, &peer_url, &command, deadline).await {
                        // The leader stepped down between our look-up and its apply: look again.
                        Err(Error::NoLeader) => wait_for_leader(&self.raft, &self.timeouts, deadline).await?,
                        other => return other,
                    }
                }
                Err(Rejected::Failed(e)) => return Err(e),
            }
        }
    }

    /// Commits `command` only if this node leads (a follower's forwarded write: never forwarded
    /// again, so two nodes with stale views cannot bounce it between them).
    pub async fn write_as_leader(&self, command: Command) -> Result<CommandResponse, Error> {
        let millis = self.timeouts.request.as_millis() as u64;
        match tokio::time::timeout(self.timeouts.request, self.writes.submit(command)).await {
            Err(_) => Err(Error::Timeout { millis }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Rejected::NotLeader { .. })) => Err(Error::NoLeader),
            Ok(Err(Rejected::Failed(e))) => Err(e),
        }
    }

    async fn forward_write(
        &self,
        leader_id: NodeId,
        peer_url: &str,
        command: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<CommandResponse, Error> {
        let mut backoff = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply: Result<Result<CommandResponse, Error>, PeerCallError> =
                self.peers.call(peer_url, PATH_FORWARD_WRITE, leader_id, command, left).await;
            match reply {
                Ok(result) => return result,
                // Nothing was sent: safe to retry until the deadline.
                Err(PeerCallError::Unreachable(_)) if left > backoff => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    if self.raft.current_leader().await != Some(leader_id) {
                        return Err(Error::NoLeader);
                    }
                }
                Err(e) => return Err(forward_failure(leader_id, e)),
            }
        }
    }

    /// Returns once this node's state machine reflects every write acknowledged before the call.
    pub async fn linearize(&self) -> Result<(), Error> {
        self.reads.wait_linearizable().await.map(|_| ())
    }

    /// The leader side of a follower's read-index request: confirms leadership with a quorum and
    /// returns the index the follower must apply up to.
    pub async fn read_index_as_leader(&self) -> Result<u64, Error> {
        self.reads.wait_linearizable().await
    }

    /// Reads one configuration from the local state machine.
    pub fn get(&self, key: &ConfigKey) -> Result<Option<(ConfigRecord, Vec<u8>)>, Error> {
        Ok(self.store.get_config(key)?)
    }

    /// The local applied index, the revision a serializable read reflects.
    pub fn applied_index(&self) -> u64 {
        self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
    }

    /// Whether this node's applied state holds every change acknowledged so far: it leads and has
    /// applied everything it knows committed (a leader answers a write only after applying it).
    pub fn local_state_is_current(&self) -> bool {
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow_watched();
        metrics.current_leader == Some(metrics.id)
            && metrics.last_applied.map_or(0, |l| l.index) >= self.committed_index()
    }

    /// Waits up to `bound` until this node has applied `revision`; false if it has not by then.
    pub async fn wait_applied(&self, revision: u64, bound: Duration) -> bool {
        if self.applied_index() >= revision {
            return true;
        }
        self.raft.wait(Some(bound)).applied_index_at_least(Some(revision), "min_revision").await.is_ok()
    }
}

/// What a forwarded write that got no answer means for its client. Only when nothing reached the
/// leader (no connection, or a refusal before the body was read) is it safe to call the leader
/// unreachable and invite a retry; once the request may have been sent, the write may have
/// committed, and the client must read before it writes again.
pub(crate) fn forward_failure(leader_id: NodeId, error: PeerCallError) -> Error {
    let reason = error.to_string();
    match error {
        PeerCallError::Unreachable(_) | PeerCallError::Refused { status: 400..=499, .. } => {
            Error::LeaderUnreachable { leader_id, reason }
        }
        PeerCallError::Transport(_)
        | PeerCallError::Refused { .. }
        | PeerCallError::Decode(_)
        | PeerCallError::ReplyTooLarge { .. } => Error::OutcomeUnknown { leader_id, reason },
    }
}

/// Waits (bounded by `leader_wait` and `deadline`) until some leader is known.
pub(crate) async fn wait_for_leader(
    raft: &typ::Raft,
    timeouts: &ServiceTimeouts,
    deadline: tokio::time::Instant,
) -> Result<(), Error> {
    // Also paces callers that loop on this while the leader's address is still unknown.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let bound = (tokio::time::Instant::now() + timeouts.leader_wait).min(deadline);
    let left = bound.saturating_duration_since(tokio::time::Instant::now());
    match raft.wait(Some(left)).metrics(|m| m.current_leader.is_some(), "a known leader").await {
        Ok(_) => Ok(()),
        Err(openraft::metrics::WaitError::ShuttingDown) => Err(Error::Stopped("raft is shutting down".into())),
        Err(openraft::metrics::WaitError::Timeout(..)) => Err(Error::NoLeader),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::network::ClusterIdentity;

    fn peer_client(dir: &std::path::Path) -> PeerClient {
        let store = Store::open(dir).unwrap();
        let identity = Arc::new(ClusterIdentity::load(store, "a-token-of-sixteen-chars".into()).unwrap());
        PeerClient::new("a-token-of-sixteen-chars".into(), identity, 1024 * 1024, None, &[]).unwrap()
    }

    async fn forward(peers: &PeerClient, url: &str) -> Error {
        let reply: Result<Result<CommandResponse, Error>, PeerCallError> =
            peers.call(url, PATH_FORWARD_WRITE, 2, &(), Duration::from_millis(300)).await;
        forward_failure(2, reply.expect_err("the call must fail"))
    }

    #[tokio::test]
    async fn a_forwarded_write_that_may_have_reached_the_leader_is_an_unknown_outcome_not_unreachable() {
        let dir = tempfile::TempDir::new().unwrap();
        let peers = peer_client(dir.path());

        // Nothing listens: nothing was sent, so the leader is unreachable and a retry is safe.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        assert!(matches!(forward(&peers, &closed_url).await, Error::LeaderUnreachable { leader_id: 2, .. }));

        // The leader reads the request and never answers, or drops the connection after reading
        // it: the write may have been applied.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}", silent.local_addr().unwrap());
        let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dropping_url = format!("http://{}", dropping.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                held.push(socket);
            }
        });
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut socket, _)) = dropping.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
            }
        });
        for url in [&silent_url, &dropping_url] {
            let error = forward(&peers, url).await;
            assert!(matches!(error, Error::OutcomeUnknown { leader_id: 2, .. }), "{url}: {error:?}");
        }
    }
}
