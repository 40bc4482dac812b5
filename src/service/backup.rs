//! Backup, restore and quorum-loss recovery.
//!
//! A backup is this node's applied state read from one RocksDB snapshot (`store::backup`), with
//! `linearizable` first catching up with the leader.
//!
//! Restore and recover both end with this node the single voter of a new cluster, and both get
//! there through openraft's own path for a follower receiving a leader's snapshot
//! (`Raft::install_full_snapshot`), so Raft keeps running and its view of the log, the state
//! machine and the membership never disagree:
//!
//! - the snapshot is labelled with a log id and a membership of only this node, and comes with
//!   the (committed) vote of a higher term than this node has seen, from a leader that does not
//!   exist (node id 0, which no node has), so this node follows no real node;
//! - openraft truncates what conflicts, installs the snapshot, purges the log up to it and takes
//!   the membership; as the only voter it elects itself at its next tick (one term higher) and
//!   appends its first entry at the snapshot's index + 1: revisions continue above the state's;
//! - an [`InstallPlan`] armed for the snapshot writes the new cluster id in the install's batch.
//!
//! Restore installs the backup's records labelled with the backup's own last applied log id, on a
//! pristine node only. Recover installs an empty snapshot with a plan that keeps the local data:
//! the install runs on the state machine's task, after every apply queued before it, so whatever
//! this node had applied stays; it is labelled above everything this node's log holds, which is
//! dropped. Before either, inbound Raft calls are paused and the cluster id this node answers to
//! is changed (in memory; durably with the install), so no leader of the old cluster can change
//! its log meanwhile, and none can after.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::time::Duration;

use openraft::ServerState;

use super::membership::new_cluster_id;
use super::{Error, Service};
use crate::backup::Backup;
use crate::store::backup::{BackupSource, BackupStream};
use crate::store::InstallPlan;
use crate::types::{typ, NodeId, PeerNode};
use crate::wire;

/// A vote and log ids for "no leader": no node has id 0.
const NOBODY: NodeId = 0;
/// How long inbound Raft calls may take to finish before a restore or recover gives up.
const PAUSE_PEERS_WITHIN: Duration = Duration::from_secs(10);
/// How long recover tries to confirm a quorum before concluding there is none.
const QUORUM_PROBE: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How this node becomes the single voter of a new cluster.
struct Founding {
    cluster_id: String,
    /// The log id the installed state is labelled with.
    label: typ::LogId,
    /// The term of the vote that comes with the snapshot: above any this node has seen.
    term: u64,
    /// The snapshot payload; empty when keeping the local data.
    payload: Vec<u8>,
    keep_local_data: bool,
}

impl Service {
    /// Starts a backup of this node's applied state; with `linearizable`, after catching up with
    /// every change acknowledged before the call.
    pub async fn backup(&self, linearizable: bool) -> Result<BackupStream, Error> {
        if linearizable {
            self.linearize().await?;
        }
        let source = BackupSource { node_id: self.node_id(), created_at_ms: now_ms() };
        self.store.backup(source).await?.ok_or(Error::NotInitialized)
    }

    /// Refuses unless this node is pristine: no cluster, no Raft state, nothing applied.
    pub async fn check_pristine(&self) -> Result<(), Error> {
        let initialized = self.raft.is_initialized().await.map_err(|f| Error::Stopped(f.to_string()))?;
        let applied = self.raft.metrics().borrow_watched().last_applied.is_some();
        if initialized || applied || self.peers.identity().cluster_id().is_some() {
            return Err(Error::AlreadyInitialized);
        }
        Ok(())
    }

    /// Installs `backup` on this pristine node and makes it the single voter of a new cluster.
    pub async fn restore(&self, backup: Backup) -> Result<wire::RestoreResult, Error> {
        let _alone = self.recovery.try_lock().map_err(|_| Error::MembershipInProgress)?;
        let meta = &backup.meta;
        let label = typ::LogId::new(
            typ::LeaderId { term: meta.last_applied.term, node_id: meta.last_applied.leader_node_id },
            meta.last_applied.index,
        );
        let identity = self.peers.identity();
        let cluster_id = new_cluster_id();
        {
            let _paused = identity.pause_peers(PAUSE_PEERS_WITHIN).await.ok_or_else(peers_busy)?;
            self.check_pristine().await?;
            identity.fence(Some(cluster_id.clone()));
        }
        let founding = Founding {
            cluster_id: cluster_id.clone(),
            label,
            term: meta.last_applied.term + 1,
            payload: backup.payload,
            keep_local_data: false,
        };
        if let Err(e) = self.found_cluster(founding).await {
            identity.fence(None);
            return Err(e);
        }
        tracing::warn!(cluster_id, revision = meta.revision, from_cluster = meta.cluster_id, "restored a backup");
        self.wait_leading(label.index).await;
        Ok(wire::RestoreResult { node_id: self.node_id(), cluster_id, revision: meta.revision })
    }

