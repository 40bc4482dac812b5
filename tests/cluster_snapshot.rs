//! A follower that was down while the leader compacted its log catches up by snapshot, and a
//! snapshot of more than 50 MB is transferred to a new learner.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use conflux::client::PutOptions;
use harness::{eventually, NodeOptions, TestCluster};

fn compacting(every: &str) -> NodeOptions {
    NodeOptions {
        extra_args: ["--snapshot-logs", every, "--keep-logs", "5", "--max-body-bytes", "2097152"]
            .map(String::from)
            .to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(3, compacting("40")).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let client = cluster.nodes[leader].client();
    for i in 0..300 {
        client
            .put(["t", "a", "e", &format!("k{i}")], format!("v{i}").into_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    // openraft 0.10 purges only what no replication has in flight: the down follower's retry holds
    // its range until the retry fails (after a backoff of up to 2 s), then the purge goes through.
    let leader_node = &cluster.nodes[leader];
    eventually("the leader purges its log past the follower", Duration::from_secs(20), || async {
        (leader_node.metric("conflux_raft_purged_index", &[]).await > 50.0).then_some(())
    })
    .await;

    cluster.restart(follower).await;
    let last = cluster.status(leader).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let installed = cluster.nodes[follower].metric("conflux_snapshots_installed_total", &[]).await;
    assert!(installed >= 1.0, "catch-up must use a snapshot");
    let follower_client = cluster.nodes[follower].client();
    for i in (0..300).step_by(13) {
        let got = follower_client.get(["t", "a", "e", &format!("k{i}")], true).await.unwrap().unwrap();
        assert_eq!(got.content, format!("v{i}").into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_over_50_megabytes_reaches_a_new_learner() {
    let mut cluster = TestCluster::start(1, compacting("20")).await;
    let client = cluster.nodes[0].client();
    let big = vec![b'x'; 1024 * 1024];
    for i in 0..62 {
        let mut content = big.clone();
        content[0] = b'a' + (i % 26) as u8;
        client.put(["t", "a", "e", &format!("big{i}")], content, PutOptions::default()).await.unwrap();
    }
    let node = &cluster.nodes[0];
    // openraft checks the snapshot policy when it applies an entry and skips the check while a
    // build is running; on a slow machine the build at entry 40 can still be running when entry
    // 60 is applied. Each probe writes one small entry so the policy is checked again.
    let mut nudges = 0;
    eventually("a snapshot over 50 MB is built", Duration::from_secs(90), || {
        nudges += 1;
        let client = client.clone();
        async move {
            client.put(["t", "a", "e", "nudge"], format!("{nudges}").into_bytes(), PutOptions::default()).await.ok()?;
            (node.metric("conflux_snapshot_size_bytes", &[]).await > 50.0 * 1024.0 * 1024.0).then_some(())
        }
    })
    .await;
    let learner = cluster.add_node().await;
    cluster.add_learner(learner).await;
    assert!(cluster.nodes[learner].metric("conflux_snapshots_installed_total", &[]).await >= 1.0);
    // Caught up means replicated; the learner applies what follows the snapshot once it hears
    // the commit index, so wait for that before reading its local state.
    let last = cluster.status(0).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let got = cluster.nodes[learner].client().get(["t", "a", "e", "big61"], true).await.unwrap().unwrap();
    assert_eq!(got.content.len(), 1024 * 1024);
    assert_eq!(got.content[0], b'a' + 61 % 26);
}
