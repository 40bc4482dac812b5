//! The membership planner: observed cluster state and spec in, the one next action out.
//!
//! Pure and sans-IO: no Kubernetes, no HTTP, no clock. The controller observes, calls [`plan`],
//! records the action as intent in status and carries it out; the tests drive [`plan`] against a
//! model of the cluster. The seven safety rules of DESIGN.md ("The operator") live here:
//!
//! 1. `spec.replicas` is the truth: a pod that vanished is never a reason to change membership.
//! 2. New members join as learners and are promoted only once caught up.
//! 3. On scale-down membership changes first; the StatefulSet shrinks only once no member lives
//!    on an ordinal it would drop; volumes are deleted only after that.
//! 4. No voter change leaves the old or the new voter set without a healthy majority.
//! 5. Learners are removed first, then followers, the leader last.
//! 6. One action at a time (the caller records it as intent before acting).
//! 7. A removed node id is tombstoned and never added again; a pod whose disk was lost reports a
//!    new id, which joins and replaces the old one.
//!
//! Before a cluster id is recorded, pod 0 is initialized only when no volume kept from an
//! earlier resource of the same name may hold a cluster: pods on such retained volumes that
//! report one cluster id are adopted (their cluster id recorded), never re-initialized.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{NodeId, ReclaimPolicy};

/// Knobs of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// A learner (or voter) within this many entries of the leader's last log index is caught up.
    pub max_lag: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig { max_lag: 64 }
    }
}

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `spec.replicas`; 0 hibernates.
    pub replicas: u32,
    pub paused: bool,
    pub reclaim_policy: ReclaimPolicy,
    /// `spec.bootstrap.fromBackup` is set: pod 0 is restored, never initialized empty.
    pub from_backup: bool,
}

/// The Raft state of one node as its admin status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Leader,
    Follower,
    Candidate,
    Learner,
    Uninitialized,
}

/// What the operator sees of the pod at one ordinal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub ordinal: u32,
    /// The pod's Ready condition.
    pub ready: bool,
    /// The pod runs the StatefulSet's current revision.
    pub up_to_date: bool,
    /// The node's admin status, when it answered.
    pub node: Option<NodeView>,
}

/// One node's answer to `GET /admin/status`, reduced to what planning needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node_id: NodeId,
    pub cluster_id: Option<String>,
    pub state: NodeState,
}

/// The cluster's membership as its leader reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipView {
    pub leader: NodeId,
    /// Voter id → ordinal of the pod it was added for (parsed from its peer URL).
    pub voters: BTreeMap<NodeId, Option<u32>>,
    /// Learner id → ordinal.
    pub learners: BTreeMap<NodeId, Option<u32>>,
    pub last_log_index: u64,
    /// The leader's replication progress per other member.
    pub matched: BTreeMap<NodeId, u64>,
}

impl MembershipView {
    fn contains(&self, id: NodeId) -> bool {
        self.voters.contains_key(&id) || self.learners.contains_key(&id)
    }

    fn holds_ordinal(&self, ordinal: u32) -> bool {
        self.voters.values().chain(self.learners.values()).any(|held| *held == Some(ordinal))
    }

    fn ordinal_of(&self, id: NodeId) -> Option<u32> {
        self.voters.get(&id).or_else(|| self.learners.get(&id)).copied().flatten()
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// `status.clusterId`.
    pub cluster_id: Option<String>,
    /// The StatefulSet's replicas; `None` before it exists.
    pub statefulset_replicas: Option<u32>,
    /// Pods that exist, by ordinal.
    pub pods: BTreeMap<u32, PodView>,
    /// Ordinals that have a volume claim.
    pub volumes: BTreeSet<u32>,
    /// Ordinals whose volume claim was kept from an earlier resource of the same name (labelled
    /// with another uid, or older than this one), so possibly holding its cluster.
    pub retained_volumes: BTreeSet<u32>,
    /// From the leader, when one answered.
    pub membership: Option<MembershipView>,
    /// `status.removedNodeIds`.
    pub removed: BTreeSet<NodeId>,
    /// `status.operation` is a bootstrap that was recorded but may not have completed.
    pub bootstrap_in_progress: bool,
    /// The highest ordinal that status last recorded as holding a member: when no leader
    /// answers, the pods up to it are brought back so a majority can form.
    pub recorded_highest_member_ordinal: Option<u32>,
}

/// Why a removal happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// The member's ordinal is at or above `spec.replicas`.
    ScaleDown,
    /// The member's pod came back with another node id: its disk was lost.
    LostDisk,
    /// The id is already tombstoned (a removal recorded before a restart of the operator).
    Tombstoned,
}

