//! Leader transfer: the leader hands leadership to a caught-up voter instead of leaving the
//! cluster to notice its absence. openraft's leader stops accepting writes, sends every voter a
//! transfer request, and the target, once its log holds everything the leader had, campaigns at
//! once; voters grant that campaign although the old leader's lease has not run out. Used by the
//! admin API (`POST /admin/leader`), by a leader shutting down cleanly (SIGTERM), and by the
//! operator before it restarts the leader's pod.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::metrics::WaitError;
use tokio::time::Instant;

use super::membership::{matched_index, HEALTHY_LAG_ENTRIES};
use super::{Error, Service};
use crate::types::{typ, NodeId};
use crate::wire;

/// How long a transfer request is given before it is sent again. openraft's target ignores a
/// request while its log is behind what the leader held when it asked, which under writes it can
/// be (an append still in flight on another connection), and a request can be lost; the leader,
/// which refuses new writes from the first request on and sends no heartbeats, catches the target
/// up within a round trip, and a repeated request then finds it ready. Unrepeated, such a
/// transfer would end in an election timeout instead.
const TRANSFER_RETRY: Duration = Duration::from_millis(50);

impl Service {
    /// Hands leadership from this node (which must lead) to `to`, or to the most caught-up other
    /// voter, and waits, bounded by the request timeout, until this node sees another node lead
    /// (the answer names it: the target, unless an election overtook the transfer).
    pub(super) async fn transfer_leadership(&self, to: Option<NodeId>) -> Result<wire::LeaderTransfer, Error> {
        let me = self.node_id();
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(me) {
            return Err(Error::NoLeader);
        }
        let target = transfer_target(&m, me, to)?;
        if target == me {
            return Ok(wire::LeaderTransfer { from: me, to: me, term: m.current_term });
        }
        let millis = self.timeouts.request.as_millis() as u64;
        let deadline = Instant::now() + self.timeouts.request;
        let handed_over = loop {
            self.raft.trigger().transfer_leader(target).await.map_err(|f| Error::Stopped(f.to_string()))?;
            let left = deadline.saturating_duration_since(Instant::now());
            let moved = |m: &typ::RaftMetrics| m.current_leader.is_some_and(|leader| leader != me);
            match self.raft.wait(Some(TRANSFER_RETRY.min(left))).metrics(moved, "leadership transferred").await {
                Ok(m) => break m,
                Err(WaitError::Timeout(..)) if Instant::now() < deadline => continue,
                Err(_) => return Err(Error::Timeout { millis }),
            }
        };
        let to = handed_over.current_leader.unwrap_or(target);
        tracing::info!(from = me, to, term = handed_over.current_term, "leadership transferred");
        Ok(wire::LeaderTransfer { from: me, to, term: handed_over.current_term })
    }

    /// Before a clean shutdown: if this node leads a cluster with other voters, hand leadership
    /// to one of them, waiting at most `bound`. Failing only means the cluster elects a leader
    /// the usual way, after an election timeout.
    pub async fn step_down_before_shutdown(&self, bound: Duration) {
        let me = self.node_id();
        let m = self.raft.metrics().borrow_watched().clone();
        let others = m.membership_config.membership().voter_ids().any(|id| id != me);
        if m.current_leader != Some(me) || !others {
            return;
        }
        match tokio::time::timeout(bound, self.transfer_leadership(None)).await {
            Ok(Ok(done)) => tracing::info!(to = done.to, "handed leadership over before shutting down"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not hand leadership over before shutting down"),
            Err(_) => tracing::warn!(millis = bound.as_millis() as u64, "handing leadership over timed out"),
        }
    }
}

/// The voter to hand leadership to: `to` if it is a voter close enough behind the leader's log
/// to take over at once, else (no `to`) the other voter that has matched the most of it.
fn transfer_target(m: &typ::RaftMetrics, me: NodeId, to: Option<NodeId>) -> Result<NodeId, Error> {
    let membership = m.membership_config.membership();
    let last_log = m.last_log_index.unwrap_or(0);
    let target = match to {
        Some(id) if id == me => return Ok(me),
        Some(id) if membership.voter_ids().any(|voter| voter == id) => id,
        Some(id) if membership.get_node(&id).is_some() => {
            return Err(Error::InvalidMembership(format!("node {id} is a learner; only a voter can lead")))
        }
        Some(id) => return Err(Error::UnknownMember(id)),
        None => membership
            .voter_ids()
            .filter(|id| *id != me)
            .max_by_key(|id| (matched_index(m, *id), std::cmp::Reverse(*id)))
            .ok_or_else(|| Error::InvalidMembership("this node is the only voter; no one can take over".into()))?,
    };
    let lag = last_log.saturating_sub(matched_index(m, target));
    if lag > HEALTHY_LAG_ENTRIES {
        return Err(Error::InvalidMembership(format!(
            "node {target} is {lag} entries behind the leader; hand leadership to a caught-up voter"
        )));
    }
    Ok(target)
}
