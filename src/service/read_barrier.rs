//! Linearizable reads with coalescing. Readers queue on one worker; each round serves every reader
//! that was queued when it started, with one read-index confirmation: on the leader,
//! `ensure_linearizable` (a heartbeat round to a quorum, or under `--read-policy lease` a recent
//! enough quorum acknowledgement; see `read_lease.rs`); on a follower, a read index fetched from
//! the leader and then awaited locally. A reader that arrives while a round is in flight waits for the
//! next round, since a round started before a read arrived cannot vouch for it.

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::read_lease::ReadLease;
use super::{wait_for_leader, Error, ServiceTimeouts, PATH_READ_INDEX};
use crate::network::PeerClient;
use crate::types::typ;

type Waiter = oneshot::Sender<Result<u64, Error>>;

/// Handle on the read-index worker.
pub struct ReadBarrier {
    queue: mpsc::UnboundedSender<Waiter>,
}

impl ReadBarrier {
    pub fn start(raft: typ::Raft, peers: PeerClient, timeouts: ServiceTimeouts, lease: ReadLease) -> ReadBarrier {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, peers, timeouts, lease, waiting));
        ReadBarrier { queue }
    }

    /// Waits until this node has applied everything committed before the call; returns that index.
    pub async fn wait_linearizable(&self) -> Result<u64, Error> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| Error::Stopped("read worker stopped".into()))?;
        rx.await.map_err(|_| Error::Stopped("read worker stopped".into()))?
    }
}

async fn run(
    raft: typ::Raft,
    peers: PeerClient,
    timeouts: ServiceTimeouts,
    lease: ReadLease,
    mut waiting: mpsc::UnboundedReceiver<Waiter>,
) {
    while let Some(first) = waiting.recv().await {
        let mut round = vec![first];
        while let Ok(more) = waiting.try_recv() {
            round.push(more);
        }
        let result = confirm_read_index(&raft, &peers, &timeouts, &lease).await;
        for waiter in round {
            // A reader that gave up (its request was dropped) needs no answer.
            let _ = waiter.send(result.clone());
        }
    }
}

async fn confirm_read_index(
    raft: &typ::Raft,
    peers: &PeerClient,
    timeouts: &ServiceTimeouts,
    lease: &ReadLease,
) -> Result<u64, Error> {
    let deadline = Instant::now() + timeouts.request;
    let millis = timeouts.request.as_millis() as u64;
    let round = async {
        loop {
            match raft.ensure_linearizable(lease.linearizer_option()).await {
                Ok(read_log_id) => return Ok(read_log_id.index()),
                Err(openraft::error::RaftError::APIError(typ::LinearizableReadError::ForwardToLeader(f))) => {
                    // While this node hands leadership over, the target may not lead yet.
                    let handing_over = f.reason == openraft::error::ForwardReason::LeadershipTransfer;
                    let (Some(leader_id), Some(leader), false) = (f.leader_id, f.leader_node, handing_over) else {
                        wait_for_leader(raft, timeouts, deadline).await?;
                        continue;
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let reply: Result<u64, Error> = peers
                        .call(&leader.peer_url, PATH_READ_INDEX, leader_id, &(), left)
                        .await
                        .map_err(|e| Error::LeaderUnreachable { leader_id, reason: e.to_string() })?;
                    let index = reply?;
                    raft.wait(Some(deadline.saturating_duration_since(Instant::now())))
                        .applied_index_at_least(Some(index), "read index")
                        .await
                        .map_err(|_| Error::Timeout { millis })?;
                    return Ok(index);
                }
                Err(openraft::error::RaftError::APIError(typ::LinearizableReadError::QuorumNotEnough(_))) => {
                    return Err(Error::QuorumUnavailable)
                }
                Err(openraft::error::RaftError::Fatal(f)) => return Err(Error::Stopped(f.to_string())),
            }
        }
    };
    tokio::time::timeout_at(deadline, round).await.unwrap_or(Err(Error::Timeout { millis }))
}
