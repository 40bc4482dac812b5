//! When this node last answered a leader's AppendEntries holding every entry the leader had
//! committed. Readiness needs it: a restarted follower knows its leader from its stored vote at
//! once, and gets the leader's heartbeats at once, but the leader's log replication reaches it
//! only after the leader's retry backoff (up to 2 s) runs out. Until then it cannot count in a
//! quorum, so a rolling restart that moved on to the next member as soon as the node answered
//! would leave the leader without a quorum for that long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::types::typ;

/// The moment of the last AppendEntries this node answered, and how recent it must be.
#[derive(Debug)]
pub struct LeaderContact {
    started: Instant,
    /// Milliseconds after `started`, plus one; 0 until the first call.
    last_plus_one_ms: AtomicU64,
    fresh_within: Duration,
}

impl LeaderContact {
    /// `fresh_within`: how long after the last AppendEntries this node still counts as replicated
    /// to (a leader sends one at least every heartbeat interval).
    pub fn new(fresh_within: Duration) -> LeaderContact {
        LeaderContact { started: Instant::now(), last_plus_one_ms: AtomicU64::new(0), fresh_within }
    }

    /// After answering a leader's AppendEntries: records it when this node's log holds everything
    /// the leader has told it is committed (a follower the leader is replicating to always does
    /// right after an append; one it only heartbeats while its replication backs off does not).
    pub fn record_if_caught_up(&self, m: &typ::RaftMetrics) {
        let committed = m.cluster_committed.map_or(0, |c| c.index);
        if m.last_log_index.unwrap_or(0) >= committed {
            self.record();
        }
    }

    fn record(&self) {
        let since_start = self.started.elapsed().as_millis() as u64;
        self.last_plus_one_ms.fetch_max(since_start + 1, Ordering::Relaxed);
    }

    /// Whether a leader's AppendEntries arrived within `fresh_within`.
    pub fn is_fresh(&self) -> bool {
        match self.last_plus_one_ms.load(Ordering::Relaxed) {
            0 => false,
            last => {
                let at = self.started + Duration::from_millis(last - 1);
                at.elapsed() <= self.fresh_within
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fresh_only_after_a_leader_calls_and_until_the_window_passes() {
        let contact = LeaderContact::new(Duration::from_millis(200));
        assert!(!contact.is_fresh(), "never heard from a leader");
        contact.record();
        assert!(contact.is_fresh());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!contact.is_fresh(), "silent for longer than the window");
        contact.record();
        assert!(contact.is_fresh());
    }
}
