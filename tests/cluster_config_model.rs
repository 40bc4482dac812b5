//! The configuration model end to end on real clusters, through raw HTTP: gray releases serve
//! exactly what their rules say (sticky percent buckets, promotion, rollback) from every node;
//! racing release edits are compare-and-set; version lists, release histories and the audit log
//! survive a leader kill and reach a late learner by snapshot; every acknowledged mutation has
//! exactly one audit record, in revision order, carrying its request id; and a change sent to a
//! follower is checked against every change acknowledged before it, not the follower's lag.

#[path = "support/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use conflux::wire::{AuditEntry, Page, Release, Released, Resolved, Rule, Version, WriteResult};
use harness::{eventually, NodeOptions, TestCluster};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------------
// Raw HTTP helpers.

/// One HTTP client for the whole test; its timeout is well above the server's request timeout
/// (5 s), so the server always answers first unless the node is gone.
/// A client that sends the cluster's bootstrap admin token with every request.
fn http() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", harness::ADMIN_TOKEN);
    headers.insert(reqwest::header::AUTHORIZATION, bearer.parse().unwrap());
    reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers).build().unwrap()
}

/// An answer: status, headers and the body as JSON (`Null` when empty, a string when not JSON).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.body.clone()).unwrap_or_else(|e| panic!("unexpected body {}: {e}", self.body))
    }

    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Reply { status, headers, body })
}

/// Sends and insists on `expected`; returns the reply.
async fn expect(request: reqwest::RequestBuilder, expected: StatusCode, what: &str) -> Reply {
    let reply = send(request).await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(reply.status, expected, "{what}: {}", reply.body);
    reply
}

fn config_url(base: &str, key: &str) -> String {
    format!("{base}/api/v1/configs/{key}")
}

/// `"sha256:<hex>"` of `content`, computed here, not by the server.
fn sha256(content: &str) -> String {
    let hex: String = Sha256::digest(content.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The documented sticky bucket (the wire contract of `percent`), computed independently:
/// `sha256(config_id 0x00 "{priority}:{k=v,..}" 0x00 client_id)`, first 8 bytes big-endian, mod 10,000.
fn bucket(config_id: &str, priority: u32, labels: &BTreeMap<String, String>, client_id: &str) -> u64 {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let digest = Sha256::digest(format!("{config_id}\0{priority}:{}\0{client_id}", labels.join(",")).as_bytes());
    let head = digest.iter().take(8).fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    head % 10_000
}

/// Runs `body`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body).await.unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
}

fn compacting(every: &str) -> NodeOptions {
    NodeOptions { extra_args: ["--snapshot-logs", every, "--keep-logs", "5"].map(String::from).to_vec() }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn rule(pairs: &[(&str, &str)], version: u64, priority: u32, percent: Option<f64>) -> Rule {
    Rule { labels: labels(pairs), version, priority, percent }
}

/// The current release and its ETag, read linearizably from `base`.
async fn current_release(http: &reqwest::Client, base: &str, key: &str) -> (Release, String) {
    let reply = expect(http.get(format!("{}/release", config_url(base, key))), StatusCode::OK, "get release").await;
    let release: Release = reply.parse();
    let etag = reply.header("etag").expect("a release has an ETag").to_string();
    assert_eq!(etag, format!("\"r{}\"", release.number), "the ETag names the release number");
    (release, etag)
}

/// Replaces the release through `base` with `If-Match: etag`; expects 200.
async fn set_release(http: &reqwest::Client, base: &str, key: &str, etag: &str, rules: &[Rule]) -> Released {
    let request = http
        .put(format!("{}/release", config_url(base, key)))
        .header("if-match", etag)
        .json(&json!({ "rules": rules, "message": "gray" }));
    let reply = expect(request, StatusCode::OK, "set release").await;
    reply.parse()
}

/// Every item of a paginated listing (`limit` per page), following `next_cursor`, as raw pages.
async fn all_pages(http: &reqwest::Client, url: &str, query: &[(&str, &str)], limit: usize) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = http.get(url).query(query).query(&[("limit", limit.to_string())]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let page = expect(request, StatusCode::OK, url).await.body;
        cursor = page["next_cursor"].as_str().map(str::to_string);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 10_000, "{url}: the listing never ends");
    }
}

