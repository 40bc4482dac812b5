//! Review findings on one in-process node, over real HTTP: what peers send is checked as what
//! clients send is (forwarded commands, forwarded membership changes, snapshot chunks), and a node
//! without a cluster takes one only from the leader that adds it.

#[path = "support/node.rs"]
mod support;

use std::time::Duration;

use conflux::command::{Change, Command, CommandResponse, Origin};
use conflux::model::hierarchy::QuotaUpdate;
use conflux::model::{ConfigKey, Format, Namespace};
use conflux::node::NodeHandle;
use conflux::service::membership::{MembershipChange, MembershipOutcome};
use conflux::types::typ;
use reqwest::StatusCode;
use support::{node, node_with, Node};

/// POSTs a bincode body to a peer route of `n` as a member of `cluster` would.
async fn peer_call(n: &Node, path: &str, cluster: &str, body: Vec<u8>) -> reqwest::Response {
    peer_call_to(&n.handle, &n.cluster_token, path, cluster, body).await
}

async fn peer_call_to(node: &NodeHandle, token: &str, path: &str, cluster: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}{path}", node.peer_addr))
        .bearer_auth(token)
        .header("x-conflux-target-node", node.service.node_id().to_string())
        .header("x-conflux-cluster-id", cluster)
        .header("content-type", "application/octet-stream")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
}

fn cluster_of(n: &Node) -> String {
    n.handle.service.peers.identity().cluster_id().expect("an initialized node has a cluster id")
}

