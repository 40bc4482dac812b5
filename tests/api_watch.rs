//! Watch through the HTTP API of one in-process node: the long-poll answers at once when what the
//! client holds is stale, parks otherwise and is woken by the write, the gray flip or the delete
//! that changes what it resolves (and by nothing else); whole-env watches see new configs; the
//! stream sends the same as events and resumes from `Last-Event-ID`; bad requests and the watcher
//! quota get clear 4xx; a node shutting down tells its watchers; `…/clients` lists who holds what.

#[path = "support/node.rs"]
mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use support::{node, node_with, Node};

impl Node {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.client_url(path))
    }

    async fn put(&self, name: &str, content: &str) -> u64 {
        let response = self
            .request(Method::PUT, &format!("/api/v1/configs/acme/shop/prod/{name}"))
            .header("content-type", "application/json")
            .body(content.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["version"].as_u64().unwrap()
    }

    /// Writes a new version and publishes it to everyone (a write alone publishes only the first).
    async fn publish(&self, name: &str, content: &str) -> u64 {
        let version = self.put(name, content).await;
        let path = format!("/api/v1/configs/acme/shop/prod/{name}/release");
        let current = self.request(Method::GET, &path).send().await.unwrap();
        let etag = current.headers()["etag"].to_str().unwrap().to_string();
        let response = self
            .request(Method::POST, &format!("{path}/publish"))
            .header("if-match", etag)
            .json(&json!({ "version": version }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
        version
    }

    async fn watch(&self, body: Value) -> (StatusCode, Value) {
        let response = self.request(Method::POST, "/api/v1/watch").json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn watch_ok(&self, body: Value) -> Value {
        let (status, answer) = self.watch(body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    async fn refused(&self, body: Value, status: StatusCode, code: &str) -> Value {
        let (got, problem) = self.watch(body).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{problem}");
        problem
    }

    async fn release(&self, name: &str, rules: Value) {
        let path = format!("/api/v1/configs/acme/shop/prod/{name}/release");
        let current = self.request(Method::GET, &path).send().await.unwrap();
        let etag = current.headers()["etag"].to_str().unwrap().to_string();
        let response = self
            .request(Method::PUT, &path)
            .header("if-match", etag)
            .json(&json!({ "rules": rules }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.request(Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn watch_body(configs: &[&str], known: Value) -> Value {
    json!({ "tenant": "acme", "app": "shop", "env": "prod", "configs": configs, "known": known })
}

fn held(answer: &Value) -> Value {
    let change = &answer["changes"][0];
    json!({ "version": change["version"], "checksum": change["checksum"] })
}

#[tokio::test]
async fn a_stale_client_is_answered_at_once_and_a_current_one_when_the_write_lands() {
    let node = node().await;
    node.put("db", r#"{"pool": 1}"#).await;

    let first = node.watch_ok(watch_body(&["db"], json!({}))).await;
    assert_eq!(first["changes"][0]["version"], 1);
    assert_eq!(first["changes"][0]["content"], r#"{"pool": 1}"#);
    assert_eq!(first["changes"][0]["format"], "json");
    assert!(first["revision"].as_u64().unwrap() > 0);

    let mut body = watch_body(&["db"], json!({ "db": held(&first) }));
    body["since_revision"] = first["revision"].clone();
    let parked = tokio::spawn({
        let http = node.http.clone();
        let url = node.client_url("/api/v1/watch");
        let body = body.clone();
        async move {
            let answer: Value = http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            (answer, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!parked.is_finished(), "a client holding the current version must be parked");
    assert_eq!(node.metric("conflux_watchers").await, 1.0);
    node.publish("db", r#"{"pool": 2}"#).await;
    let written = Instant::now();
    let (answer, answered) = parked.await.unwrap();
    assert_eq!(answer["changes"][0]["version"], 2, "{answer}");
    assert!(answer["revision"].as_u64() > first["revision"].as_u64());
    assert!(answered.duration_since(written) < Duration::from_millis(500), "woken late");

    // Nothing changes: the timeout answers with no changes and the current revision.
    let mut quiet = watch_body(&["db"], json!({ "db": held(&answer) }));
    quiet["timeout_ms"] = json!(1000);
    let started = Instant::now();
    let timed_out = node.watch_ok(quiet).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert_eq!(
        (timed_out["changes"].as_array().unwrap().len(), timed_out["deleted"].as_array().unwrap().len()),
        (0, 0)
    );
    assert_eq!(timed_out["revision"], answer["revision"]);
    assert!(node.metric("conflux_watch_notify_seconds_count").await >= 1.0);
    assert!(node.metric("conflux_watch_responses_total{outcome=\"timeout\"}").await >= 1.0);
}

#[tokio::test]
async fn a_gray_flip_wakes_only_the_clients_it_moves() {
    let node = node().await;
    node.put("flags", r#"{"beta": false}"#).await;
    node.put("flags", r#"{"beta": true}"#).await;
    node.release("flags", json!([{ "labels": {}, "version": 1, "priority": 0 }])).await;
    let holding_one = |labels: Value| {
        let mut body = watch_body(&["flags"], json!({ "flags": 1 }));
        body["labels"] = labels;
        body["timeout_ms"] = json!(1500);
        body
    };
    let canary = tokio::spawn({
        let (http, url, body) =
            (node.http.clone(), node.client_url("/api/v1/watch"), holding_one(json!({"track": "canary"})));
        async move { http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    let stable = tokio::spawn({
        let (http, url, body) =
            (node.http.clone(), node.client_url("/api/v1/watch"), holding_one(json!({"track": "stable"})));
        async move { http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rules = json!([
        { "labels": { "track": "canary" }, "version": 2, "priority": 10 },
        { "labels": {}, "version": 1, "priority": 0 }
    ]);
    node.release("flags", rules).await;
    let canary = canary.await.unwrap();
    assert_eq!(canary["changes"][0]["version"], 2, "{canary}");
    let stable = stable.await.unwrap();
    assert_eq!(stable["changes"], json!([]), "the flip does not move a stable client: {stable}");
}

#[tokio::test]
async fn deletes_and_recreations_and_new_configs_of_a_watched_env_are_reported() {
    let node = node().await;
    node.put("a", "{}").await;
    let first = node.watch_ok(json!({ "tenant": "acme", "app": "shop", "env": "prod" })).await;
    assert_eq!(first["changes"].as_array().unwrap().len(), 1);

    // A whole-env watch learns of a config created after it started.
    let whole_env = json!({ "tenant": "acme", "app": "shop", "env": "prod", "known": { "a": held(&first) } });
    let parked = tokio::spawn({
        let (http, url) = (node.http.clone(), node.client_url("/api/v1/watch"));
        async move { http.post(url).json(&whole_env).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.put("b", "{}").await;
    let created = parked.await.unwrap();
    assert_eq!(created["changes"][0]["config"], "b", "{created}");

    // A deleted config comes back in `deleted`; held as 0 it parks until it is written again.
    let response = node.request(Method::DELETE, "/api/v1/configs/acme/shop/prod/a").send().await.unwrap();
    assert!(response.status().is_success());
    let deleted = node.watch_ok(watch_body(&["a"], json!({ "a": held(&first) }))).await;
    assert_eq!(deleted["deleted"], json!(["a"]));
    let parked = tokio::spawn({
        let (http, url, body) =
            (node.http.clone(), node.client_url("/api/v1/watch"), watch_body(&["a"], json!({ "a": 0 })));
        async move { http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!parked.is_finished());
    node.put("a", r#"{"again": true}"#).await;
    let recreated = parked.await.unwrap();
    assert_eq!(recreated["changes"][0]["version"], 2, "version numbers are never reused: {recreated}");
}

#[tokio::test]
async fn bad_watch_requests_get_clear_4xx() {
    let node = node().await;
    node.put("db", "{}").await;
    let problem = node.refused(watch_body(&["nope"], json!({})), StatusCode::NOT_FOUND, "not_found").await;
    assert!(problem["detail"].as_str().unwrap().contains("acme/shop/prod/nope"), "{problem}");
    node.refused(watch_body(&["db"], json!({ "other": 1 })), StatusCode::BAD_REQUEST, "invalid_watch").await;
    let env = json!({ "tenant": "acme", "app": "shop", "env": "staging" });
    let problem = node.refused(env, StatusCode::NOT_FOUND, "not_found").await;
    assert!(problem["detail"].as_str().unwrap().contains("env acme/shop/staging"), "{problem}");
    let many: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    node.refused(watch_body(&names, json!({})), StatusCode::BAD_REQUEST, "too_many_configs").await;
    let mut labels = watch_body(&["db"], json!({}));
    labels["labels"] = json!({ "bad key!": "x" });
    node.refused(labels, StatusCode::BAD_REQUEST, "invalid_labels").await;
    let mut timeout = watch_body(&["db"], json!({}));
    timeout["timeout_ms"] = json!(10);
    node.refused(timeout, StatusCode::BAD_REQUEST, "invalid_watch").await;
    let mut unknown = watch_body(&["db"], json!({}));
    unknown["since"] = json!(3);
    node.refused(unknown, StatusCode::BAD_REQUEST, "invalid_json").await;
    node.refused(json!({ "tenant": "acme", "app": "shop", "env": "../x" }), StatusCode::BAD_REQUEST, "invalid_name")
        .await;
    let mut ahead = watch_body(&["db"], json!({}));
    ahead["since_revision"] = json!(1_000_000);
    let started = Instant::now();
    node.refused(ahead, StatusCode::GATEWAY_TIMEOUT, "revision_wait_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_tenant_watcher_quota_answers_429_with_retry_after() {
    let node = node_with(|config| config.max_watchers_per_tenant = 2).await;
    let version = node.put("db", "{}").await;
    let parked: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (node.http.clone(), node.client_url("/api/v1/watch"));
            let body = watch_body(&["db"], json!({ "db": version }));
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response =
        node.request(Method::POST, "/api/v1/watch").json(&watch_body(&["db"], json!({}))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_watchers");
    node.publish("db", "{\"v\": 2}").await;
    for watcher in parked {
        assert_eq!(watcher.await.unwrap(), StatusCode::OK);
    }
    // The quota counts open watchers only: with those answered, a new one is admitted.
    node.watch_ok(watch_body(&["db"], json!({}))).await;
}

/// Reads server-sent events from a response until `count` events arrived: (event, id, data).
async fn events(response: &mut Response, count: usize) -> Vec<(String, Option<u64>, Value)> {
    let mut text = String::new();
    let mut parsed = Vec::new();
    while parsed.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("an event in time");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the stream is open")));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), None, Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).unwrap();
                }
            }
            if !event.is_empty() {
                parsed.push((event, id, data));
            }
        }
    }
    parsed
}

#[tokio::test]
async fn the_stream_sends_each_change_and_resumes_from_last_event_id() {
    let node = node().await;
    node.put("db", r#"{"v": 1}"#).await;
    let mut body = watch_body(&["db"], json!({}));
    body["progress_ms"] = json!(200);
    let mut stream = node.request(Method::POST, "/api/v1/watch/stream").json(&body).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let first = events(&mut stream, 1).await;
    assert_eq!((first[0].0.as_str(), &first[0].2["changes"][0]["version"]), ("changes", &json!(1)));
    assert_eq!(first[0].1, first[0].2["revision"].as_u64());

    node.publish("db", r#"{"v": 2}"#).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = events(&mut stream, 1).await;
    while seen.last().unwrap().0 == "progress" && Instant::now() < deadline {
        seen = events(&mut stream, 1).await;
    }
    let (event, id, data) = seen.pop().unwrap();
    assert_eq!((event.as_str(), &data["changes"][0]["version"]), ("changes", &json!(2)));
    let progress = events(&mut stream, 1).await;
    assert_eq!(progress[0].0, "progress");
    assert!(progress[0].1 >= id);
    drop(stream);

    // Dropped; two writes happen; reconnecting with the last id and what it holds gets only the
    // final state, once.
    node.publish("db", r#"{"v": 3}"#).await;
    node.publish("db", r#"{"v": 4}"#).await;
    body["known"] = json!({ "db": { "version": 2, "checksum": data["changes"][0]["checksum"] } });
    let mut resumed = node
        .request(Method::POST, "/api/v1/watch/stream")
        .header("last-event-id", id.unwrap().to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    let after = events(&mut resumed, 2).await;
    assert_eq!((after[0].0.as_str(), &after[0].2["changes"][0]["version"]), ("changes", &json!(4)));
    assert_eq!(after[1].0, "progress", "nothing is repeated after the final state: {after:?}");
    assert!(after[0].1 > id);

    let bad = node.request(Method::POST, "/api/v1/watch/stream").header("last-event-id", "x").json(&body).send().await;
    assert_eq!(bad.unwrap().status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_node_shutting_down_tells_its_watchers_instead_of_hanging() {
    let node = node().await;
    let version = node.put("db", "{}").await;
    let parked = tokio::spawn({
        let (http, url, body) =
            (node.http.clone(), node.client_url("/api/v1/watch"), watch_body(&["db"], json!({ "db": version })));
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    node.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited for a parked watcher");
    let (status, problem) = parked.await.unwrap();
    assert_eq!((status, problem["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("shutting_down")));
}

#[tokio::test]
async fn the_clients_listing_shows_who_holds_which_version() {
    let node = node().await;
    node.put("db", "{}").await;
    let version = node.publish("db", "{\"v\": 2}").await;
    let parked: Vec<_> = [("pod-a", 1), ("pod-b", version), ("pod-c", version)]
        .into_iter()
        .map(|(id, held)| {
            let (http, url) = (node.http.clone(), node.client_url("/api/v1/watch"));
            let mut body = watch_body(&["db"], json!({ "db": held }));
            body["client_id"] = json!(id);
            body["labels"] = json!({ "zone": "a" });
            tokio::spawn(async move { http.post(url).json(&body).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = "/api/v1/configs/acme/shop/prod/db/clients?limit=2";
    let page: Value = node.request(Method::GET, path).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["versions"], json!({ "2": 3 }), "pod-a was answered with version 2 at once: {page}");
    assert_eq!(page["watchers"].as_array().unwrap().len(), 2);
    assert_eq!(page["watchers"][0]["client_id"], "pod-a");
    assert_eq!(page["watchers"][0]["labels"], json!({ "zone": "a" }));
    assert_eq!(page["watchers"][1]["connected"], true);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = node
        .request(Method::GET, &format!("/api/v1/configs/acme/shop/prod/db/clients?limit=2&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["watchers"][0]["client_id"], "pod-c", "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    node.publish("db", "{\"v\": 3}").await;
    for watcher in parked {
        assert_eq!(watcher.await.unwrap(), StatusCode::OK);
    }
}