fn items<T: DeserializeOwned>(pages: &[Value]) -> Vec<T> {
    pages
        .iter()
        .flat_map(|page| {
            let page: Page<T> = serde_json::from_value(page.clone()).unwrap();
            page.items
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Gray release: promotion and rollback.

const CLIENTS: usize = 1000;

/// What every client (with and without `canary=true`) receives, resolved through the nodes
/// round-robin at `min_revision` (a lagging node waits for it), 32 requests at a time.
async fn resolve_everyone(
    http: &reqwest::Client,
    urls: &[String],
    key: &str,
    min_revision: u64,
) -> BTreeMap<(usize, bool), Resolved> {
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        for canary in [false, true] {
            let url = format!("{}/api/v1/resolve/{key}", urls[(2 * client + usize::from(canary)) % urls.len()]);
            let (http, gate) = (http.clone(), gate.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let mut query = vec![
                    ("client_id", format!("client-{client}")),
                    ("consistency", "serializable".to_string()),
                    ("min_revision", min_revision.to_string()),
                ];
                if canary {
                    query.push(("labels", "canary=true".to_string()));
                }
                let reply = expect(http.get(&url).query(&query), StatusCode::OK, &format!("resolve via {url}")).await;
                let resolved: Resolved = reply.parse();
                assert!(resolved.revision >= min_revision, "{url} answered from revision {}", resolved.revision);
                ((client, canary), resolved)
            });
        }
    }
    let mut all = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (who, resolved) = done.unwrap();
        all.insert(who, resolved);
    }
    all
}

/// The non-canary clients served version 2.
fn on_v2(all: &BTreeMap<(usize, bool), Resolved>) -> BTreeSet<usize> {
    all.iter().filter(|((_, canary), r)| !canary && r.version == 2).map(|((client, _), _)| *client).collect()
}

/// Checks what one phase served: every answer is one of the two versions with its exact content
/// and checksum, from `release`; every canary gets v2 by the canary rule; every other client
/// gets v2 exactly when the documented bucket of the percent rule is below `percent`.
fn check_phase(
    all: &BTreeMap<(usize, bool), Resolved>,
    contents: &[String; 2],
    config_id: &str,
    release: u64,
    percent: f64,
) {
    assert_eq!(all.len(), 2 * CLIENTS);
    for ((client, canary), resolved) in all {
        let who = format!("client-{client} (canary: {canary}) at {percent}%");
        assert_eq!(resolved.release, release, "{who}");
        assert!(matches!(resolved.version, 1 | 2), "{who}: {resolved:?}");
        let content = &contents[resolved.version as usize - 1];
        assert_eq!(&resolved.content, content, "{who}: content of version {}", resolved.version);
        assert_eq!(resolved.checksum, sha256(content), "{who}: checksum of version {}", resolved.version);
        assert_eq!(resolved.format, "json", "{who}");
        let inside = bucket(config_id, 10, &BTreeMap::new(), &format!("client-{client}")) < (percent * 100.0) as u64;
        let (expected_version, expected_priority) = match (canary, inside) {
            (true, _) => (2, 20),
            (false, true) => (2, 10),
            (false, false) => (1, 0),
        };
        assert_eq!((resolved.version, resolved.rule.priority), (expected_version, expected_priority), "{who}");
    }
}

