//! Membership changes under load: a learner is added and promoted, and a voter removed, while
//! clients keep writing; nothing acknowledged is lost and unsafe changes are refused.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{NodeOptions, TestCluster, WriteLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_promoted_and_a_voter_removed_while_writes_run() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let load = WriteLoad::start(urls, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let newcomer = cluster.add_node().await;
    cluster.add_learner(newcomer).await;
    let mut voters: Vec<u64> = cluster.nodes.iter().map(|n| n.node_id).collect();
    cluster.nodes[0].admin().set_voters(voters.clone()).await.expect("promote the caught-up learner");
    assert_eq!(cluster.wait_converged_membership().await.len(), 4);

    let leader = cluster.leader().await;
    let removed = (0..3).find(|i| *i != leader).unwrap();
    let removed_id = cluster.nodes[removed].node_id;
    let membership = cluster.nodes[newcomer].admin().remove_member(removed_id).await.expect("remove a follower");
    assert!(!membership.voters.contains_key(&removed_id));
    cluster.kill(removed);
    voters.retain(|id| *id != removed_id);
    assert_eq!(cluster.wait_converged_membership().await, voters.iter().copied().collect());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, _) = load.stop().await;
    assert!(acked.len() > 50, "too little progress: {}", acked.len());
    cluster.assert_has_all(&acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_would_lose_a_healthy_majority_are_refused() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.kill(followers[0]);
    let admin = cluster.nodes[leader].admin();
    // Removing the live follower would leave {leader, dead follower}: one healthy of two.
    let err = admin.remove_member(cluster.nodes[followers[1]].node_id).await.expect_err("must refuse");
    assert_eq!(err.code(), Some("invalid_membership"), "{err}");
    // A voter set of the leader and the dead node has no healthy majority either.
    let err = admin
        .set_voters(vec![cluster.nodes[leader].node_id, cluster.nodes[followers[0]].node_id])
        .await
        .expect_err("must refuse");
    assert_eq!(err.code(), Some("invalid_membership"));
    // Removing the dead node is safe: {leader, live follower} are both healthy.
    admin.remove_member(cluster.nodes[followers[0]].node_id).await.expect("removing the dead voter is safe");
    let err = admin.remove_member(424242).await.expect_err("unknown member");
    assert_eq!(err.code(), Some("unknown_member"));
}
