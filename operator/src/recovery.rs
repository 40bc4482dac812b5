//! Quorum-loss recovery, only ever human-triggered: the annotation
//! `conflux.io/recover-from-quorum-loss: "<status.clusterId>"` asks the operator to rebuild the
//! cluster from the reachable member with the highest applied index. [`decide`] is the pure
//! decision (refuse, recover, or finish a recovery recorded before a restart); the reconciler
//! methods here carry it out, intent first.

use std::collections::BTreeSet;

use conflux::wire;
use kube::{
    api::{Api, Patch, PatchParams},
    runtime::{controller::Action as Requeue, events::EventType},
};
use serde_json::json;

use crate::{
    controller::{set_condition, Reconciler, SeenPod},
    crd::{condition as condition_type, ConfluxCluster, ConfluxClusterStatus, NodeId, Operation, OperationKind},
    plan::majority,
    Error, Result,
};

/// The annotation that asks for a recovery; its value must be the current `status.clusterId`.
pub const ANNOTATION: &str = "conflux.io/recover-from-quorum-loss";

/// The cluster id a human confirmed, when the annotation is set.
pub fn requested(cluster: &ConfluxCluster) -> Option<&str> {
    cluster.metadata.annotations.as_ref()?.get(ANNOTATION).map(String::as_str)
}

/// The member that carries the cluster on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survivor {
    pub ordinal: u32,
    pub node_id: NodeId,
}

/// What to do about the annotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    /// Make `survivor` the single voter of a new cluster; every other member id is tombstoned.
    Recover {
        survivor: Survivor,
        tombstone: Vec<NodeId>,
    },
    /// A recorded recovery already happened (its answer was lost): adopt the new cluster id.
    Finish {
        survivor: Survivor,
        cluster_id: String,
    },
}

/// Why a recovery is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The cluster was never initialized: nothing to recover.
    NotInitialized,
    /// The annotation names another cluster id than `status.clusterId`.
    WrongClusterId { named: String, actual: String },
    /// Status records no voters.
    NoKnownVoters,
    /// A member answers as the leader that a quorum acknowledged lately (or that cannot say
    /// when): the cluster has a quorum.
    LeaderAnswers { node_id: NodeId },
    /// Enough voters answer to elect a leader: wait for it instead.
    MajorityReachable { reachable: usize, voters: usize },
    /// No voter answers: only a restore from a backup can help.
    NoSurvivor,
    /// The survivor a recorded recovery chose does not answer now.
    SurvivorSilent { ordinal: u32 },
    /// The survivor itself refused (`409 quorum_available` or `cluster_id_mismatch`): it knows
    /// better than the statuses the operator read. The recorded intent is withdrawn.
    NodeRefused { node_id: NodeId, detail: String },
}

/// The problem codes with which a node refuses `/admin/recover` for good (anything else, such as
/// a timeout, may have been applied and is retried from the recorded intent).
const NODE_REFUSALS: [&str; 2] = ["quorum_available", "cluster_id_mismatch"];

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotInitialized => "NotInitialized",
            Refusal::WrongClusterId { .. } => "WrongClusterId",
            Refusal::NoKnownVoters => "NoKnownVoters",
            Refusal::LeaderAnswers { .. } => "LeaderAnswers",
            Refusal::MajorityReachable { .. } => "MajorityReachable",
            Refusal::NoSurvivor => "NoSurvivor",
            Refusal::SurvivorSilent { .. } => "SurvivorSilent",
            Refusal::NodeRefused { .. } => "NodeRefused",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotInitialized => write!(f, "the cluster was never initialized"),
            Refusal::WrongClusterId { named, actual } => {
                write!(f, "the annotation names cluster {named:?} but this cluster is {actual:?}")
            }
            Refusal::NoKnownVoters => write!(f, "status records no voters"),
            Refusal::LeaderAnswers { node_id } => {
                write!(f, "node {node_id} answers as a leader a quorum acknowledged lately: the quorum is there")
            }
            Refusal::MajorityReachable { reachable, voters } => write!(
                f,
                "{reachable} of {voters} voters answer, a majority: they can elect a leader, a recovery would drop writes"
            ),
            Refusal::NoSurvivor => write!(f, "no voter answers; restore from a backup instead"),
            Refusal::SurvivorSilent { ordinal } => {
                write!(f, "pod {ordinal}, chosen by the recorded recovery, does not answer")
            }
            Refusal::NodeRefused { node_id, detail } => write!(f, "node {node_id} refused to recover: {detail}"),
        }
    }
}

