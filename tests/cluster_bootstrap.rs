//! Clusters of real `conflux serve` processes form through the admin API, and a write made on any
//! node is readable on every node.

#[path = "support/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{eventually, NodeOptions, TestCluster};

async fn write_on_each_node_read_on_all(cluster: &TestCluster) {
    for (i, node) in cluster.nodes.iter().enumerate() {
        let name = format!("from-node-{i}");
        let written = node
            .client()
            .put(
                ["acme", "shop", "prod", &name],
                format!("{{\"node\": {i}}}").into_bytes(),
                conflux::client::PutOptions { format: Some("json"), if_match: None },
            )
            .await
            .expect("write through any node");
        assert_eq!(written.version, 1);
        for (j, reader) in cluster.nodes.iter().enumerate() {
            let linearizable = reader.client().get(["acme", "shop", "prod", &name], false).await.unwrap();
            let fetched = linearizable.unwrap_or_else(|| panic!("node {j} misses the write made on node {i}"));
            assert_eq!(fetched.content, format!("{{\"node\": {i}}}").into_bytes());
            assert_eq!(fetched.content_type, "application/json");
            // The serializable read sees it once the node has applied it.
            eventually("serializable read catches up", Duration::from_secs(10), || async {
                reader.client().get(["acme", "shop", "prod", &name], true).await.ok().flatten()
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_and_replicate_writes_from_any_node() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let voters = cluster.wait_converged_membership().await;
    assert_eq!(voters.len(), 3);
    let status = cluster.status(0).await.unwrap();
    let cluster_id = status.cluster_id.clone().expect("initialized node has a cluster id");
    for i in 0..3 {
        assert_eq!(cluster.status(i).await.unwrap().cluster_id.as_deref(), Some(cluster_id.as_str()));
    }
    write_on_each_node_read_on_all(&cluster).await;

    // A second init, anywhere, is refused: never a second cluster.
    for node in &cluster.nodes {
        let err = node.admin().init().await.expect_err("init on a member must fail");
        assert_eq!(err.code(), Some("already_initialized"));
    }
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.state, "Leader");
    let matched = status.matched_index.expect("the leader reports followers' progress");
    assert_eq!(matched.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_a_cluster_and_replicate_writes_from_any_node() {
    let cluster = TestCluster::start(5, NodeOptions::default()).await;
    assert_eq!(cluster.wait_converged_membership().await.len(), 5);
    write_on_each_node_read_on_all(&cluster).await;
}