fn assert_share(on_v2: &BTreeSet<usize>, percent: usize) {
    let (low, high) = ((percent - 3) * CLIENTS / 100, (percent + 3) * CLIENTS / 100);
    assert!(
        (low..=high).contains(&on_v2.len()),
        "at {percent}% the share of non-canary clients on v2 must be {percent} ± 3 points: {} of {CLIENTS}",
        on_v2.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gray_release_promotion_and_rollback_serve_exactly_what_the_rules_say() {
    within(Duration::from_secs(300), async {
        let cluster = TestCluster::start(3, NodeOptions::default()).await;
        let leader = cluster.leader().await;
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
        let http = http();
        let key = "gray/shop/prod/checkout";
        let contents = [
            r#"{"checkout":"classic","retries":1}"#.to_string(),
            r#"{"checkout":"one-click","retries":3}"#.to_string(),
        ];

        let put = http
            .put(config_url(&urls[1], key))
            .query(&[("message", "v1")])
            .header("content-type", "application/json")
            .body(contents[0].clone());
        let v1: WriteResult = expect(put, StatusCode::OK, "write v1").await.parse();
        assert_eq!((v1.version, v1.checksum.as_deref()), (1, Some(sha256(&contents[0]).as_str())));
        let post = http
            .post(format!("{}/versions", config_url(&urls[2], key)))
            .json(&json!({ "content": contents[1], "format": "json", "message": "v2" }));
        let v2: WriteResult = expect(post, StatusCode::CREATED, "write v2").await.parse();
        assert_eq!((v2.version, v2.checksum.as_deref()), (2, Some(sha256(&contents[1]).as_str())));
        for (n, content) in contents.iter().enumerate() {
            let url = format!("{}/versions/{}", config_url(&urls[0], key), n + 1);
            let version: Version = expect(http.get(url), StatusCode::OK, "get version").await.parse();
            assert_eq!((&version.content, &version.info.checksum), (content, &sha256(content)));
        }

        // Writing v2 released nothing: release 1 still gives everyone v1.
        let (initial, etag) = current_release(&http, &urls[leader], key).await;
        assert_eq!((initial.number, initial.action.as_str()), (1, "initial"));
        assert_eq!(initial.rules, vec![rule(&[], 1, 0, None)]);

        let gray = |percent: f64| {
            vec![rule(&[("canary", "true")], 2, 20, None), rule(&[], 2, 10, Some(percent)), rule(&[], 1, 0, None)]
        };
        let at_10 = set_release(&http, &urls[0], key, &etag, &gray(10.0)).await;
        assert_eq!(at_10.release, 2);
        let served_10 = resolve_everyone(&http, &urls, key, at_10.revision).await;
        check_phase(&served_10, &contents, key, 2, 10.0);
        let v2_at_10 = on_v2(&served_10);
        assert_share(&v2_at_10, 10);

        let (_, etag) = current_release(&http, &urls[1], key).await;
        let at_50 = set_release(&http, &urls[1], key, &etag, &gray(50.0)).await;
        assert_eq!(at_50.release, 3);
        let served_50 = resolve_everyone(&http, &urls, key, at_50.revision).await;
        check_phase(&served_50, &contents, key, 3, 50.0);
        let v2_at_50 = on_v2(&served_50);
        let dropped: Vec<_> = v2_at_10.difference(&v2_at_50).collect();
        assert!(dropped.is_empty(), "promotion to 50% moved clients back to v1: {dropped:?}");
        assert_share(&v2_at_50, 50);

        let (_, etag) = current_release(&http, &urls[2], key).await;
        let at_100 = set_release(&http, &urls[2], key, &etag, &gray(100.0)).await;
        assert_eq!(at_100.release, 4);
        let served_100 = resolve_everyone(&http, &urls, key, at_100.revision).await;
        check_phase(&served_100, &contents, key, 4, 100.0);
        assert!(served_100.values().all(|r| r.version == 2), "at 100% everyone gets v2");

        let (_, etag) = current_release(&http, &urls[0], key).await;
        let request = http
            .post(format!("{}/release/rollback", config_url(&urls[0], key)))
            .header("if-match", etag)
            .json(&json!({ "to": at_10.release, "message": "back to 10%" }));
        let rolled_back: Released = expect(request, StatusCode::OK, "roll back").await.parse();
        assert_eq!(rolled_back.release, 5);
        let served_back = resolve_everyone(&http, &urls, key, rolled_back.revision).await;
        check_phase(&served_back, &contents, key, 5, 10.0);
        for (who, resolved) in &served_back {
            let before = &served_10[who];
            assert_eq!(
                (resolved.version, &resolved.rule),
                (before.version, &before.rule),
                "client-{} (canary: {}) must get what it got at 10%",
                who.0,
                who.1
            );
        }

        let history = all_pages(&http, &format!("{}/releases", config_url(&urls[1], key)), &[], 100).await;
        let history: Vec<Release> = items(&history);
        let summary: Vec<(u64, &str, Option<u64>)> =
            history.iter().map(|r| (r.number, r.action.as_str(), r.rolled_back_to)).collect();
        assert_eq!(
            summary,
            vec![(5, "rollback", Some(2)), (4, "set", None), (3, "set", None), (2, "set", None), (1, "initial", None)]
        );
        let rules: Vec<&Vec<Rule>> = history.iter().map(|r| &r.rules).collect();
        assert_eq!(rules, vec![&gray(10.0), &gray(100.0), &gray(50.0), &gray(10.0), &vec![rule(&[], 1, 0, None)]]);
        let revisions: Vec<u64> = history.iter().map(|r| r.revision).collect();
        assert_eq!(revisions[..4], [rolled_back.revision, at_100.revision, at_50.revision, at_10.revision]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. Racing release edits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_editors_racing_on_one_release_get_one_success_and_one_conflict() {
    within(Duration::from_secs(240), async {
        let cluster = TestCluster::start(3, NodeOptions::default()).await;
        let leader = cluster.leader().await;
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
        let http = http();
        let key = "race/shop/prod/flags";
        for n in 1..=3 {
            let put =
                http.put(config_url(&urls[leader], key)).query(&[("format", "json")]).body(format!(r#"{{"n":{n}}}"#));
            expect(put, StatusCode::OK, "write a version").await;
        }
        let url = format!("{}/release", config_url(&urls[0], key));
        let without = send(http.put(&url).json(&json!({ "rules": [rule(&[], 2, 0, None)] }))).await.unwrap();
        assert_eq!((without.status, without.code()), (StatusCode::PRECONDITION_REQUIRED, "precondition_required"));

        let initial = vec![rule(&[], 1, 0, None)];
        let mut written: Vec<Vec<Rule>> = vec![initial.clone()];
        let mut winners: Vec<Vec<Rule>> = vec![initial];
        let mut wins = [0usize; 2];
        for round in 0..20usize {
            let (before, etag) = current_release(&http, &urls[round % 3], key).await;
            let tag = round.to_string();
            let editors = [
                vec![rule(&[("editor", "a"), ("round", &tag)], 2, 10, None), rule(&[], 1, 0, None)],
                vec![rule(&[("editor", "b"), ("round", &tag)], 3, 30, Some(12.5)), rule(&[], 2, 5, None)],
            ];
            written.extend(editors.iter().cloned());
            let put = |editor: usize| {
                let url = format!("{}/release", config_url(&urls[(round + editor) % 3], key));
                let body = json!({ "rules": editors[editor], "message": format!("editor {editor}, round {round}") });
                send(http.put(url).header("if-match", etag.clone()).json(&body))
            };
            let (a, b) = tokio::join!(put(0), put(1));
            let replies = [a.unwrap(), b.unwrap()];
            let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
            let winner = match statuses[..] {
                [StatusCode::OK, StatusCode::PRECONDITION_FAILED] => 0,
                [StatusCode::PRECONDITION_FAILED, StatusCode::OK] => 1,
                _ => panic!("round {round}: expected one 200 and one 412, got {replies:?}"),
            };
            wins[winner] += 1;
            let loser = &replies[1 - winner];
            assert_eq!(loser.code(), "release_conflict", "round {round}: {}", loser.body);
            let released: Released = replies[winner].parse();
            assert_eq!(released.release, before.number + 1, "round {round}");
            assert_eq!(replies[winner].header("etag"), Some(format!("\"r{}\"", released.release).as_str()));
            // Read from the node that refused: a linearizable read sees the winner.
            let (after, _) = current_release(&http, &urls[(round + 1 - winner) % 3], key).await;
            assert_eq!((after.number, &after.rules), (released.release, &editors[winner]), "round {round}");
            winners.push(editors[winner].clone());
        }
        assert_eq!(wins.iter().sum::<usize>(), 20);

        let pages = all_pages(&http, &format!("{}/releases", config_url(&urls[2], key)), &[], 7).await;
        let history: Vec<Release> = items(&pages);
        for release in &history {
            assert!(
                written.contains(&release.rules),
                "release {} has rules no editor wrote: {:?}",
                release.number,
                release.rules
            );
        }
        let numbers: Vec<u64> = history.iter().map(|r| r.number).collect();
        assert_eq!(numbers, (1..=21).rev().collect::<Vec<u64>>(), "one release per round, newest first");
        let rules: Vec<Vec<Rule>> = history.into_iter().rev().map(|r| r.rules).collect();
        assert_eq!(rules, winners, "the history is exactly the winners, in order");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 3. History, releases and audit across a leader kill and to a late learner.

/// Writes `content` as the next version of `key` through `base`: raw `PUT` or JSON `POST`.
async fn write_version(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    content: &str,
    raw: bool,
) -> Result<WriteResult, String> {
    let request = if raw {
        http.put(config_url(base, key)).header("content-type", "application/json").body(content.to_string())
    } else {
        http.post(format!("{}/versions", config_url(base, key))).json(&json!({ "content": content, "format": "json" }))
    };
    match send(request).await {
        Ok(reply) if reply.status.is_success() => Ok(reply.parse()),
        Ok(reply) => Err(format!("{}: {}", reply.status, reply.body)),
        Err(e) => Err(e.to_string()),
    }
}

/// Release changes through `base` (linearizable read of the ETag first); expects success.
async fn release_change(http: &reqwest::Client, base: &str, key: &str, what: &str, body: Value) -> Released {
    let (_, etag) = current_release(http, base, key).await;
    let url = config_url(base, key);
    let request = match what {
        "set" => http.put(format!("{url}/release")),
        other => http.post(format!("{url}/release/{other}")),
    };
    expect(request.header("if-match", etag).json(&body), StatusCode::OK, what).await.parse()
}

/// A node's local view of everything the test compares, read `consistency=serializable`.
async fn local_state(http: &reqwest::Client, base: &str, keys: &[String]) -> Vec<(String, Vec<Value>)> {
    let local = [("consistency", "serializable")];
    let mut state = Vec::new();
    for key in keys {
        let versions = all_pages(http, &format!("{}/versions", config_url(base, key)), &local, 1000).await;
        state.push((format!("{key} versions"), versions));
        let releases = all_pages(http, &format!("{}/releases", config_url(base, key)), &local, 1000).await;
        state.push((format!("{key} releases"), releases));
    }
    let audit = all_pages(http, &format!("{base}/api/v1/tenants/hist/audit"), &local, 1000).await;
    state.push(("audit".to_string(), audit));
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_releases_and_audit_survive_a_leader_kill_and_reach_a_late_learner_by_snapshot() {
    within(Duration::from_secs(300), async {
        let mut cluster = TestCluster::start(3, compacting("20")).await;
        let http = http();
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
        let keys: Vec<String> = (0..5).map(|c| format!("hist/shop/prod/c{c}")).collect();
        let mut acked: BTreeMap<&str, Vec<(u64, String)>> = BTreeMap::new();
        for i in 0..30usize {
            let (key, content) = (&keys[i % 5], format!(r#"{{"i":{i}}}"#));
            let written = write_version(&http, &urls[i % 3], key, &content, i % 2 == 0).await.unwrap();
            acked.entry(key).or_default().push((written.version, content));
        }
        let c0 = keys[0].as_str();
        release_change(
            &http,
            &urls[0],
            c0,
            "set",
            json!({ "rules": [rule(&[("region", "eu")], 6, 10, None), rule(&[], 1, 0, None)] }),
        )
        .await;
        release_change(&http, &urls[1], c0, "publish", json!({ "version": 5 })).await;
        release_change(&http, &urls[2], c0, "rollback", json!({ "to": 2 })).await;
        release_change(&http, &urls[0], &keys[1], "publish", json!({ "version": 6 })).await;

        let old_leader = cluster.leader().await;
        cluster.kill(old_leader);
        let survivor = (old_leader + 1) % 3;
        let mut attempt = 0;
        eventually("a write through a survivor succeeds after the leader was killed", Duration::from_secs(60), || {
            attempt += 1;
            let (http, url, key) = (http.clone(), urls[survivor].clone(), keys[2].clone());
            async move { write_version(&http, &url, &key, &format!(r#"{{"failover":{attempt}}}"#), true).await.ok() }
        })
        .await;
        let leader = cluster.leader().await;
        assert_ne!(leader, old_leader, "a new leader must be elected");
        for i in 0..25usize {
            let via = if i % 2 == 0 { leader } else { survivor };
            write_version(&http, &urls[via], &keys[3 + i % 2], &format!(r#"{{"after":{i}}}"#), i % 3 == 0)
                .await
                .unwrap();
        }
        release_change(
            &http,
            &urls[survivor],
            &keys[3],
            "set",
            json!({ "rules": [rule(&[], 7, 9, Some(33.33)), rule(&[], 1, 0, None)] }),
        )
        .await;
        cluster.restart(old_leader).await;

        // The log the learner would need is gone: the leader has compacted past its beginning.
        let (leader_url, leader_node) = (urls[leader].clone(), &cluster.nodes[leader]);
        let mut nudges = 0;
        eventually("the leader purges its log", Duration::from_secs(60), || {
            nudges += 1;
            let (http, url, key) = (http.clone(), leader_url.clone(), keys[4].clone());
            async move {
                if leader_node.metric("conflux_raft_purged_index", &[]).await >= 1.0 {
                    return Some(());
                }
                write_version(&http, &url, &key, &format!(r#"{{"nudge":{nudges}}}"#), true).await.ok()?;
                None
            }
        })
        .await;

        let learner = cluster.add_node().await;
        cluster.add_learner(learner).await;
        let installed = cluster.nodes[learner].metric("conflux_snapshots_installed_total", &[]).await;
        assert!(installed >= 1.0, "the late learner must catch up by snapshot (installed {installed})");
        let leader = cluster.leader().await;
        let last = cluster.status(leader).await.unwrap().last_log_index;
        cluster.wait_applied(last).await;

        let expected = local_state(&http, &cluster.nodes[leader].client_url(), &keys).await;
        // What the test wrote before the kill is in the leader's state, content and all.
        for (key, written) in &acked {
            for (version, content) in written {
                let url = format!("{}/versions/{version}", config_url(&cluster.nodes[leader].client_url(), key));
                let got: Version = expect(http.get(url), StatusCode::OK, "get version").await.parse();
                assert_eq!((&got.content, &got.info.checksum), (content, &sha256(content)), "{key} v{version}");
            }
        }
        let c0_history: Vec<Release> = items(&expected[1].1);
        let actions: Vec<&str> = c0_history.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["rollback", "publish", "set", "initial"], "{c0} release history");
        let audit: Vec<AuditEntry> = items(&expected.last().unwrap().1);
        let writes = audit.iter().filter(|a| a.action == "config.write").count();
        assert!(writes >= 30 + 1 + 25, "the audit log lacks acknowledged writes: {writes} config.write records");
        assert_eq!(audit.iter().filter(|a| a.action.starts_with("release.")).count(), 5);

        for (i, node) in cluster.nodes.iter().enumerate().filter(|(i, n)| *i != leader && n.is_running()) {
            let state = local_state(&http, &node.client_url(), &keys).await;
            for ((what, mine), (_, theirs)) in state.iter().zip(&expected) {
                assert_eq!(
                    mine,
                    theirs,
                    "node {i} ({}) differs from the leader in {what}",
                    if i == learner { "the learner" } else { "a voter" }
                );
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 4. Exactly one audit record per acknowledged mutation, across a leader kill.

/// One mutation of the audit test and the records it must produce (auto-created parents first).
struct Mutation {
    method: Method,
    path: String,
    body: Option<Value>,
    raw: Option<&'static str>,
    if_match: Option<&'static str>,
    /// (action, resource) of each record, in order.
    records: Vec<(&'static str, String)>,
}

/// What the audit model knows about one config while replaying the log.
#[derive(Default)]
struct ConfigModel {
    current: Option<u64>,
    latest: u64,
    release: Option<u64>,
    latest_release: u64,
}

/// Replays `records` in order and checks each one's before/after against what the earlier
/// records imply: versions and release numbers count up per config and are never reused.
fn replay(records: &[AuditEntry]) {
    let mut configs: HashMap<&str, ConfigModel> = HashMap::new();
    for record in records {
        let model = configs.entry(record.resource.as_str()).or_default();
        let expected = match record.action.as_str() {
            "config.write" => {
                let after = model.latest + 1;
                let before = model.current.replace(after);
                model.latest = after;
                if before.is_none() {
                    model.latest_release += 1;
                    model.release = Some(model.latest_release);
                }
                (before, Some(after))
            }
            "config.delete" => {
                model.release = None;
                (model.current.take(), None)
            }
            action if action.starts_with("release.") => {
                model.latest_release += 1;
                (model.release.replace(model.latest_release), Some(model.latest_release))
            }
            _ => (None, None),
        };
        assert_eq!((record.before, record.after), expected, "before/after of {record:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_has_exactly_one_audit_record_in_revision_order_across_a_leader_kill() {
    within(Duration::from_secs(300), async {
        let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
        let http = http();
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
        let db = "audit/shop/prod/db";
        let flags = "audit/web/stage/flags";
        let config = |key: &str, tail: &str| format!("/api/v1/configs/{key}{tail}");
        let schema = json!({ "type": "object", "properties": { "pool": { "type": "integer" } }, "required": ["pool"] });
        let m = |method: Method, path: String, records: Vec<(&'static str, String)>| Mutation {
            method,
            path,
            body: None,
            raw: None,
            if_match: None,
            records,
        };
        let one = |action: &'static str, resource: &str| vec![(action, resource.to_string())];
        let mutations = vec![
            m(Method::PUT, "/api/v1/tenants/audit".into(), one("tenant.create", "audit")),
            m(Method::PUT, "/api/v1/tenants/audit/apps/shop".into(), one("app.create", "audit/shop")),
            m(Method::PUT, "/api/v1/tenants/audit/apps/shop/envs/prod".into(), one("env.create", "audit/shop/prod")),
            Mutation { raw: Some(r#"{"pool":1}"#), ..m(Method::PUT, config(db, ""), one("config.write", db)) },
            Mutation {
                body: Some(json!({ "content": r#"{"pool":2}"#, "format": "json" })),
                ..m(Method::POST, config(db, "/versions"), one("config.write", db))
            },
            Mutation { body: Some(schema), ..m(Method::PUT, config(db, "/schema"), one("config.schema.set", db)) },
            Mutation { raw: Some(r#"{"pool":3}"#), ..m(Method::PUT, config(db, ""), one("config.write", db)) },
            Mutation {
                body: Some(json!({ "rules": [rule(&[("canary", "true")], 3, 10, None), rule(&[], 2, 0, None)] })),
                if_match: Some("\"r1\""),
                ..m(Method::PUT, config(db, "/release"), one("release.set", db))
            },
            // The leader is killed while this one is in flight to it.
            Mutation {
                body: Some(json!({ "version": 3 })),
                if_match: Some("\"r2\""),
                ..m(Method::POST, config(db, "/release/publish"), one("release.publish", db))
            },
            Mutation {
                body: Some(json!({ "to": 2 })),
                if_match: Some("\"r3\""),
                ..m(Method::POST, config(db, "/release/rollback"), one("release.rollback", db))
            },
            Mutation {
                raw: Some("dark_mode = true\n"),
                ..m(
                    Method::PUT,
                    config(flags, "?format=toml"),
                    vec![
                        ("app.create", "audit/web".into()),
                        ("env.create", "audit/web/stage".into()),
                        ("config.write", flags.into()),
                    ],
                )
            },
            m(Method::DELETE, config(db, ""), one("config.delete", db)),
            Mutation { raw: Some(r#"{"pool":4}"#), ..m(Method::PUT, config(db, ""), one("config.write", db)) },
            Mutation {
                body: Some(json!({ "description": "audited" })),
                ..m(Method::PUT, "/api/v1/tenants/audit".into(), one("tenant.update", "audit"))
            },
            m(Method::DELETE, config(db, "/schema"), one("config.schema.clear", db)),
            // Breaks the schema of mutation 5: accepted only because mutation 14 cleared it.
            Mutation { raw: Some(r#"{"pool":"five"}"#), ..m(Method::PUT, config(db, ""), one("config.write", db)) },
        ];
        const KILL_AT: usize = 8;

        // Request id of the applied attempt of each mutation, with its acknowledged revision
        // (None when the answer was lost and the audit log showed it applied).
        let mut applied: Vec<(String, Option<u64>, Value)> = Vec::new();
        let mut unacknowledged: BTreeSet<String> = BTreeSet::new();
        let mut killed = None;
        let audit_url = |base: &str| format!("{base}/api/v1/tenants/audit/audit");
        for (n, mutation) in mutations.iter().enumerate() {
            let mut attempts: Vec<String> = Vec::new();
            let (request_id, revision, body) = loop {
                let request_id = match attempts.len() {
                    0 => format!("test-{n}"),
                    retry => format!("test-{n}-retry-{retry}"),
                };
                attempts.push(request_id.clone());
                assert!(attempts.len() <= 20, "mutation {n} never succeeded");
                let running: Vec<usize> = (0..cluster.nodes.len()).filter(|i| cluster.nodes[*i].is_running()).collect();
                let kill_now = n == KILL_AT && killed.is_none();
                let target =
                    if kill_now { cluster.leader().await } else { running[(n + attempts.len()) % running.len()] };
                let mut request = http.request(mutation.method.clone(), format!("{}{}", urls[target], mutation.path));
                request = request.header("x-request-id", &request_id);
                if let Some(tag) = mutation.if_match {
                    request = request.header("if-match", tag);
                }
                if let Some(raw) = mutation.raw {
                    request = request.header("content-type", "application/json").body(raw);
                }
                if let Some(body) = &mutation.body {
                    request = request.json(body);
                }
                let outcome = if kill_now {
                    // SIGKILL the leader while the request is on its way to it (or being applied).
                    let in_flight = tokio::spawn(send(request));
                    cluster.kill(target);
                    killed = Some(target);
                    in_flight.await.unwrap()
                } else {
                    send(request).await
                };
                if let Ok(reply) = &outcome {
                    if reply.status.is_success() {
                        assert_eq!(
                            reply.header("x-request-id"),
                            Some(request_id.as_str()),
                            "mutation {n} echoes its request id"
                        );
                        let revision =
                            reply.body["revision"].as_u64().unwrap_or_else(|| panic!("mutation {n}: {}", reply.body));
                        break (request_id, Some(revision), reply.body.clone());
                    }
                }
                // Not acknowledged: it may or may not have been applied (a retry of a conditional
                // change is refused if an earlier attempt was). Ask the audit log, with a
                // linearizable read once some node can serve one, before trying again.
                unacknowledged.insert(request_id.clone());
                let found = eventually(
                    &format!("the audit log answers after mutation {n} failed"),
                    Duration::from_secs(60),
                    || {
                        let (http, urls) =
                            (http.clone(), running.iter().map(|i| audit_url(&urls[*i])).collect::<Vec<_>>());
                        let attempts = attempts.clone();
                        async move {
                            for url in urls {
                                let Ok(reply) = send(http.get(&url).query(&[("limit", "1000")])).await else {
                                    continue;
                                };
                                if reply.status == StatusCode::OK {
                                    let page: Page<AuditEntry> = reply.parse();
                                    assert!(page.next_cursor.is_none());
                                    return Some(page.items.into_iter().find(|r| attempts.contains(&r.request_id)));
                                }
                            }
                            None
                        }
                    },
                )
                .await;
                if let Some(record) = found {
                    unacknowledged.remove(&record.request_id);
                    break (record.request_id, None, Value::Null);
                }
                if let Ok(reply) = &outcome {
                    assert!(reply.status.is_server_error(), "mutation {n} refused: {} {}", reply.status, reply.body);
                }
            };
            applied.push((request_id, revision, body));
        }
        assert!(killed.is_some());
        assert_eq!(applied.len(), mutations.len());

        // Read the whole log back, 7 records a page, from a node that was never killed.
        let reader = (0..3).find(|i| Some(*i) != killed).unwrap();
        let pages = all_pages(&http, &audit_url(&urls[reader]), &[], 7).await;
        for (i, page) in pages.iter().enumerate() {
            let count = page["items"].as_array().unwrap().len();
            if i + 1 < pages.len() {
                assert_eq!(count, 7, "page {i} of the audit log is short but has a next cursor");
            }
        }
        let records: Vec<AuditEntry> = items(&pages);
        for pair in records.windows(2) {
            assert!((pair[0].revision, pair[0].seq) < (pair[1].revision, pair[1].seq), "audit out of order: {pair:?}");
        }
        replay(&records);

        let mut by_request: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
        for record in &records {
            by_request.entry(record.request_id.as_str()).or_default().push(record);
        }
        for (n, (mutation, (request_id, revision, body))) in mutations.iter().zip(&applied).enumerate() {
            let mine = by_request.remove(request_id.as_str()).unwrap_or_default();
            let got: Vec<(&str, &str)> = mine.iter().map(|r| (r.action.as_str(), r.resource.as_str())).collect();
            let want: Vec<(&str, &str)> = mutation.records.iter().map(|(a, r)| (*a, r.as_str())).collect();
            assert_eq!(got, want, "records of mutation {n} ({request_id})");
            assert!(
                mine.iter().all(|r| r.revision == mine[0].revision),
                "mutation {n}: one entry, one revision: {mine:?}"
            );
            if let Some(revision) = revision {
                assert_eq!(mine[0].revision, *revision, "mutation {n}: the record is at the acknowledged revision");
            }
            let last = mine.last().unwrap();
            let after = body.get("version").or_else(|| body.get("release")).and_then(Value::as_u64);
            if after.is_some() && mutation.method != Method::DELETE {
                assert_eq!(last.after, after, "mutation {n}: after is what the response said");
            }
        }
        // Whatever is left was written by attempts that were never acknowledged.
        for (request_id, extra) in &by_request {
            assert!(unacknowledged.contains(*request_id), "audit records no acknowledged request sent: {extra:?}");
        }

        // The head agrees with the log's last write of db.
        let last_write = records.iter().rev().find(|r| r.resource == db && r.action == "config.write").unwrap();
        let head = expect(http.get(format!("{}{}", urls[reader], config(db, ""))), StatusCode::OK, "get db").await;
        assert_eq!(head.header("x-conflux-version"), Some(last_write.after.unwrap().to_string().as_str()));
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. Writes through a follower are checked against everything acknowledged before them.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_a_follower_is_checked_against_every_change_acknowledged_before_it() {
    within(Duration::from_secs(180), async {
        let cluster = TestCluster::start(3, NodeOptions::default()).await;
        let leader = cluster.leader().await;
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
        let http = http();
        let schema = r#"{"type":"object","properties":{"pool":{"type":"integer"}}}"#;
        let mut refused = Vec::new();
        for round in 0..10usize {
            // Every change goes to the leader and is acknowledged; the next one goes straight to
            // a follower, which may not have applied it yet but must behave as if it had.
            let follower = &urls[(leader + 1 + round % 2) % 3];
            let key = format!("stale/shop/prod/c{round}");
            let url = config_url(&urls[leader], &key);
            expect(http.put(&url).query(&[("format", "json")]).body(r#"{"pool":1}"#), StatusCode::OK, "write v1").await;
            expect(http.put(format!("{url}/schema")).body(schema), StatusCode::OK, "set the schema").await;
            expect(http.delete(format!("{url}/schema")), StatusCode::OK, "clear the schema").await;
            let write = http.put(config_url(follower, &key)).query(&[("format", "json")]).body(r#"{"pool":"two"}"#);
            let reply = send(write).await.unwrap();
            if reply.status != StatusCode::OK {
                refused.push(format!(
                    "PUT {key} {{\"pool\":\"two\"}} after its schema was cleared: {} {}",
                    reply.status, reply.body
                ));
            }

            let (_, etag) = current_release(&http, &urls[leader], &key).await;
            let set = set_release(&http, &urls[leader], &key, &etag, &[rule(&[], 1, 0, None)]).await;
            let rollback = http
                .post(format!("{}/release/rollback", config_url(follower, &key)))
                .header("if-match", format!("\"r{}\"", set.release))
                .json(&json!({ "to": set.release }));
            let reply = send(rollback).await.unwrap();
            if reply.status != StatusCode::OK {
                refused.push(format!(
                    "POST {key}/release/rollback {{to: {}}} right after release {} was acknowledged: {} {}",
                    set.release, set.release, reply.status, reply.body
                ));
            }

            let fresh = format!("stale/shop/prod/fresh{round}");
            expect(
                http.put(format!("{}/schema", config_url(&urls[leader], &fresh))).body(schema),
                StatusCode::OK,
                "set a schema",
            )
            .await;
            let reply = send(http.delete(format!("{}/schema", config_url(follower, &fresh)))).await.unwrap();
            if reply.status != StatusCode::OK {
                refused.push(format!("DELETE {fresh}/schema right after it was set: {} {}", reply.status, reply.body));
            }
        }
        assert!(refused.is_empty(), "followers refused changes by their stale state:\n{}", refused.join("\n"));
    })
    .await;
}
