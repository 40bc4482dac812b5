//! Quorum-loss recovery through the real reconcile: refused while a majority answers or when the
//! annotation names another cluster; accepted when the majority is gone, from the member with the
//! highest applied index; intent first; the lost members come back as new nodes.

use kube::{
    api::{Patch, PatchParams},
    ResourceExt,
};
use serde_json::json;

use super::{condition, Harness, NAME};
use crate::{
    crd::{ConfluxCluster, OperationKind},
    recovery::ANNOTATION,
};

impl Harness {
    async fn annotate_recovery(&self, cluster_id: &str) {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION: cluster_id } } });
        self.api::<ConfluxCluster>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// Pods at these ordinals stop answering (their machines are gone).
    fn silence(&self, ordinals: &[u32]) {
        let mut raft = self.nodes.raft();
        for &ordinal in ordinals {
            raft.silent.insert(self.names.peer_url(ordinal));
        }
    }

    fn node_at(&self, ordinal: u32) -> u64 {
        self.disks[&ordinal]
    }
}

#[tokio::test]
async fn recovery_is_refused_while_a_majority_answers_and_the_annotation_is_removed() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.annotate_recovery("c1").await;
    harness.reconcile_once().await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "QuorumLossRecovery"), ("False".into(), "LeaderAnswers".into()));
    assert!(!cluster.annotations().contains_key(ANNOTATION), "a refused request must be made again");

    // The leader's machine is gone, the two others can still elect one.
    let leader = harness.nodes.raft().leader.expect("leader");
    let leader_ordinal = *harness.disks.iter().find(|(_, id)| **id == leader).expect("leader disk").0;
    harness.silence(&[leader_ordinal]);
    harness.nodes.raft().leader = None;
    harness.annotate_recovery("c1").await;
    harness.reconcile_once().await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "QuorumLossRecovery"), ("False".into(), "MajorityReachable".into()));
    assert!(harness.nodes.raft().recovers.is_empty());
    assert_eq!(cluster.status.expect("status").cluster_id.as_deref(), Some("c1"));
}

#[tokio::test]
async fn recovery_naming_another_cluster_id_is_refused() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.silence(&[0, 1]);
    harness.nodes.raft().leader = None;
    harness.annotate_recovery("c-typo").await;
    harness.reconcile_once().await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "QuorumLossRecovery"), ("False".into(), "WrongClusterId".into()));
    assert!(harness.nodes.raft().recovers.is_empty());
}

#[tokio::test]
async fn a_lost_majority_is_rebuilt_from_the_survivor_and_the_lost_members_return_as_new_nodes() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    let old_ids: Vec<u64> = (0..3).map(|o| harness.node_at(o)).collect();
    harness.silence(&[0, 1]);
    harness.nodes.raft().leader = None;
    harness.annotate_recovery("c1").await;
    harness.reconcile_once().await;

    let survivor = harness.node_at(2);
    {
        let raft = harness.nodes.raft();
        assert_eq!(raft.recovers, [(harness.names.peer_url(2), "c1".to_string())]);
        let (_, kind, removed) = raft.intents_seen.iter().find(|(call, ..)| call == "recover").expect("recover");
        assert_eq!(*kind, Some(OperationKind::Recover), "intent recorded before the call");
        assert_eq!(*removed, [old_ids[0], old_ids[1]], "the lost members are tombstoned first");
    }
    let cluster = harness.cluster().await;
    assert!(!cluster.annotations().contains_key(ANNOTATION));
    assert_eq!(condition(&cluster, "QuorumLossRecovery"), ("True".into(), "Recovered".into()));
    let status = cluster.status.expect("status");
    assert_eq!(status.cluster_id.as_deref(), Some("c9"));
    assert_eq!(status.voters, [survivor]);
    assert_eq!(status.operation, None);

    // The machines come back on their old volumes: their ids never rejoin; fresh volumes do.
    harness.nodes.raft().silent.clear();
    harness.settle(12).await;
    let voters: Vec<u64> = harness.nodes.raft().voters.keys().copied().collect();
    assert_eq!(voters.len(), 3, "{voters:?}");
    assert!(voters.contains(&survivor));
    assert!(!voters.contains(&old_ids[0]) && !voters.contains(&old_ids[1]));
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.cluster_id.as_deref(), Some("c9"));
    assert_eq!(status.members.iter().filter(|m| m.healthy).count(), 3);
}

#[tokio::test]
async fn the_survivor_is_the_reachable_voter_with_the_highest_applied_index() {
    let mut harness = Harness::new(5).await;
    harness.settle(10).await;
    assert_eq!(harness.voters(), 5);
    harness.silence(&[0, 2, 4]);
    harness.nodes.raft().leader = None;
    let (at1, at3) = (harness.node_at(1), harness.node_at(3));
    harness.nodes.raft().applied.extend([(at1, 50), (at3, 80)]);
    harness.annotate_recovery("c1").await;
    harness.reconcile_once().await;
    assert_eq!(harness.nodes.raft().recovers, [(harness.names.peer_url(3), "c1".to_string())]);
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.voters, [at3]);
    let mut removed = status.removed_node_ids.clone();
    removed.sort();
    let mut expected: Vec<u64> = [0, 1, 2, 4].iter().map(|&o| harness.node_at(o)).collect();
    expected.sort();
    assert_eq!(removed, expected, "every other member, reachable or not, is tombstoned");
}

/// The operator judged the quorum lost, but the survivor still reaches it and refuses: the intent
/// and its tombstones recorded before the call are withdrawn, the annotation is removed, and the
/// members keep their ids.
#[tokio::test]
async fn a_recovery_the_survivor_refuses_withdraws_its_intent_and_tombstones() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    harness.silence(&[0, 1]);
    harness.nodes.raft().leader = None;
    harness.nodes.raft().recover_refusal = Some("quorum_available");
    let before = harness.cluster().await.status.expect("status");
    harness.annotate_recovery("c1").await;
    harness.reconcile_once().await;

    assert_eq!(harness.nodes.raft().recovers.len(), 1, "the survivor was asked");
    let cluster = harness.cluster().await;
    assert!(!cluster.annotations().contains_key(ANNOTATION), "a refused request must be made again");
    assert_eq!(condition(&cluster, "QuorumLossRecovery"), ("False".into(), "NodeRefused".into()));
    let status = cluster.status.expect("status");
    assert_eq!(status.operation, None, "the intent is withdrawn");
    assert_eq!(status.removed_node_ids, before.removed_node_ids, "no member was tombstoned");
    assert_eq!(status.cluster_id.as_deref(), Some("c1"));
}