/// The node's default `--election-timeout-max-ms` (`spec.node.electionTimeoutMaxMs` unset).
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 2000;

/// How long since its last quorum acknowledgement a leader still counts as leading: the upper
/// bound of the election timeout, after which its followers, were they alive, would have elected
/// another leader. A Raft leader cut off from its quorum keeps answering as `Leader`.
pub fn leader_lease_ms(cluster: &ConfluxCluster) -> u64 {
    cluster.spec.node.as_ref().and_then(|node| node.election_timeout_max_ms).unwrap_or(DEFAULT_ELECTION_TIMEOUT_MAX_MS)
}

/// The decision for an annotation confirming cluster id `confirmed`, given status and what each
/// pod (by ordinal) answered to `GET /admin/status`.
///
/// Checks, in order: the cluster is initialized; `confirmed` equals `status.clusterId`; status
/// knows the voters; no pod answers as a leader of this cluster that a quorum acknowledged within
/// `leader_lease_ms` (a leader that does not say when counts as leading); fewer than a majority
/// of the known voters answer (as themselves, of this cluster); at least one does. The survivor is the
/// answering voter with the highest `applied_index` (the lowest ordinal on a tie); every other
/// known member id is tombstoned. A recovery recorded in `status.operation` is finished or
/// retried with its recorded survivor instead.
pub fn decide(
    confirmed: &str,
    status: &ConfluxClusterStatus,
    pods: &[(u32, Option<&wire::ClusterStatus>)],
    leader_lease_ms: u64,
) -> Decision {
    let Some(cluster_id) = status.cluster_id.as_deref() else {
        return Decision::Refuse(Refusal::NotInitialized);
    };
    let answer = |ordinal: u32| pods.iter().find(|(o, _)| *o == ordinal).and_then(|(_, answer)| *answer);
    let members: BTreeSet<NodeId> = status.voters.iter().chain(status.learners.iter()).copied().collect();
    let tombstone = |survivor: NodeId| members.iter().copied().filter(|&id| id != survivor).collect::<Vec<_>>();

    if let Some(operation) = status.operation.as_ref().filter(|op| op.kind == OperationKind::Recover) {
        if let (Some(&ordinal), Some(&node_id)) = (operation.ordinals.first(), operation.node_ids.first()) {
            let survivor = Survivor { ordinal: u32::try_from(ordinal).unwrap_or(u32::MAX), node_id };
            return match answer(survivor.ordinal).filter(|answer| answer.node_id == node_id) {
                None => Decision::Refuse(Refusal::SurvivorSilent { ordinal: survivor.ordinal }),
                Some(answer) => match answer.cluster_id.as_deref() {
                    Some(new) if new != cluster_id => Decision::Finish { survivor, cluster_id: new.to_string() },
                    _ => Decision::Recover { survivor, tombstone: tombstone(node_id) },
                },
            };
        }
    }
    if confirmed != cluster_id {
        return Decision::Refuse(Refusal::WrongClusterId { named: confirmed.into(), actual: cluster_id.into() });
    }
    if status.voters.is_empty() {
        return Decision::Refuse(Refusal::NoKnownVoters);
    }
    let ours: Vec<(u32, &wire::ClusterStatus)> = pods
        .iter()
        .filter_map(|(ordinal, answer)| Some((*ordinal, (*answer)?)))
        .filter(|(_, answer)| answer.cluster_id.as_deref() == Some(cluster_id))
        .collect();
    let leading = |answer: &wire::ClusterStatus| {
        answer.state == "Leader" && answer.quorum_acked_ms_ago.is_none_or(|ago| ago <= leader_lease_ms)
    };
    if let Some((_, leader)) = ours.iter().find(|(_, answer)| leading(answer)) {
        return Decision::Refuse(Refusal::LeaderAnswers { node_id: leader.node_id });
    }
    let reachable: Vec<(u32, &wire::ClusterStatus)> =
        ours.into_iter().filter(|(_, answer)| status.voters.contains(&answer.node_id)).collect();
    if reachable.len() >= majority(status.voters.len()) {
        return Decision::Refuse(Refusal::MajorityReachable {
            reachable: reachable.len(),
            voters: status.voters.len(),
        });
    }
    let best = reachable
        .iter()
        .max_by_key(|(ordinal, answer)| (answer.applied_index, std::cmp::Reverse(*ordinal)))
        .map(|(ordinal, answer)| Survivor { ordinal: *ordinal, node_id: answer.node_id });
    match best {
        Some(survivor) => Decision::Recover { survivor, tombstone: tombstone(survivor.node_id) },
        None => Decision::Refuse(Refusal::NoSurvivor),
    }
}