fn command(change: Change) -> Command {
    Command { origin: Origin::new("peer", "r1"), change }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_commands_are_validated_like_client_requests_and_bad_ones_write_nothing() {
    let n = node().await;
    let cluster = cluster_of(&n);
    let key =
        |tenant: &str| ConfigKey { tenant: tenant.into(), app: "shop".into(), env: "prod".into(), name: "db".into() };
    let version = |key: ConfigKey, format: Format, content: Vec<u8>| Change::WriteVersion {
        key,
        format,
        content,
        message: String::new(),
        expected_version: None,
        checked_schema: None,
        format_from_config: false,
    };
    let bad = [
        Change::PutTenant { tenant: "../etc".into(), description: None, quotas: QuotaUpdate::default() },
        Change::PutTenant {
            tenant: "acme".into(),
            description: None,
            quotas: QuotaUpdate { max_config_bytes: Some(0), ..QuotaUpdate::default() },
        },
        Change::PutEnv {
            namespace: Namespace { tenant: "acme".into(), app: "".into(), env: "prod".into() },
            description: None,
        },
        version(key("a/b"), Format::Text, b"x".to_vec()),
        version(key("acme"), Format::Json, b"{\"unclosed\": ".to_vec()),
        version(key("acme"), Format::Json, format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes()),
        version(key("acme"), Format::Text, vec![b'x'; 1024 * 1024 + 1]),
        Change::SetSchema { key: key("acme"), schema: Some(b"{\"type\": 7}".to_vec()), checksum: Some("c".into()) },
    ];
    for change in bad {
        let body = bincode::serialize(&command(change.clone())).unwrap();
        let response = peer_call(&n, "/raft/write", &cluster, body).await;
        assert_eq!(response.status(), StatusCode::OK);
        let reply: Result<CommandResponse, conflux::service::Error> =
            bincode::deserialize(&response.bytes().await.unwrap()).unwrap();
        assert!(matches!(&reply, Err(conflux::service::Error::InvalidCommand(_))), "{change:?}: {reply:?}");
    }
    let tenants: serde_json::Value =
        n.http.get(n.client_url("/api/v1/tenants")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tenants["items"], serde_json::json!([]), "a refused command writes nothing");

    // The same route takes a valid command.
    let good = command(version(key("acme"), Format::Json, b"{\"pool\": 5}".to_vec()));
    let response = peer_call(&n, "/raft/write", &cluster, bincode::serialize(&good).unwrap()).await;
    let reply: Result<CommandResponse, conflux::service::Error> =
        bincode::deserialize(&response.bytes().await.unwrap()).unwrap();
    assert!(matches!(reply, Ok(CommandResponse::Written { version: 1, .. })), "{reply:?}");
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_add_learner_wait_is_bounded_again_on_the_leader() {
    let n = node().await;
    let cluster = cluster_of(&n);
    let change =
        MembershipChange::AddLearner { node_id: 77, peer_url: "http://127.0.0.1:9".into(), wait_millis: u64::MAX };
    let started = std::time::Instant::now();
    let response = peer_call(&n, "/raft/admin", &cluster, bincode::serialize(&change).unwrap()).await;
    let reply: Result<MembershipOutcome, conflux::service::Error> =
        bincode::deserialize(&response.bytes().await.unwrap()).unwrap();
    match reply {
        Err(conflux::service::Error::InvalidMembership(detail)) => assert!(detail.contains("600 s"), "{detail}"),
        other => panic!("expected a refusal of the wait, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = n.handle.service.status();
    assert!(status.learners.is_empty(), "nothing was added");
    n.shutdown().await;
}

fn chunk(id: &str, offset: u64, data: Vec<u8>) -> Vec<u8> {
    let request = typ::InstallSnapshotRequest {
        // A newer term than the node's, from another node, so the chunk reaches the receiver.
        vote: typ::Vote::new_committed(1_000_000, 99),
        meta: openraft_legacy::network_v1::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: id.to_string(),
        },
        offset,
        data,
        done: false,
    };
    bincode::serialize(&request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_with_gaps_or_past_the_size_limit_are_refused_and_the_node_keeps_serving() {
    let n = node_with(|c| c.max_snapshot_bytes = 4 * 1024 * 1024).await;
    let cluster = cluster_of(&n);
    let first = peer_call(&n, "/raft/snapshot", &cluster, chunk("evil", 0, vec![1; 1024])).await;
    assert_eq!(first.status(), StatusCode::OK, "{:?}", first.text().await);
    for (offset, size) in [(1u64 << 40, 16), (4096, 16), (1024, 4 * 1024 * 1024)] {
        let refused = peer_call(&n, "/raft/snapshot", &cluster, chunk("evil", offset, vec![2; size])).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "offset {offset}");
    }
    let unknown = peer_call(&n, "/raft/snapshot", &cluster, chunk("other", 1 << 40, vec![3; 16])).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let next = peer_call(&n, "/raft/snapshot", &cluster, chunk("evil", 1024, vec![4; 1024])).await;
    assert_eq!(next.status(), StatusCode::OK, "the contiguous next chunk is taken");

    let put = n.http.put(n.client_url("/api/v1/configs/acme/shop/prod/after")).body("v").send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK, "the node still serves");
    assert_eq!(n.http.get(n.client_url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_not_captured_by_a_stray_cluster_and_still_joins_the_leader_adding_it() {
    let leader = node().await;
    let token_dir = tempfile::TempDir::new().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, &leader.cluster_token).unwrap();
    let admin_token_file = token_dir.path().join("admin-token");
    std::fs::write(&admin_token_file, &leader.token).unwrap();
    // Started here, not through `support`: a --join node has its token from a file.
    let fresh_dir = tempfile::TempDir::new().unwrap();
    let mut config = conflux::config::NodeConfig::with_data_dir(fresh_dir.path().to_path_buf());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.peer_listen = "127.0.0.1:0".parse().unwrap();
    config.join = true;
    config.cluster_token_file = Some(token_file.clone());
    config.admin_token_file = Some(admin_token_file);
    let handle = conflux::node::start_node(config).await.expect("the joining node starts");
    let fresh_dir = fresh_dir; // kept until the node is shut down
    let fresh = handle;
    let fresh_identity = || fresh.service.peers.identity().cluster_id();
    assert_eq!(fresh_identity(), None);

    // A stray cluster holding the same token pings and votes: refused, and nothing adopted.
    for path in ["/raft/ping", "/raft/vote", "/raft/append"] {
        let response = peer_call_to(&fresh, &leader.cluster_token, path, "a-stray-cluster", vec![]).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
        assert_eq!(fresh_identity(), None, "{path} must not capture the node");
    }

    // The real leader adds it: the node joins the leader's cluster and catches up.
    let add = leader
        .http
        .post(leader.peer_url("/admin/learners"))
        .bearer_auth(&leader.token)
        .query(&[("wait", "20")])
        .json(&serde_json::json!({
            "node_id": fresh.service.node_id(),
            "peer_url": format!("http://{}", fresh.peer_addr),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(add.status(), StatusCode::OK, "{:?}", add.text().await);
    assert_eq!(fresh_identity(), Some(cluster_of(&leader)));

    // Now a member, it refuses the stray cluster's join as well.
    let join = bincode::serialize(&conflux::service::membership::JoinCluster { cluster_id: "a-stray-cluster".into() });
    let response = peer_call_to(&fresh, &leader.cluster_token, "/raft/join", "a-stray-cluster", join.unwrap()).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(fresh_identity(), Some(cluster_of(&leader)));
    fresh.shutdown().await;
    drop(fresh_dir);
    leader.shutdown().await;
}
