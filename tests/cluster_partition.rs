//! A partition isolates the leader: the minority side can neither commit a write nor serve a
//! linearizable read, the majority elects a leader and goes on, and after healing every node
//! converges to the same state.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use conflux::client::PutOptions;
use harness::{eventually, NodeOptions, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_write_or_read_while_the_majority_goes_on() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let old_leader = cluster.leader().await;
    let old_client = cluster.nodes[old_leader].client();
    old_client.put(["p", "a", "e", "before"], b"1".to_vec(), PutOptions::default()).await.unwrap();

    cluster.partition(&[old_leader]);
    let majority: Vec<usize> = (0..3).filter(|i| *i != old_leader).collect();
    let new_leader_id = eventually("the majority elects a new leader", Duration::from_secs(30), || async {
        let status = cluster.status(majority[0]).await?;
        status.leader_id.filter(|id| *id != cluster.nodes[old_leader].node_id && status.state != "Candidate")
    })
    .await;
    let majority_client = cluster.nodes[majority[0]].client();
    let written = eventually("the majority accepts writes", Duration::from_secs(30), || async {
        majority_client.put(["p", "a", "e", "during"], b"majority".to_vec(), PutOptions::default()).await.ok()
    })
    .await;
    assert!(written.version >= 1);

    let refused = old_client.put(["p", "a", "e", "minority"], b"lost".to_vec(), PutOptions::default()).await;
    let err = refused.expect_err("the isolated node must not acknowledge a write");
    assert!(
        matches!(err.code(), Some("timeout" | "quorum_unavailable" | "no_leader" | "leader_unreachable")),
        "unexpected refusal: {err}"
    );
    let read = old_client.get(["p", "a", "e", "during"], false).await;
    assert!(read.is_err(), "the isolated node must not serve a linearizable read: {read:?}");
    // A serializable read is allowed to be stale, and is: the isolated node never saw "during".
    assert_eq!(old_client.get(["p", "a", "e", "during"], true).await.unwrap(), None);

    cluster.heal();
    let leader = cluster.leader().await;
    assert_eq!(cluster.nodes[leader].node_id, new_leader_id, "the old leader must not win back a newer term's log");
    let last = cluster.status(leader).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let mut states = Vec::new();
    for node in &cluster.nodes {
        let listing = node.client().list("p", "a", "e").await.unwrap();
        states.push(listing.configs.into_iter().map(|c| (c.name, c.version)).collect::<Vec<_>>());
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]), "nodes diverged after healing: {states:?}");
    let names: Vec<&str> = states[0].iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"before") && names.contains(&"during"));
}