/// Why a volume is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeReason {
    /// The member was removed and its ordinal dropped; the policy is `Delete`.
    ScaledDown,
    /// The ordinal is needed again but its volume holds a removed node id: wipe it so the pod
    /// comes back as a new node.
    RemovedNodeId,
}

/// The one next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the StatefulSet's replicas to this (more pods).
    GrowStatefulSet { replicas: u32 },
    /// Initialize pod 0 as a one-voter cluster.
    Bootstrap,
    /// Record this cluster id, which the pods on retained volumes report (no node changes).
    Adopt { cluster_id: String },
    /// Restore pod 0 from `spec.bootstrap.fromBackup` as a one-voter cluster.
    Restore,
    /// Add these (ordinal, node id) pairs as learners.
    AddLearners { members: Vec<(u32, NodeId)> },
    /// Make exactly this the voter set (adds caught-up learners, drops lost voters they replace).
    PromoteVoters { voters: BTreeSet<NodeId> },
    /// Remove one member from Raft; its id is tombstoned first.
    RemoveMember { node_id: NodeId, reason: RemovalReason },
    /// Set the StatefulSet's replicas to this (fewer pods); every member above is removed.
    ShrinkStatefulSet { replicas: u32 },
    /// Delete the volume claim (and pod, for `RemovedNodeId`) of an ordinal.
    DeleteVolume { ordinal: u32, reason: VolumeReason },
    /// Delete an out-of-date pod so the StatefulSet (`OnDelete`) recreates it.
    RestartPod { ordinal: u32 },
    /// Before restarting the leader's pod: have it hand leadership to another voter, so writes
    /// pause for a round trip instead of an election timeout.
    TransferLeader { from: NodeId },
    /// Nothing can be done safely now.
    Wait { reason: WaitReason },
    /// Converged.
    Nothing,
}

/// Why the planner waits. Each one is shown in status and as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    Paused,
    /// Pod 0 has not answered as an uninitialized node yet.
    PodNotReady {
        ordinal: u32,
    },
    /// Pod 0 belongs to another cluster although no bootstrap was recorded (or pods on
    /// retained volumes report different clusters).
    ForeignCluster {
        ordinal: u32,
    },
    /// No reachable member reports a leader.
    NoLeader,
    /// Learners are catching up.
    LearnersCatchingUp {
        node_ids: Vec<NodeId>,
    },
    /// The change would leave a voter set without a healthy majority.
    WouldLoseQuorum {
        node_ids: Vec<NodeId>,
    },
    /// A pod is not Ready; a restart waits for it.
    PodsNotReady {
        ordinals: Vec<u32>,
    },
}

