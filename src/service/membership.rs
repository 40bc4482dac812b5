//! Cluster membership: bootstrap, adding learners, changing voters, removing members, and the
//! status report. Changes run on the leader; any node forwards them there. A change that would
//! leave the resulting voter set without a reachable, caught-up majority is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::ChangeMembers;
use serde::{Deserialize, Serialize};

use super::{Error, Service};
use crate::types::{typ, NodeId, PeerNode};
use crate::wire;

pub const PATH_FORWARD_ADMIN: &str = "/raft/admin";
pub const PATH_PING: &str = "/raft/ping";
/// The leader tells a node it is about to add which cluster it joins (a [`JoinCluster`] body).
pub const PATH_JOIN: &str = "/raft/join";

/// The longest wait for a learner to catch up an add-learner call may ask for.
pub const MAX_LEARNER_WAIT: Duration = Duration::from_secs(600);

/// A member counts as healthy for quorum checks when it answers a ping and is at most this many
/// entries behind the leader.
pub(super) const HEALTHY_LAG_ENTRIES: u64 = 1000;
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// A membership change, as forwarded from any node to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    AddLearner {
        node_id: NodeId,
        peer_url: String,
        wait_millis: u64,
    },
    SetVoters {
        voters: BTreeSet<NodeId>,
    },
    Remove {
        node_id: NodeId,
    },
    /// Hand leadership to this voter, or to the most caught-up one.
    TransferLeader {
        to: Option<NodeId>,
    },
}

/// The body of [`PATH_JOIN`]: the cluster the called node becomes part of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinCluster {
    pub cluster_id: String,
}

/// What a membership change answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipOutcome {
    Learner(wire::LearnerResult),
    Changed(wire::Membership),
    Transferred(wire::LeaderTransfer),
}

pub(super) fn matched_index(m: &typ::RaftMetrics, node_id: NodeId) -> u64 {
    m.replication.as_ref().and_then(|r| r.get(&node_id).cloned().flatten()).map_or(0, |l| l.index)
}

fn members(m: &typ::RaftMetrics) -> (BTreeMap<NodeId, String>, BTreeMap<NodeId, String>) {
    let membership = m.membership_config.membership();
    let url = |id: NodeId| membership.get_node(&id).map(|n| n.peer_url.clone()).unwrap_or_default();
    (
        membership.voter_ids().map(|id| (id, url(id))).collect(),
        membership.learner_ids().map(|id| (id, url(id))).collect(),
    )
}

fn membership_view(m: &typ::RaftMetrics) -> wire::Membership {
    let (voters, learners) = members(m);
    wire::Membership { voters, learners, log_index: m.membership_config.log_id().map_or(0, |l| l.index) }
}

fn change_error(e: typ::RaftError<typ::ClientWriteError>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NoLeader,
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => Error::OutcomeUnknown {
            leader_id: f.leader_id.unwrap_or_default(),
            reason: "the membership change's entry was discarded by a new leader; check the membership".into(),
        },
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => Error::Busy(p.to_string()),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            // A new leader's first entry is not committed yet: the same "wait and retry".
            ChangeMembershipError::InProgress(_) | ChangeMembershipError::UncommittedLeaderLog(_) => {
                Error::MembershipInProgress
            }
            ChangeMembershipError::LearnerNotFound(l) => Error::UnknownMember(l.node_id),
            ChangeMembershipError::EmptyMembership(_) => {
                Error::InvalidMembership("the voter set would be empty".into())
            }
            other @ (ChangeMembershipError::UnsupportedMembershipTransition(_)
            | ChangeMembershipError::NodeMetadataChanged(_)) => Error::InvalidMembership(other.to_string()),
        },
        RaftError::Fatal(f) => Error::Stopped(f.to_string()),
    }
}

impl MembershipChange {
    /// What can be checked without the cluster's state: a learner's peer URL and the bound on how
    /// long to wait for it to catch up.
    pub fn check(&self) -> Result<(), Error> {
        match self {
            MembershipChange::AddLearner { peer_url, wait_millis, .. } => {
                if Duration::from_millis(*wait_millis) > MAX_LEARNER_WAIT {
                    return Err(Error::InvalidMembership(format!(
                        "wait of {wait_millis} ms is longer than the limit of {} s",
                        MAX_LEARNER_WAIT.as_secs()
                    )));
                }
                check_peer_url(peer_url)
            }
            MembershipChange::SetVoters { .. }
            | MembershipChange::Remove { .. }
            | MembershipChange::TransferLeader { .. } => Ok(()),
        }
    }
}

fn check_peer_url(peer_url: &str) -> Result<(), Error> {
    let rest = peer_url.strip_prefix("http://").or_else(|| peer_url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(()),
        _ => Err(Error::InvalidMembership(format!("peer_url must be an http:// or https:// URL, got {peer_url:?}"))),
    }
}

