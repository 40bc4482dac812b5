//! The leader is killed with SIGKILL in the middle of a stream of writes: a new leader is elected,
//! writes resume, no acknowledged write is lost, and the old leader rejoins and catches up.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{NodeOptions, TestCluster, WriteLoad};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let old_leader = cluster.leader().await;
    let old_leader_id = cluster.nodes[old_leader].node_id;
    let urls = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let load = WriteLoad::start(urls, 8);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(old_leader);
    let new_leader = cluster.leader().await;
    assert_ne!(cluster.nodes[new_leader].node_id, old_leader_id, "a new leader must be elected");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (acked, _failed) = load.stop().await;
    assert!(acked.len() > 100, "the load made too little progress to prove anything: {}", acked.len());
    cluster.assert_has_all(&acked).await;

    cluster.restart(old_leader).await;
    let leader_status = cluster.status(new_leader).await.unwrap();
    cluster.wait_applied(leader_status.last_log_index).await;
    cluster.assert_has_all(&acked).await;
}