impl WaitReason {
    /// A CamelCase reason for conditions and Events.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::Paused => "Paused",
            WaitReason::PodNotReady { .. } => "PodNotReady",
            WaitReason::ForeignCluster { .. } => "ForeignCluster",
            WaitReason::NoLeader => "NoLeader",
            WaitReason::LearnersCatchingUp { .. } => "LearnersCatchingUp",
            WaitReason::WouldLoseQuorum { .. } => "WouldLoseQuorum",
            WaitReason::PodsNotReady { .. } => "PodsNotReady",
        }
    }
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitReason::Paused => write!(f, "spec.paused is true"),
            WaitReason::PodNotReady { ordinal } => write!(f, "waiting for pod {ordinal} to answer"),
            WaitReason::ForeignCluster { ordinal } => {
                write!(f, "pod {ordinal} reports a cluster id that was never recorded; it is not merged")
            }
            WaitReason::NoLeader => write!(f, "no reachable member reports a leader"),
            WaitReason::LearnersCatchingUp { node_ids } => write!(f, "learners {node_ids:?} are catching up"),
            WaitReason::WouldLoseQuorum { node_ids } => {
                write!(f, "changing {node_ids:?} now would leave a voter set without a healthy majority")
            }
            WaitReason::PodsNotReady { ordinals } => write!(f, "pods {ordinals:?} are not ready"),
        }
    }
}

/// A majority of `n` voters.
pub fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The next action. See the module doc for the rules it keeps.
pub fn plan(desired: &Desired, observed: &Observed, config: PlannerConfig) -> Action {
    if desired.paused {
        return Action::Wait { reason: WaitReason::Paused };
    }
    let Some(cluster_id) = observed.cluster_id.as_deref() else {
        return plan_bootstrap(desired, observed);
    };
    let facts = Facts::new(observed, cluster_id, config);
    if desired.replicas == 0 {
        return plan_hibernation(observed);
    }
    let Some(membership) = observed.membership.as_ref() else {
        // Without a leader nothing about membership can be decided; pods still come back.
        return grow_to_cover_members(desired, observed, &facts)
            .unwrap_or(Action::Wait { reason: WaitReason::NoLeader });
    };
    if let Some(action) = grow_to_cover_members(desired, observed, &facts) {
        return action;
    }
    let wanted = desired.replicas;

    // Rule 7: tombstoned ids that are still members go first (an interrupted removal).
    for (&id, _) in membership.learners.iter().chain(membership.voters.iter()) {
        if observed.removed.contains(&id) {
            return facts.removal(membership, id, RemovalReason::Tombstoned);
        }
    }

    // Rule 7: a pod within range that reports a removed id must come back as a new node.
    for pod in observed.pods.values().filter(|pod| pod.ordinal < wanted) {
        if let Some(node) = &pod.node {
            if observed.removed.contains(&node.node_id) && !membership.contains(node.node_id) {
                return Action::DeleteVolume { ordinal: pod.ordinal, reason: VolumeReason::RemovedNodeId };
            }
        }
    }

    // Rule 7: a member whose pod answers with another node id lost its disk. It is removed
    // first (the node refuses a second member on the same peer URL); the pod's new id then
    // joins as a learner below. A pod that does not answer proves nothing (rule 1).
    let lost =
        membership.learners.keys().chain(membership.voters.keys()).copied().find(|&id| facts.lost(membership, id));
    if let Some(id) = lost {
        return facts.removal(membership, id, RemovalReason::LostDisk);
    }

    // Rule 2: every pod in range that runs an unknown, uninitialized node joins as a learner.
    let joining: Vec<(u32, NodeId)> = observed
        .pods
        .values()
        .filter(|pod| pod.ordinal < wanted)
        .filter_map(|pod| {
            let node = pod.node.as_ref()?;
            let fresh = node.cluster_id.is_none()
                && node.state == NodeState::Uninitialized
                && !membership.contains(node.node_id)
                && !observed.removed.contains(&node.node_id)
                && !membership.holds_ordinal(pod.ordinal);
            fresh.then_some((pod.ordinal, node.node_id))
        })
        .collect();
    if !joining.is_empty() {
        return Action::AddLearners { members: joining };
    }

    // Rule 2: promote the learners in range in one voter change, once all of them caught up.
    let pending: Vec<NodeId> = membership
        .learners
        .iter()
        .filter(|(_, ordinal)| ordinal.is_some_and(|ordinal| ordinal < wanted))
        .map(|(&id, _)| id)
        .collect();
    if !pending.is_empty() {
        let slow: Vec<NodeId> = pending.iter().copied().filter(|&id| !facts.healthy(membership, id)).collect();
        if !slow.is_empty() {
            return Action::Wait { reason: WaitReason::LearnersCatchingUp { node_ids: slow } };
        }
        let voters: BTreeSet<NodeId> = membership.voters.keys().copied().chain(pending.iter().copied()).collect();
        return facts.voter_change(membership, voters, &pending);
    }

    // Rule 5: scale-down removes learners, then followers (highest ordinal first), the leader last.
    let out_of_range = |ordinal: &Option<u32>| ordinal.is_none_or(|ordinal| ordinal >= wanted);
    if let Some((&id, _)) = membership.learners.iter().find(|(_, ordinal)| out_of_range(ordinal)) {
        return Action::RemoveMember { node_id: id, reason: RemovalReason::ScaleDown };
    }
    let mut leaving: Vec<(Option<u32>, NodeId)> = membership
        .voters
        .iter()
        .filter(|(_, ordinal)| out_of_range(ordinal))
        .map(|(&id, &ordinal)| (ordinal, id))
        .collect();
    leaving.sort_by_key(|&(ordinal, id)| (id == membership.leader, std::cmp::Reverse(ordinal)));
    if let Some(&(_, id)) = leaving.first() {
        return facts.removal(membership, id, RemovalReason::ScaleDown);
    }
    // Rule 3: shrink only once no member lives on a dropped ordinal.
    if let Some(current) = observed.statefulset_replicas {
        if current > wanted {
            return Action::ShrinkStatefulSet { replicas: wanted };
        }
    }
    if desired.reclaim_policy == ReclaimPolicy::Delete {
        let current = observed.statefulset_replicas.unwrap_or(0);
        if let Some(&ordinal) =
            observed.volumes.iter().find(|&&ordinal| ordinal >= current && !observed.pods.contains_key(&ordinal))
        {
            return Action::DeleteVolume { ordinal, reason: VolumeReason::ScaledDown };
        }
    }

    plan_rolling_restart(observed, membership, &facts, wanted)
}

