//! The leader is killed with SIGKILL in the middle of a stream of writes: a new leader is elected,
//! writes resume, no acknowledged write is lost, and the old leader rejoins and catches up. A
//! restarted follower says it is ready only once the leader's replication reaches it again.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use conflux::client::PutOptions;
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

/// A follower down for seconds is retried by the leader with a growing backoff, so after it
/// restarts the leader's replication reaches it only some time later. Until then it must not say
/// it is ready: a rolling restart (a StatefulSet, or `benches/rolling_restart.rs`) that stopped
/// the next member on that word would leave the leader without a quorum meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_is_ready_only_once_the_leaders_replication_reaches_it() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let follower_id = cluster.nodes[follower].node_id;
    cluster.kill(follower);
    let client = cluster.nodes[leader].client();
    for i in 0..20 {
        client.put(["r", "a", "e", &format!("k{i}")], b"v".to_vec(), PutOptions::default()).await.unwrap();
    }
    let written = cluster.status(leader).await.unwrap().last_log_index;
    // The leader's retries back off 100, 200, 400, 800, 1600 ms: down for 2 s, the follower
    // restarts most of a second before the next one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(follower).await;

    let readyz = format!("{}/readyz", cluster.nodes[follower].client_url());
    let http = reqwest::Client::new();
    let mut refusals = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let response = http.get(&readyz).send().await.unwrap();
        if response.status().is_success() {
            break;
        }
        refusals.push(response.text().await.unwrap());
        assert!(std::time::Instant::now() < deadline, "never ready: {refusals:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Ready means replicated to: the follower catches up within a few round trips, far sooner
    // than the leader's next retry would have come (over a second, after 3 s of backoff).
    let ready = std::time::Instant::now();
    loop {
        let matched = cluster.status(leader).await.unwrap().matched_index.unwrap()[&follower_id];
        if matched >= written {
            break;
        }
        let waited = ready.elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "ready, yet {waited:?} later only {matched} of {written} replicated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
