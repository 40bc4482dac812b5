//! Leader transfer on a real 3-node cluster: through the admin API (forwarded by a follower) and
//! the CLI, to a named voter or the most caught-up one, under writes; refused for a learner or an
//! unknown node; and done by a leader stopped with SIGTERM before it exits. No acknowledged write
//! is lost on the way.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use conflux::client::ClientError;
use harness::{conflux_bin, NodeOptions, TestCluster, WriteLoad, ADMIN_TOKEN};

/// The harness's `--election-timeout-min-ms`.
const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(800);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_named_voter_under_writes_and_nothing_acknowledged_is_lost() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let (follower, target) = match leader {
        0 => (1, 2),
        1 => (2, 0),
        _ => (0, 1),
    };
    let (leader_id, target_id) = (cluster.nodes[leader].node_id, cluster.nodes[target].node_id);
    let term = cluster.status(leader).await.unwrap().term;
    let load = WriteLoad::start(cluster.nodes.iter().map(|n| n.client_url()).collect(), 8);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Asked of a follower, which forwards it to the leader.
    let asked = Instant::now();
    let moved = cluster.nodes[follower].admin().transfer_leader(Some(target_id)).await.unwrap();
    assert_eq!((moved.from, moved.to), (leader_id, target_id));
    // A transfer the target ignored (its log behind the leader's, as it can be under writes) would end
    // in an election, after at least the harness's election timeout of 800 ms.
    assert!(asked.elapsed() < ELECTION_TIMEOUT_MIN, "the transfer took {:?}", asked.elapsed());
    assert!(moved.term > term, "the new leader campaigned in a new term: {moved:?}");
    let status = cluster.status(target).await.unwrap();
    assert_eq!(status.leader_id, Some(target_id));
    assert_eq!(status.state, "Leader");

    // Without a name: the most caught-up other voter; it is not the one that leads now.
    let asked = Instant::now();
    let again = cluster.nodes[target].admin().transfer_leader(None).await.unwrap();
    assert_eq!(again.from, target_id);
    assert_ne!(again.to, target_id);
    assert!(asked.elapsed() < ELECTION_TIMEOUT_MIN, "the second transfer took {:?}", asked.elapsed());

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, _failed) = load.stop().await;
    assert!(acked.len() > 100, "the load made too little progress to prove anything: {}", acked.len());
    cluster.assert_has_all(&acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_to_a_learner_or_an_unknown_node_are_refused_and_change_nothing() {
    let mut cluster = TestCluster::start(2, NodeOptions::default()).await;
    let learner = cluster.add_node().await;
    cluster.add_learner(learner).await;
    let leader = cluster.leader().await;
    let leader_id = cluster.nodes[leader].node_id;
    let admin = cluster.nodes[leader].admin();

    let refused = admin.transfer_leader(Some(cluster.nodes[learner].node_id)).await.unwrap_err();
    assert!(
        matches!(&refused, ClientError::Problem(p) if p.status == 422 && p.code == "invalid_membership" && p.detail.contains("learner")),
        "{refused:?}"
    );
    let unknown = admin.transfer_leader(Some(424_242)).await.unwrap_err();
    assert!(
        matches!(&unknown, ClientError::Problem(p) if p.status == 404 && p.code == "unknown_member"),
        "{unknown:?}"
    );
    assert_eq!(cluster.status(leader).await.unwrap().leader_id, Some(leader_id), "still the same leader");

    // The CLI: to the leader itself is a no-op that says so.
    let output = std::process::Command::new(conflux_bin())
        .args(["cluster", "--endpoint", &format!("http://{}", cluster.nodes[leader].peer_addr)])
        .args(["transfer-leader", &leader_id.to_string()])
        .env("CONFLUX_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((answer["from"].as_u64(), answer["to"].as_u64()), (Some(leader_id), Some(leader_id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_hands_leadership_over_and_a_leader_stopped_with_sigterm_hands_it_over_first() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let leader_id = cluster.nodes[leader].node_id;
    let output = std::process::Command::new(conflux_bin())
        .args(["cluster", "--endpoint", &format!("http://{}", cluster.nodes[leader].peer_addr), "transfer-leader"])
        .env("CONFLUX_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["from"].as_u64(), Some(leader_id));
    let leader = cluster.leader().await;
    assert_ne!(cluster.nodes[leader].node_id, leader_id, "the CLI moved leadership");

    let load = WriteLoad::start(cluster.nodes.iter().map(|n| n.client_url()).collect(), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping_id = cluster.nodes[leader].node_id;
    cluster.terminate(leader);
    let log = cluster.log_tail(leader, 200);
    assert!(log.contains("handed leadership over before shutting down"), "{log}");
    let next = cluster.leader().await;
    assert_ne!(cluster.nodes[next].node_id, stopping_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, _failed) = load.stop().await;
    cluster.assert_has_all(&acked).await;
}