fn plan_bootstrap(desired: &Desired, observed: &Observed) -> Action {
    if desired.replicas == 0 {
        return Action::Nothing;
    }
    if observed.statefulset_replicas.unwrap_or(0) < desired.replicas {
        return Action::GrowStatefulSet { replicas: desired.replicas };
    }
    if let Some(action) = plan_adoption(observed) {
        return action;
    }
    // The first member starts from the backup when one is named; never empty instead.
    let bootstrap = if desired.from_backup { Action::Restore } else { Action::Bootstrap };
    let node = observed.pods.get(&0).and_then(|pod| pod.node.as_ref());
    match node {
        Some(node) if node.cluster_id.is_none() && node.state == NodeState::Uninitialized => bootstrap,
        // The recorded bootstrap reached the node but its answer was lost: finishing it reads the
        // cluster id back from pod 0.
        Some(node) if node.cluster_id.is_some() && observed.bootstrap_in_progress => bootstrap,
        Some(node) if node.cluster_id.is_some() => Action::Wait { reason: WaitReason::ForeignCluster { ordinal: 0 } },
        _ => Action::Wait { reason: WaitReason::PodNotReady { ordinal: 0 } },
    }
}

/// A resource created again over volumes kept from its predecessor: adopt the cluster the pods
/// on them report, and never initialize pod 0 while one of them has not answered yet.
fn plan_adoption(observed: &Observed) -> Option<Action> {
    let running = observed.statefulset_replicas.unwrap_or(0);
    let retained: Vec<&PodView> =
        observed.retained_volumes.iter().filter(|&&o| o < running).filter_map(|o| observed.pods.get(o)).collect();
    let mut reported = retained.iter().filter_map(|pod| Some((pod.ordinal, pod.node.as_ref()?.cluster_id.as_deref()?)));
    if let Some((_, cluster_id)) = reported.next() {
        return Some(match reported.find(|(_, other)| *other != cluster_id) {
            Some((ordinal, _)) => Action::Wait { reason: WaitReason::ForeignCluster { ordinal } },
            None => Action::Adopt { cluster_id: cluster_id.to_string() },
        });
    }
    let silent = observed
        .retained_volumes
        .iter()
        .copied()
        .find(|&ordinal| ordinal < running && observed.pods.get(&ordinal).is_none_or(|pod| pod.node.is_none()));
    silent.map(|ordinal| Action::Wait { reason: WaitReason::PodNotReady { ordinal } })
}

