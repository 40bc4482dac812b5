//! The quorum-loss decision, table-driven: what each pod answers in, refuse/recover/finish out.

use std::collections::BTreeMap;

use conflux::wire::ClusterStatus;

use crate::{
    crd::{ConfluxCluster, ConfluxClusterStatus, NodeId, Operation, OperationKind},
    node_settings::NodeSettings,
    recovery::{decide, leader_lease_ms, Decision, Refusal, Survivor, DEFAULT_ELECTION_TIMEOUT_MAX_MS},
};

const OLD: &str = "c-old";
/// How long a leader counts as leading after its last quorum acknowledgement.
const LEASE: u64 = 2000;

/// Status of a cluster whose voters 1, 2, 3 sit at ordinals 0, 1, 2.
fn status() -> ConfluxClusterStatus {
    ConfluxClusterStatus { cluster_id: Some(OLD.into()), voters: vec![1, 2, 3], ..ConfluxClusterStatus::default() }
}

fn answer(node_id: NodeId, state: &str, applied_index: u64, cluster_id: &str) -> ClusterStatus {
    ClusterStatus {
        node_id,
        cluster_id: Some(cluster_id.into()),
        state: state.into(),
        term: 3,
        leader_id: None,
        voters: BTreeMap::new(),
        learners: BTreeMap::new(),
        last_log_index: applied_index,
        committed_index: applied_index,
        applied_index,
        matched_index: None,
        quorum_acked_ms_ago: None,
    }
}

fn check(status: &ConfluxClusterStatus, answers: &[(u32, Option<ClusterStatus>)], expected: Decision) {
    let pods: Vec<(u32, Option<&ClusterStatus>)> = answers.iter().map(|(o, a)| (*o, a.as_ref())).collect();
    assert_eq!(decide(OLD, status, &pods, LEASE), expected);
}

#[test]
fn refused_while_a_majority_of_voters_answers() {
    let answers = [(0, Some(answer(1, "Candidate", 50, OLD))), (1, Some(answer(2, "Follower", 40, OLD))), (2, None)];
    check(&status(), &answers, Decision::Refuse(Refusal::MajorityReachable { reachable: 2, voters: 3 }));
}

#[test]
fn refused_while_a_leader_answers() {
    let answers = [(0, Some(answer(1, "Leader", 50, OLD))), (1, None), (2, None)];
    check(&status(), &answers, Decision::Refuse(Refusal::LeaderAnswers { node_id: 1 }));
    let acked = |ago| ClusterStatus { quorum_acked_ms_ago: Some(ago), ..answer(1, "Leader", 50, OLD) };
    for ago in [0, LEASE] {
        let answers = [(0, Some(acked(ago))), (1, None), (2, None)];
        check(&status(), &answers, Decision::Refuse(Refusal::LeaderAnswers { node_id: 1 }));
    }
}

#[test]
fn a_leader_no_quorum_acknowledged_for_longer_than_an_election_timeout_is_the_survivor() {
    // Raft leaders do not step down by themselves: the survivor of a lost majority may be the
    // old leader, still answering as `Leader`, its last quorum acknowledgement growing older.
    let stale = ClusterStatus { quorum_acked_ms_ago: Some(LEASE + 1), ..answer(1, "Leader", 90, OLD) };
    let answers = [(0, Some(stale.clone())), (1, None), (2, None)];
    check(
        &status(),
        &answers,
        Decision::Recover { survivor: Survivor { ordinal: 0, node_id: 1 }, tombstone: vec![2, 3] },
    );
    // Still no recovery while a majority answers.
    let answers = [(0, Some(stale)), (1, Some(answer(2, "Follower", 90, OLD))), (2, None)];
    check(&status(), &answers, Decision::Refuse(Refusal::MajorityReachable { reachable: 2, voters: 3 }));
}

#[test]
fn the_lease_is_the_clusters_election_timeout() {
    let mut cluster = ConfluxCluster::new("cfx", Default::default());
    assert_eq!(leader_lease_ms(&cluster), DEFAULT_ELECTION_TIMEOUT_MAX_MS);
    cluster.spec.node = Some(NodeSettings { election_timeout_max_ms: Some(9000), ..NodeSettings::default() });
    assert_eq!(leader_lease_ms(&cluster), 9000);
}

