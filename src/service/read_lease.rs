//! Which confirmation a linearizable read needs (`--read-policy`), and the startup hold that makes
//! lease reads safe across restarts.
//!
//! `read-index` (the default): every batch of reads waits for a heartbeat round that a quorum
//! acknowledges after the batch arrived. `lease`: the leader trusts a quorum acknowledgement of an
//! RPC it *sent* less than [`LEASE_SHARE`] of the leader lease ago, and falls back to a heartbeat
//! round when the last one is older.
//!
//! Why a lease read cannot be stale (the argument is in full in the README, "Lease reads"):
//! - openraft's leader lease is `election_timeout_max`. A follower that processes an AppendEntries
//!   or heartbeat from the leader refuses every vote request, except a leadership-transfer one,
//!   for one lease after processing it; the leader itself refuses votes while its quorum
//!   acknowledgement is younger than a lease.
//! - The leader counts from the moment it *sent* the acknowledged RPC, which is before the follower
//!   processed it, and trusts only 4/5 of the lease: so while the leader trusts an
//!   acknowledgement, every voter of that quorum still refuses to elect anyone else, with a fifth
//!   of the lease to spare for the two clocks' rates to differ (monotonic clocks: wall-clock jumps
//!   do not move them, and a SIGSTOPped process's clock keeps running).
//! - Every quorum that could elect another leader shares a voter with that acknowledging quorum,
//!   so no other leader can commit anything while the lease is trusted.
//! - A leader that starts a leadership transfer stops serving reads at once (openraft answers
//!   `ForwardToLeader`), which is why voters may grant a transfer's vote inside the lease.
//! - openraft forgets a follower's lease when the process restarts. [`ReadLease::hold_elections`]
//!   and [`ReadLease::hold_vote`] close that gap: for one lease after this process started it
//!   grants no vote (except a transfer's) and does not campaign, exactly as if it had processed a
//!   heartbeat just before it stopped.

use std::time::Duration;

use openraft::raft::linearizable_read::LinearizerOption;
use tokio::time::Instant;

use crate::config::ReadPolicy;
use crate::types::typ;

/// The share of the leader lease within which a lease read trusts a quorum acknowledgement.
const LEASE_SHARE: (u32, u32) = (4, 5);

/// The read policy of this node, and when it started.
#[derive(Debug, Clone)]
pub struct ReadLease {
    policy: ReadPolicy,
    /// openraft's leader lease: `election_timeout_max`.
    lease: Duration,
    started: Instant,
}

impl ReadLease {
    /// `lease` must be openraft's leader lease (`Config::election_timeout_max`).
    pub fn new(policy: ReadPolicy, lease: Duration) -> ReadLease {
        ReadLease { policy, lease, started: Instant::now() }
    }

    /// What `get_read_linearizer` needs for this policy.
    pub fn linearizer_option(&self) -> LinearizerOption {
        match self.policy {
            ReadPolicy::ReadIndex => openraft::ReadPolicy::ReadIndex.into(),
            ReadPolicy::Lease => {
                let (numerator, denominator) = LEASE_SHARE;
                LinearizerOption::new(Some(self.lease * numerator / denominator), true)
            }
        }
    }

    /// The moment this process has behaved, since it started, as if it had honoured a leader's
    /// lease: `None` under `read-index`, which needs no such hold.
    fn hold_until(&self) -> Option<Instant> {
        (self.policy == ReadPolicy::Lease).then_some(self.started + self.lease)
    }

    /// Under `lease`, keeps this node from campaigning until one lease after it started.
    pub fn hold_elections(&self, raft: &typ::Raft) {
        let Some(until) = self.hold_until() else { return };
        raft.runtime_config().elect(false);
        let raft = raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            raft.runtime_config().elect(true);
        });
    }

    /// Under `lease`, delays a vote request (other than a leadership transfer's) that arrives
    /// within one lease of this process's start until that lease has passed. To the candidate this
    /// is a slow network, which Raft always tolerates.
    pub async fn hold_vote(&self, request: &typ::VoteRequest) {
        if let (Some(until), false) = (self.hold_until(), request.leadership_transfer) {
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote_request(leadership_transfer: bool) -> typ::VoteRequest {
        let vote = typ::Vote::new(3, 2);
        typ::VoteRequest { vote, last_log_id: None, leadership_transfer }
    }

    #[tokio::test]
    async fn a_lease_node_holds_ordinary_votes_for_one_lease_after_it_starts() {
        let lease = ReadLease::new(ReadPolicy::Lease, Duration::from_millis(300));
        lease.hold_vote(&vote_request(false)).await;
        assert!(lease.started.elapsed() >= Duration::from_millis(300));
        let after_hold = Instant::now();
        lease.hold_vote(&vote_request(false)).await;
        assert!(after_hold.elapsed() < Duration::from_millis(100), "a vote after the hold is not delayed");
    }

    #[tokio::test]
    async fn transfer_votes_and_read_index_nodes_are_never_held() {
        let start = Instant::now();
        ReadLease::new(ReadPolicy::Lease, Duration::from_secs(60)).hold_vote(&vote_request(true)).await;
        ReadLease::new(ReadPolicy::ReadIndex, Duration::from_secs(60)).hold_vote(&vote_request(false)).await;
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_lease_read_trusts_four_fifths_of_the_lease_and_read_index_none_of_it() {
        let lease = ReadLease::new(ReadPolicy::Lease, Duration::from_millis(2000)).linearizer_option().to_string();
        assert!(lease.contains("max_quorum_ack_age: Some(1.6s)"), "{lease}");
        assert!(lease.contains("heartbeat_if_quorum_ack_stale: true"), "{lease}");
        let read_index = ReadLease::new(ReadPolicy::ReadIndex, Duration::from_secs(2)).linearizer_option().to_string();
        assert!(read_index.contains("max_quorum_ack_age: Some(0ns)"), "{read_index}");
    }
}