    /// After quorum loss: makes this node the single voter of a new cluster holding everything
    /// it has applied. `cluster_id` must name its current cluster; refused while a quorum still
    /// confirms reads.
    pub async fn recover(&self, cluster_id: &str) -> Result<wire::RecoverResult, Error> {
        let _alone = self.recovery.try_lock().map_err(|_| Error::MembershipInProgress)?;
        let identity = self.peers.identity();
        let current = identity.cluster_id().ok_or(Error::NotInitialized)?;
        if current != cluster_id {
            return Err(Error::ClusterIdMismatch { local: current, requested: cluster_id.to_string() });
        }
        if self.raft.metrics().borrow_watched().last_applied.is_none() {
            return Err(Error::NotInitialized);
        }
        if matches!(tokio::time::timeout(QUORUM_PROBE, self.linearize()).await, Ok(Ok(()))) {
            return Err(Error::QuorumAvailable);
        }
        let new_cluster = new_cluster_id();
        // This node's own campaigns would raise its term under the vote chosen below.
        let campaigns_paused = CampaignsPaused::new(&self.raft);
        let (label, term) = {
            let _paused = identity.pause_peers(PAUSE_PEERS_WITHIN).await.ok_or_else(peers_busy)?;
            identity.fence(Some(new_cluster.clone()));
            // From here on no leader of the old cluster reaches this node's Raft, so its log and
            // commit index can only grow by entries this node appends itself, which no one can
            // acknowledge any more.
            let m = self.raft.metrics().borrow_watched().clone();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let last = m.last_log_index.unwrap_or(0).max(applied).max(self.committed_index());
            let term = m.current_term.max(m.last_applied.map_or(0, |l| l.leader_id.term)) + 1;
            (typ::LogId::new(typ::LeaderId { term, node_id: NOBODY }, last + 1), term)
        };
        let founding =
            Founding { cluster_id: new_cluster.clone(), label, term, payload: Vec::new(), keep_local_data: true };
        if let Err(e) = self.found_cluster(founding).await {
            identity.fence(Some(current));
            return Err(e);
        }
        drop(campaigns_paused);
        tracing::warn!(
            old_cluster = current,
            cluster_id = new_cluster,
            revision = label.index,
            "recovered from quorum loss: this node is the single voter of a new cluster"
        );
        self.wait_leading(label.index).await;
        Ok(wire::RecoverResult { node_id: self.node_id(), cluster_id: new_cluster, revision: label.index })
    }

    /// Installs the founding snapshot through Raft; fails unless the state machine installed it.
    async fn found_cluster(&self, founding: Founding) -> Result<(), Error> {
        let node_id = self.node_id();
        let nodes = BTreeMap::from([(node_id, PeerNode { peer_url: self.advertise_peer.clone() })]);
        let membership = typ::Membership::new(vec![BTreeSet::from([node_id])], nodes)
            .map_err(|e| Error::InvalidMembership(e.to_string()))?;
        let meta = typ::SnapshotMeta {
            last_log_id: Some(founding.label),
            last_membership: typ::StoredMembership::new(Some(founding.label), membership),
        };
        let plan = self.store.arm_install(InstallPlan {
            label: founding.label,
            cluster_id: founding.cluster_id,
            keep_local_data: founding.keep_local_data,
        });
        // Committed, as a leader's vote is: openraft installs a full snapshot only from a leader.
        let vote = typ::Vote::new_committed(founding.term, NOBODY);
        let snapshot = typ::Snapshot { meta, snapshot: Cursor::new(founding.payload) };
        let response =
            self.raft.install_full_snapshot(vote, snapshot).await.map_err(|f| Error::Stopped(f.to_string()))?;
        if response.vote != vote || !plan.taken() {
            tracing::warn!(vote = %response.vote, "raft did not install the founding snapshot");
            return Err(Error::Busy(format!(
                "raft moved on meanwhile (its vote is now {}); nothing was changed, retry",
                response.vote
            )));
        }
        Ok(())
    }

    /// Waits (bounded by the request timeout) until this node leads and has committed an entry
    /// of its own above `installed`; a slow election only delays the answer, the node leads as
    /// soon as it has one.
    async fn wait_leading(&self, installed: u64) {
        let node_id = self.node_id();
        let leading = self
            .raft
            .wait(Some(self.timeouts.request))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && m.last_applied.is_some_and(|l| l.index > installed)
                },
                "leading the new cluster",
            )
            .await;
        if leading.is_err() {
            tracing::warn!("the new cluster has no leader yet; it elects this node at the next tick");
        }
    }
}

/// Keeps this node from starting elections until dropped.
struct CampaignsPaused<'a>(&'a typ::Raft);

impl<'a> CampaignsPaused<'a> {
    fn new(raft: &'a typ::Raft) -> Self {
        raft.runtime_config().elect(false);
        CampaignsPaused(raft)
    }
}

impl Drop for CampaignsPaused<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().elect(true);
    }
}

fn peers_busy() -> Error {
    Error::Busy(format!("Raft calls from other nodes did not finish within {} s; retry", PAUSE_PEERS_WITHIN.as_secs()))
}