/// Hibernation (`replicas: 0`): stop every pod, keep volumes and membership.
fn plan_hibernation(observed: &Observed) -> Action {
    match observed.statefulset_replicas {
        Some(current) if current > 0 => Action::ShrinkStatefulSet { replicas: 0 },
        _ => Action::Nothing,
    }
}

/// The StatefulSet must run every ordinal that holds a member (and, unless hibernating, every
/// ordinal the spec asks for): membership is changed with the members running, never by
/// letting pods vanish.
fn grow_to_cover_members(desired: &Desired, observed: &Observed, facts: &Facts) -> Option<Action> {
    let current = observed.statefulset_replicas.unwrap_or(0);
    let needed = desired.replicas.max(facts.highest_member_ordinal.map_or(0, |ordinal| ordinal + 1));
    (current < needed).then_some(Action::GrowStatefulSet { replicas: needed })
}

fn plan_rolling_restart(observed: &Observed, membership: &MembershipView, facts: &Facts, wanted: u32) -> Action {
    let outdated: Vec<&PodView> =
        observed.pods.values().filter(|pod| pod.ordinal < wanted && !pod.up_to_date).collect();
    if outdated.is_empty() {
        return Action::Nothing;
    }
    // A pod that is missing (just deleted, being recreated) counts as not ready.
    let not_ready: Vec<u32> =
        (0..wanted).filter(|ordinal| observed.pods.get(ordinal).is_none_or(|pod| !pod.ready)).collect();
    // A pod that is down anyway is replaced first: it costs nothing.
    if let Some(pod) = outdated.iter().find(|pod| !pod.ready) {
        return Action::RestartPod { ordinal: pod.ordinal };
    }
    if !not_ready.is_empty() {
        return Action::Wait { reason: WaitReason::PodsNotReady { ordinals: not_ready } };
    }
    let leader_ordinal = membership.ordinal_of(membership.leader);
    let mut order: Vec<&PodView> = outdated;
    order.sort_by_key(|pod| (Some(pod.ordinal) == leader_ordinal, std::cmp::Reverse(pod.ordinal)));
    let Some(pod) = order.first() else {
        return Action::Nothing;
    };
    // Restarting a voter takes it down for a while: the rest must still be a healthy majority.
    // One and two voter clusters cannot keep a majority through any restart; they restart anyway.
    let voter_here = membership.voters.iter().find(|(_, ordinal)| **ordinal == Some(pod.ordinal)).map(|(&id, _)| id);
    if let Some(id) = voter_here {
        let healthy_after = membership.voters.keys().filter(|&&v| v != id && facts.healthy(membership, v)).count();
        let all_healthy = membership.voters.keys().all(|&v| facts.healthy(membership, v));
        let small = membership.voters.len() < 3;
        if !(healthy_after >= majority(membership.voters.len()) || (small && all_healthy)) {
            return Action::Wait { reason: WaitReason::WouldLoseQuorum { node_ids: vec![id] } };
        }
    }
    let other_voter_healthy = membership.voters.keys().any(|&v| v != membership.leader && facts.healthy(membership, v));
    if Some(pod.ordinal) == leader_ordinal && other_voter_healthy {
        return Action::TransferLeader { from: membership.leader };
    }
    Action::RestartPod { ordinal: pod.ordinal }
}

/// Derived facts about the observation.
struct Facts<'a> {
    observed: &'a Observed,
    cluster_id: &'a str,
    config: PlannerConfig,
    highest_member_ordinal: Option<u32>,
}