impl Service {
    /// This node's view of the cluster.
    pub fn status(&self) -> wire::ClusterStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let (voters, learners) = members(&m);
        let state = if m.membership_config.membership().nodes().next().is_none() {
            "Uninitialized".to_string()
        } else {
            format!("{:?}", m.state)
        };
        wire::ClusterStatus {
            node_id: m.id,
            cluster_id: self.peers.identity().cluster_id(),
            state,
            term: m.current_term,
            leader_id: m.current_leader,
            voters,
            learners,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: self.committed_index().max(m.last_applied.map_or(0, |l| l.index)),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            matched_index: m.replication.as_ref().map(|r| {
                r.iter().filter(|(id, _)| **id != m.id).map(|(id, l)| (*id, l.map_or(0, |l| l.index))).collect()
            }),
            quorum_acked_ms_ago: m
                .last_quorum_acked
                .as_ref()
                .filter(|_| m.state == openraft::ServerState::Leader)
                .map(|at| openraft::Instant::elapsed(&**at).as_millis() as u64),
        }
    }

    /// Makes this uninitialized node the single voter of a new cluster.
    pub async fn init(&self) -> Result<wire::InitResult, Error> {
        let identity = self.peers.identity();
        let already = self.raft.is_initialized().await.map_err(|f| Error::Stopped(f.to_string()))?;
        if already || identity.cluster_id().is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let node_id = self.node_id();
        let members = BTreeMap::from([(node_id, PeerNode { peer_url: self.advertise_peer.clone() })]);
        match self.raft.initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Err(Error::AlreadyInitialized),
            Err(RaftError::APIError(e)) => return Err(Error::InvalidMembership(e.to_string())),
            Err(RaftError::Fatal(f)) => return Err(Error::Stopped(f.to_string())),
        }
        let cluster_id = new_cluster_id();
        identity.set_cluster_id(&cluster_id)?;
        // Membership changes right after initialize fail with InProgress until it is applied.
        self.raft
            .wait(Some(self.timeouts.request))
            .metrics(
                |m| {
                    m.current_leader == Some(node_id)
                        && m.last_applied.map(|l| l.index) >= m.membership_config.log_id().map(|l| l.index)
                },
                "initial membership applied",
            )
            .await
            .map_err(|_| Error::Timeout { millis: self.timeouts.request.as_millis() as u64 })?;
        Ok(wire::InitResult { node_id, cluster_id })
    }

    /// Runs a membership change on the leader, forwarding it there from any other node.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<MembershipOutcome, Error> {
        let leader = self.raft.current_leader().await;
        match leader {
            Some(id) if id == self.node_id() => self.change_membership_as_leader(change).await,
            Some(leader_id) => {
                let m = self.raft.metrics().borrow_watched().clone();
                let peer_url = m
                    .membership_config
                    .membership()
                    .get_node(&leader_id)
                    .map(|n| n.peer_url.clone())
                    .ok_or(Error::NoLeader)?;
                let timeout = self.timeouts.request + Duration::from_millis(wait_millis(&change));
                let reply: Result<MembershipOutcome, Error> = self
                    .peers
                    .call(&peer_url, PATH_FORWARD_ADMIN, leader_id, &change, timeout)
                    .await
                    .map_err(|e| Error::LeaderUnreachable { leader_id, reason: e.to_string() })?;
                reply
            }
            None if !self.raft.is_initialized().await.unwrap_or(false) => Err(Error::NotInitialized),
            None => Err(Error::NoLeader),
        }
    }

    /// Runs a membership change here; refuses with `NoLeader` if this node does not lead.
    pub async fn change_membership_as_leader(&self, change: MembershipChange) -> Result<MembershipOutcome, Error> {
        if self.raft.current_leader().await != Some(self.node_id()) {
            return Err(Error::NoLeader);
        }
        // Checked again here: a forwarded change did not pass this node's admin API.
        change.check()?;
        match change {
            MembershipChange::AddLearner { node_id, peer_url, wait_millis } => self
                .add_learner(node_id, peer_url, Duration::from_millis(wait_millis))
                .await
                .map(MembershipOutcome::Learner),
            MembershipChange::SetVoters { voters } => self.set_voters(voters).await.map(MembershipOutcome::Changed),
            MembershipChange::Remove { node_id } => self.remove_member(node_id).await.map(MembershipOutcome::Changed),
            MembershipChange::TransferLeader { to } => {
                self.transfer_leadership(to).await.map(MembershipOutcome::Transferred)
            }
        }
    }

    async fn add_learner(
        &self,
        node_id: NodeId,
        peer_url: String,
        wait: Duration,
    ) -> Result<wire::LearnerResult, Error> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if membership.voter_ids().any(|id| id == node_id) {
            return Err(Error::InvalidMembership(format!("node {node_id} is already a voter")));
        }
        if let Some((other, _)) = membership.nodes().find(|(id, n)| **id != node_id && n.peer_url == peer_url) {
            return Err(Error::InvalidMembership(format!("peer_url {peer_url} already belongs to node {other}")));
        }
        self.tell_joining(node_id, &peer_url).await?;
        self.raft.add_learner(node_id, PeerNode { peer_url }, false).await.map_err(change_error)?;
        let target = self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        let matched = |m: &typ::RaftMetrics| matched_index(m, node_id);
        let caught_up = if wait.is_zero() {
            false
        } else {
            self.raft.wait(Some(wait)).metrics(|m| matched(m) >= target, "learner caught up").await.is_ok()
        };
        let matched_index = matched(&self.raft.metrics().borrow_watched());
        Ok(wire::LearnerResult { node_id, caught_up: caught_up || matched_index >= target, matched_index })
    }

    /// Tells the node at `peer_url` that it is joining this cluster, the only call that gives a
    /// node without a cluster its cluster id; a node of another cluster, or another node id at
    /// that URL, refuses, and nothing is added.
    async fn tell_joining(&self, node_id: NodeId, peer_url: &str) -> Result<(), Error> {
        let cluster_id = self.peers.identity().cluster_id().ok_or(Error::NotInitialized)?;
        let join = JoinCluster { cluster_id };
        let joined: Result<(), _> = self.peers.call(peer_url, PATH_JOIN, node_id, &join, PING_TIMEOUT).await;
        joined.map_err(|e| {
            tracing::warn!(node_id, peer_url, error = %e, "a node to add did not accept joining");
            Error::InvalidMembership(format!(
                "node {node_id} at {peer_url} did not accept joining this cluster (is it running, with that node id and no other cluster?)"
            ))
        })
    }

    async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<wire::Membership, Error> {
        if voters.is_empty() {
            return Err(Error::InvalidMembership("the voter set must not be empty".into()));
        }
        let m = self.raft.metrics().borrow_watched().clone();
        if let Some(unknown) = voters.iter().find(|id| m.membership_config.membership().get_node(id).is_none()) {
            return Err(Error::UnknownMember(*unknown));
        }
        self.require_healthy_majority(&voters).await?;
        self.raft.change_membership(voters, true).await.map_err(change_error)?;
        Ok(membership_view(&self.raft.metrics().borrow_watched()))
    }

    async fn remove_member(&self, node_id: NodeId) -> Result<wire::Membership, Error> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(Error::UnknownMember(node_id));
        }
        let change = if membership.voter_ids().any(|id| id == node_id) {
            let remaining: BTreeSet<NodeId> = membership.voter_ids().filter(|id| *id != node_id).collect();
            if remaining.is_empty() {
                return Err(Error::InvalidMembership(format!("node {node_id} is the last voter")));
            }
            self.require_healthy_majority(&remaining).await?;
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        self.raft.change_membership(change, false).await.map_err(change_error)?;
        Ok(membership_view(&self.raft.metrics().borrow_watched()))
    }

    /// Refuses unless a majority of `voters` answers a ping and is caught up with this leader.
    async fn require_healthy_majority(&self, voters: &BTreeSet<NodeId>) -> Result<(), Error> {
        let m = self.raft.metrics().borrow_watched().clone();
        let last_log = m.last_log_index.unwrap_or(0);
        let probes = voters.iter().map(|id| {
            let node = m.membership_config.membership().get_node(id).cloned();
            let matched = matched_index(&m, *id);
            async move {
                if *id == self.node_id() {
                    return true;
                }
                let Some(node) = node else { return false };
                let caught_up = last_log.saturating_sub(matched) <= HEALTHY_LAG_ENTRIES;
                let answered: Result<NodeId, _> =
                    self.peers.call(&node.peer_url, PATH_PING, *id, &(), PING_TIMEOUT).await;
                caught_up && answered.is_ok()
            }
        });
        let healthy = futures::future::join_all(probes).await.into_iter().filter(|ok| *ok).count();
        let needed = voters.len() / 2 + 1;
        if healthy < needed {
            return Err(Error::InvalidMembership(format!(
                "only {healthy} of the {} resulting voters are reachable and caught up; a majority needs {needed}",
                voters.len()
            )));
        }
        Ok(())
    }
}

/// A new cluster's id: 32 hex digits.
pub(super) fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn wait_millis(change: &MembershipChange) -> u64 {
    match change {
        MembershipChange::AddLearner { wait_millis, .. } => *wait_millis,
        _ => 0,
    }
}