#[test]
fn refused_when_the_annotation_names_another_cluster() {
    let pods: Vec<(u32, Option<&ClusterStatus>)> = vec![(0, None)];
    assert_eq!(
        decide("c-typo", &status(), &pods, LEASE),
        Decision::Refuse(Refusal::WrongClusterId { named: "c-typo".into(), actual: OLD.into() })
    );
}

#[test]
fn refused_when_no_voter_answers_or_none_is_known() {
    check(&status(), &[(0, None), (1, None), (2, None)], Decision::Refuse(Refusal::NoSurvivor));
    let empty = ConfluxClusterStatus { voters: vec![], ..status() };
    check(&empty, &[(0, None)], Decision::Refuse(Refusal::NoKnownVoters));
    let new = ConfluxClusterStatus::default();
    check(&new, &[(0, None)], Decision::Refuse(Refusal::NotInitialized));
}

#[test]
fn pods_of_another_cluster_or_unknown_ids_do_not_count_as_survivors() {
    let answers =
        [(0, Some(answer(9, "Follower", 90, OLD))), (1, Some(answer(2, "Follower", 90, "c-other"))), (2, None)];
    check(&status(), &answers, Decision::Refuse(Refusal::NoSurvivor));
}

#[test]
fn accepted_when_the_majority_is_lost_and_the_highest_applied_index_survives() {
    let five = ConfluxClusterStatus { voters: vec![1, 2, 3, 4, 5], learners: vec![6], ..status() };
    let answers = [
        (0, Some(answer(1, "Candidate", 70, OLD))),
        (1, None),
        (2, None),
        (3, Some(answer(4, "Follower", 90, OLD))),
        (4, None),
    ];
    check(
        &five,
        &answers,
        Decision::Recover { survivor: Survivor { ordinal: 3, node_id: 4 }, tombstone: vec![1, 2, 3, 5, 6] },
    );
}

#[test]
fn a_tie_on_the_applied_index_goes_to_the_lowest_ordinal() {
    let five = ConfluxClusterStatus { voters: vec![1, 2, 3, 4, 5], ..status() };
    let answers = [(1, Some(answer(2, "Candidate", 90, OLD))), (3, Some(answer(4, "Candidate", 90, OLD)))];
    check(
        &five,
        &answers,
        Decision::Recover { survivor: Survivor { ordinal: 1, node_id: 2 }, tombstone: vec![1, 3, 4, 5] },
    );
}

fn recorded(survivor: Survivor) -> ConfluxClusterStatus {
    ConfluxClusterStatus {
        operation: Some(Operation {
            kind: OperationKind::Recover,
            node_ids: vec![survivor.node_id],
            ordinals: vec![i32::try_from(survivor.ordinal).expect("small")],
            replicas: None,
            started_at: "2026-01-01T00:00:00Z".into(),
        }),
        ..status()
    }
}

#[test]
fn a_recorded_recovery_is_finished_with_the_cluster_id_the_survivor_reports() {
    let survivor = Survivor { ordinal: 2, node_id: 3 };
    let answers = [(0, None), (1, None), (2, Some(answer(3, "Leader", 90, "c-new")))];
    check(&recorded(survivor), &answers, Decision::Finish { survivor, cluster_id: "c-new".into() });
}

#[test]
fn a_recorded_recovery_that_never_reached_the_node_is_retried_with_the_same_survivor() {
    let survivor = Survivor { ordinal: 2, node_id: 3 };
    // Pod 0 came back with a higher index meanwhile: the recorded choice still stands.
    let answers = [(0, Some(answer(1, "Candidate", 99, OLD))), (1, None), (2, Some(answer(3, "Candidate", 90, OLD)))];
    check(&recorded(survivor), &answers, Decision::Recover { survivor, tombstone: vec![1, 2] });
    check(
        &recorded(survivor),
        &[(0, None), (1, None), (2, None)],
        Decision::Refuse(Refusal::SurvivorSilent { ordinal: 2 }),
    );
}