impl<'a> Facts<'a> {
    fn new(observed: &'a Observed, cluster_id: &'a str, config: PlannerConfig) -> Facts<'a> {
        let observed_highest = observed.membership.as_ref().and_then(|membership| {
            membership.voters.values().chain(membership.learners.values()).filter_map(|ordinal| *ordinal).max()
        });
        // The recorded ordinals only matter when no leader answers; otherwise they may be stale.
        let highest_member_ordinal = match observed.membership {
            Some(_) => observed_highest,
            None => observed.recorded_highest_member_ordinal,
        };
        Facts { observed, cluster_id, config, highest_member_ordinal }
    }

    /// The member's pod answers as that member, of this cluster.
    fn answers_as(&self, membership: &MembershipView, id: NodeId) -> bool {
        let Some(ordinal) = membership.ordinal_of(id) else {
            return false;
        };
        self.observed
            .pods
            .get(&ordinal)
            .and_then(|pod| pod.node.as_ref())
            .is_some_and(|node| node.node_id == id && node.cluster_id.as_deref() == Some(self.cluster_id))
    }

    fn caught_up(&self, membership: &MembershipView, id: NodeId) -> bool {
        if id == membership.leader {
            return true;
        }
        let matched = membership.matched.get(&id).copied().unwrap_or(0);
        matched + self.config.max_lag >= membership.last_log_index
    }

    /// A voter (or learner) that can take part in a majority now.
    fn healthy(&self, membership: &MembershipView, id: NodeId) -> bool {
        let state_ok = self
            .observed
            .pods
            .get(&membership.ordinal_of(id).unwrap_or(u32::MAX))
            .and_then(|pod| pod.node.as_ref())
            .is_some_and(|node| node.state != NodeState::Candidate && node.state != NodeState::Uninitialized);
        self.answers_as(membership, id) && state_ok && self.caught_up(membership, id)
    }

    /// The member's pod answers with another node id: its data directory was lost.
    fn lost(&self, membership: &MembershipView, id: NodeId) -> bool {
        let Some(ordinal) = membership.ordinal_of(id) else {
            return false;
        };
        self.observed.pods.get(&ordinal).and_then(|pod| pod.node.as_ref()).is_some_and(|node| node.node_id != id)
    }

    fn healthy_count(&self, membership: &MembershipView, voters: &BTreeSet<NodeId>) -> usize {
        voters.iter().filter(|&&id| self.healthy(membership, id)).count()
    }

    /// Rule 4, for a change from the current voters to `voters`: joint consensus needs a healthy
    /// majority of both.
    fn keeps_quorum(&self, membership: &MembershipView, voters: &BTreeSet<NodeId>) -> bool {
        let current: BTreeSet<NodeId> = membership.voters.keys().copied().collect();
        !voters.is_empty()
            && self.healthy_count(membership, &current) >= majority(current.len())
            && self.healthy_count(membership, voters) >= majority(voters.len())
    }

    fn voter_change(&self, membership: &MembershipView, voters: BTreeSet<NodeId>, changing: &[NodeId]) -> Action {
        if self.keeps_quorum(membership, &voters) {
            Action::PromoteVoters { voters }
        } else {
            Action::Wait { reason: WaitReason::WouldLoseQuorum { node_ids: changing.to_vec() } }
        }
    }

    fn removal(&self, membership: &MembershipView, id: NodeId, reason: RemovalReason) -> Action {
        if membership.learners.contains_key(&id) {
            return Action::RemoveMember { node_id: id, reason };
        }
        let remaining: BTreeSet<NodeId> = membership.voters.keys().copied().filter(|&v| v != id).collect();
        if self.keeps_quorum(membership, &remaining) {
            Action::RemoveMember { node_id: id, reason }
        } else {
            Action::Wait { reason: WaitReason::WouldLoseQuorum { node_ids: vec![id] } }
        }
    }
}

#[cfg(test)]
mod tests;