impl Reconciler<'_> {
    /// Carries out the annotation's decision. The intent (survivor, tombstones) is written to
    /// status before the node is asked; the annotation is removed once the recovery is recorded
    /// or refused, so an old annotation can never trigger a later recovery.
    pub(crate) async fn recover_from_quorum_loss(
        &self,
        confirmed: &str,
        status: &ConfluxClusterStatus,
        seen: &[SeenPod],
        token: &str,
    ) -> Result<Requeue> {
        let pods: Vec<(u32, Option<&wire::ClusterStatus>)> =
            seen.iter().map(|pod| (pod.ordinal, pod.status.as_ref())).collect();
        let mut next = status.clone();
        let lease = leader_lease_ms(self.cluster);
        let (survivor, cluster_id) = match decide(confirmed, status, &pods, lease) {
            Decision::Refuse(refusal) => return self.refuse_recovery(status, refusal).await,
            Decision::Finish { survivor, cluster_id } => (survivor, cluster_id),
            Decision::Recover { survivor, tombstone } => {
                let old = status.cluster_id.clone().ok_or(Error::NoClusterId)?;
                next.operation = Some(Operation {
                    kind: OperationKind::Recover,
                    node_ids: vec![survivor.node_id],
                    ordinals: vec![i32::try_from(survivor.ordinal).unwrap_or(i32::MAX)],
                    replicas: None,
                    started_at: self.context.now().to_string(),
                });
                for id in tombstone {
                    if !next.removed_node_ids.contains(&id) {
                        next.removed_node_ids.push(id);
                    }
                }
                self.write_status(&next).await?;
                let endpoint = self.context.nodes.endpoint(&self.names, survivor.ordinal);
                let answer = self.context.nodes.recover(&endpoint, token, &old).await;
                self.context.metrics.membership_change("Recover", answer.is_ok());
                match answer {
                    Ok(rebuilt) => (survivor, rebuilt.cluster_id),
                    // Refused for good: withdraw the intent (and its tombstones) recorded above.
                    Err(source) if source.code().is_some_and(|code| NODE_REFUSALS.contains(&code)) => {
                        let refusal = Refusal::NodeRefused { node_id: survivor.node_id, detail: source.to_string() };
                        return self.refuse_recovery(status, refusal).await;
                    }
                    Err(source) => {
                        let error = Error::Node { endpoint, source: Box::new(source) };
                        self.event(EventType::Warning, "QuorumLossRecoveryFailed", error.to_string()).await;
                        return Err(error);
                    }
                }
            }
        };
        let message = format!(
            "pod {} (node {}) is the single voter of new cluster {cluster_id}; tombstoned {:?}",
            self.names.pod(survivor.ordinal),
            survivor.node_id,
            next.removed_node_ids
        );
        next.cluster_id = Some(cluster_id);
        next.voters = vec![survivor.node_id];
        next.learners = Vec::new();
        next.leader = None;
        next.leader_node_id = None;
        next.operation = None;
        set_condition(&mut next, condition_type::QUORUM_LOSS_RECOVERY, true, "Recovered", &message);
        self.write_status(&next).await?;
        self.remove_recovery_annotation().await?;
        self.event(EventType::Normal, "QuorumLossRecovered", message).await;
        Ok(Requeue::requeue(std::time::Duration::from_secs(2)))
    }

    /// Records why on `status` (as it was before any intent), removes the annotation so that only
    /// a new request retries, and tells with a Warning event.
    async fn refuse_recovery(&self, status: &ConfluxClusterStatus, refusal: Refusal) -> Result<Requeue> {
        let mut next = status.clone();
        set_condition(&mut next, condition_type::QUORUM_LOSS_RECOVERY, false, refusal.code(), &refusal.to_string());
        self.write_status(&next).await?;
        self.remove_recovery_annotation().await?;
        self.event(EventType::Warning, "QuorumLossRecoveryRefused", refusal.to_string()).await;
        Ok(Requeue::requeue(std::time::Duration::from_secs(5)))
    }

    async fn remove_recovery_annotation(&self) -> Result<()> {
        let api: Api<ConfluxCluster> = self.api();
        let patch = json!({ "metadata": { "annotations": { ANNOTATION: null } } });
        api.patch(&self.names.cluster, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
