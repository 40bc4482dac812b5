//! The client and admin APIs of one in-process node: the happy path, every documented error
//! status and `code`, and a barrage of malformed requests that must never produce a 5xx.

#[path = "support/node.rs"]
mod support;

use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use support::{node, Node};

/// Asserts a problem+json answer with this status and code.
async fn expect_problem(response: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "for expected code {code}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(!body["detail"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_are_versioned_conditional_and_never_reuse_a_version() {
    let n = node().await;
    let url = n.client_url("/api/v1/configs/acme/shop/prod/db");
    let put = n.http.put(&url).header("content-type", "application/json").body(r#"{"pool": 5}"#).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let written: serde_json::Value = put.json().await.unwrap();
    assert_eq!(written["version"], 1);
    let revision = written["revision"].as_u64().unwrap();
    assert!(revision > 0);

    let got = n.http.get(&url).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["etag"], "\"1\"");
    assert_eq!(got.headers()["x-conflux-version"], "1");
    assert_eq!(got.headers()["x-conflux-revision"], revision.to_string().as_str());
    assert_eq!(got.headers()["content-type"], "application/json");
    assert_eq!(got.text().await.unwrap(), r#"{"pool": 5}"#);

    let second = n.http.put(&url).header("if-match", "\"1\"").body("pool=6").query(&[("format", "properties")]);
    let second: serde_json::Value = second.send().await.unwrap().json().await.unwrap();
    assert_eq!(second["version"], 2);
    let stale = n.http.put(&url).header("if-match", "\"1\"").body("x").send().await.unwrap();
    expect_problem(stale, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    // A weak tag never matches, even one naming the current version (RFC 9110: strong comparison).
    let weak = n.http.put(&url).header("if-match", "W/\"2\"").body("x").send().await.unwrap();
    assert_eq!(weak.status(), StatusCode::PRECONDITION_FAILED);
    let problem: serde_json::Value = weak.json().await.unwrap();
    assert_eq!(problem["code"], "version_mismatch");
    assert!(problem["detail"].as_str().unwrap().contains("weak tag"), "{problem}");

    let listing: serde_json::Value =
        n.http.get(n.client_url("/api/v1/configs/acme/shop/prod")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listing["configs"][0]["name"], "db");
    assert_eq!(listing["configs"][0]["version"], 2);
    assert_eq!(listing["configs"][0]["format"], "properties");

    let deleted = n.http.delete(&url).header("if-match", "\"2\"").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    expect_problem(n.http.get(&url).send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    let serializable = n.http.get(&url).query(&[("consistency", "serializable")]).send().await.unwrap();
    expect_problem(serializable, StatusCode::NOT_FOUND, "not_found").await;
    let again: serde_json::Value = n.http.put(&url).body("back").send().await.unwrap().json().await.unwrap();
    assert_eq!(again["version"], 3, "a deleted config's version numbers are never reused");
    n.handle.shutdown().await;
}

/// Sum and count of a Prometheus histogram on the node's `/metrics`.
async fn histogram(n: &Node, name: &str) -> (f64, f64) {
    let text = n.http.get(n.client_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |suffix: &str| {
        let prefix = format!("{name}_{suffix} ");
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0.0, |v| v.parse().unwrap())
    };
    (value("sum"), value("count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_batched_yet_each_sees_the_ones_before_it() {
    let n = node().await;
    let url = n.client_url("/api/v1/configs/acme/shop/prod/race");
    assert_eq!(n.http.put(&url).body("v1").send().await.unwrap().status(), StatusCode::OK);
    let (sum_before, count_before) = histogram(&n, "conflux_write_batch_commands").await;

    // 64 writers all expect version 1: exactly one may win, however they are batched.
    let conditional = (0..64).map(|i| {
        let request = n.http.put(&url).header("if-match", "\"1\"").body(format!("c{i}"));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(conditional).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::PRECONDITION_FAILED).count(), 63);

    // 64 unconditional writers each get their own version: 3..=66, none shared, none skipped.
    let unconditional = (0..64).map(|i| {
        let request = n.http.put(&url).body(format!("u{i}"));
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap()["version"].as_u64() }
    });
    let mut versions: Vec<u64> =
        futures::future::join_all(unconditional).await.into_iter().map(Option::unwrap).collect();
    versions.sort();
    assert_eq!(versions, (3..=66).collect::<Vec<u64>>());

    let (sum_after, count_after) = histogram(&n, "conflux_write_batch_commands").await;
    assert_eq!(sum_after - sum_before, 128.0, "every write was proposed once");
    assert!(count_after - count_before < 128.0, "some Raft entry carried several writes");
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_has_its_status_and_code() {
    let n = node().await;
    let cfg = |name: &str| n.client_url(&format!("/api/v1/configs/acme/shop/prod/{name}"));
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            n.http.put(n.client_url("/api/v1/configs/acme/sh%20op/prod/x")).body("v"),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (n.http.put(cfg(".hidden")).body("v"), StatusCode::BAD_REQUEST, "invalid_name"),
        (n.http.put(cfg(&"n".repeat(129))).body("v"), StatusCode::BAD_REQUEST, "invalid_name"),
        (n.http.put(cfg("x")).query(&[("format", "xml")]).body("v"), StatusCode::BAD_REQUEST, "unknown_format"),
        (
            n.http.put(cfg("x")).header("content-type", "application/json").body("{\"a\":"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_content",
        ),
        (n.http.put(cfg("x")).body(vec![0xff, 0xfe, 0x00]), StatusCode::UNPROCESSABLE_ENTITY, "invalid_content"),
        (
            n.http.put(cfg("x")).header("content-type", "application/octet-stream").body("v"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (n.http.put(cfg("x")).body(vec![b'a'; 1024 * 1024 + 1]), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (
            n.http.put(cfg("x")).header("if-match", "\"7\"").body("v"),
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
        ),
        (n.http.put(cfg("x")).header("if-match", "soon").body("v"), StatusCode::BAD_REQUEST, "invalid_if_match"),
        (
            n.http.put(cfg("x")).header("content-type", "application/json").body(format!(
                "{}{}",
                "[".repeat(65),
                "]".repeat(65)
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_content",
        ),
        (n.http.get(cfg("absent")), StatusCode::NOT_FOUND, "not_found"),
        (n.http.delete(cfg("absent")), StatusCode::NOT_FOUND, "not_found"),
        (n.http.get(cfg("x")).query(&[("consistency", "eventual")]), StatusCode::BAD_REQUEST, "invalid_consistency"),
        (n.http.get(n.client_url("/nope")), StatusCode::NOT_FOUND, "no_route"),
        (n.http.post(cfg("x")), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
    ];
    for (request, status, code) in cases {
        expect_problem(request.send().await.unwrap(), status, code).await;
    }
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_and_peer_error_has_its_status_and_code() {
    let n = node().await;
    let id = n.handle.service.node_id();
    let admin = |method: Method, path: &str| n.http.request(method, n.peer_url(path)).bearer_auth(&n.token);
    let plain = reqwest::Client::new();
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (plain.get(n.peer_url("/admin/status")), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            plain.get(n.peer_url("/admin/status")).bearer_auth(&n.cluster_token),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            n.http.get(n.peer_url("/admin/status")).bearer_auth("wrong-token-wrong-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (admin(Method::POST, "/admin/init"), StatusCode::CONFLICT, "already_initialized"),
        (
            admin(Method::PUT, "/admin/voters").json(&serde_json::json!({"voters": []})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_membership",
        ),
        (
            admin(Method::PUT, "/admin/voters").json(&serde_json::json!({"voters": [12345]})),
            StatusCode::NOT_FOUND,
            "unknown_member",
        ),
        (
            admin(Method::PUT, "/admin/voters").body("nope").header("content-type", "application/json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (admin(Method::DELETE, "/admin/members/12345"), StatusCode::NOT_FOUND, "unknown_member"),
        (
            admin(Method::DELETE, &format!("/admin/members/{id}")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_membership",
        ),
        (admin(Method::DELETE, "/admin/members/abc"), StatusCode::BAD_REQUEST, "invalid_path"),
        (
            admin(Method::POST, "/admin/learners")
                .query(&[("wait", "-1")])
                .json(&serde_json::json!({"node_id": 5, "peer_url": "http://127.0.0.1:1"})),
            StatusCode::BAD_REQUEST,
            "invalid_wait",
        ),
        (
            admin(Method::POST, "/admin/learners")
                .query(&[("wait", "1e20")])
                .json(&serde_json::json!({"node_id": 5, "peer_url": "http://127.0.0.1:1"})),
            StatusCode::BAD_REQUEST,
            "invalid_wait",
        ),
        (
            admin(Method::POST, "/admin/learners").json(&serde_json::json!({"node_id": 5, "peer_url": "ftp://x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_membership",
        ),
        (admin(Method::GET, "/admin/unknown"), StatusCode::NOT_FOUND, "no_route"),
        (
            admin(Method::GET, "/admin/backup").query(&[("linearizable", "yes")]),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (admin(Method::POST, "/admin/restore").body("not a backup"), StatusCode::CONFLICT, "already_initialized"),
        (
            admin(Method::POST, "/admin/recover").json(&serde_json::json!({"cluster_id": "another"})),
            StatusCode::CONFLICT,
            "cluster_id_mismatch",
        ),
        (admin(Method::POST, "/admin/recover").body("{}"), StatusCode::BAD_REQUEST, "invalid_json"),
    ];
    for (request, status, code) in cases {
        expect_problem(request.send().await.unwrap(), status, code).await;
    }
    let status: serde_json::Value = admin(Method::GET, "/admin/status").send().await.unwrap().json().await.unwrap();
    assert_eq!(status["node_id"], id);
    assert_eq!(status["state"], "Leader");
    let cluster_id = status["cluster_id"].as_str().unwrap().to_string();
    // A single voter is its own quorum: nothing to recover from.
    let recover = admin(Method::POST, "/admin/recover").json(&serde_json::json!({ "cluster_id": cluster_id }));
    expect_problem(recover.send().await.unwrap(), StatusCode::CONFLICT, "quorum_available").await;

    // Raft RPCs: token, then target node, then cluster id are checked before the body is read.
    let raft = |target: String, cluster: &str| {
        plain
            .post(n.peer_url("/raft/vote"))
            .bearer_auth(&n.cluster_token)
            .header("x-conflux-target-node", target)
            .header("x-conflux-cluster-id", cluster)
            .body(vec![1, 2, 3])
    };
    let no_token = plain.post(n.peer_url("/raft/vote")).body(vec![1]).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let admin_token = plain.post(n.peer_url("/raft/vote")).bearer_auth(&n.token).body(vec![1]).send().await.unwrap();
    assert_eq!(admin_token.status(), StatusCode::UNAUTHORIZED, "an admin token does not make a peer");
    assert_eq!(raft((id + 1).to_string(), &cluster_id).send().await.unwrap().status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(raft(id.to_string(), "another-cluster").send().await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(raft(id.to_string(), &cluster_id).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    n.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_cause_a_server_error() {
    let n = node().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let segments = ["acme", "", "..", "%00", "%ff", "a%2Fb", "x".repeat(300).leak(), "名字", "-", "_", "a.b"];
    let methods = [Method::GET, Method::PUT, Method::DELETE, Method::POST, Method::PATCH];
    let headers = [
        ("content-type", "application/json"),
        ("if-match", "\"x\""),
        ("if-match", "W/\"2\""),
        ("content-type", "text/yaml"),
    ];
    for _ in 0..400 {
        let depth = rng.gen_range(0..7);
        let path: Vec<&str> = (0..depth).map(|_| segments[rng.gen_range(0..segments.len())]).collect();
        let prefix = if rng.gen_bool(0.8) { "/api/v1/configs/" } else { "/admin/" };
        let url = if prefix == "/admin/" {
            n.peer_url(&format!("{prefix}{}", path.join("/")))
        } else {
            n.client_url(&format!("{prefix}{}", path.join("/")))
        };
        let body: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
        let (name, value) = headers[rng.gen_range(0..headers.len())];
        let mut request =
            n.http.request(methods[rng.gen_range(0..methods.len())].clone(), &url).header(name, value).body(body);
        if rng.gen_bool(0.5) {
            request = request.bearer_auth(&n.token);
        }
        let response = request.send().await.unwrap();
        assert!(!response.status().is_server_error(), "{url} answered {}", response.status());
    }
    let health = n.http.get(n.client_url("/readyz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    n.handle.shutdown().await;
}
