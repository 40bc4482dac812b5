//! The Rust client's watch loop (`client::Watcher`) and `conflux watch` against one in-process
//! node: the first answer carries what the client receives with its content inline; a published
//! version, a deletion and a re-creation come back at once, not at the long-poll's timeout; the
//! watcher listing names the client; a dead node in the list is skipped; a config that does not
//! exist is refused, not retried.

#[path = "support/node.rs"]
mod node;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use conflux::client::{Client, ClientError, Page, PutOptions, WatchSpec, Watcher};
use conflux::wire::{self, Held};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const DB: [&str; 4] = ["acme", "shop", "prod", "db"];
/// Much shorter than the long-poll timeout (30 s): an answer this fast was woken by the change.
const QUICK: Duration = Duration::from_secs(5);

fn spec(configs: &[&str]) -> WatchSpec {
    WatchSpec {
        tenant: "acme".into(),
        app: "shop".into(),
        env: "prod".into(),
        configs: Some(configs.iter().map(|name| name.to_string()).collect()),
        labels: BTreeMap::from([("region".into(), "eu".into())]),
        client_id: Some("web-1".into()),
        ..WatchSpec::default()
    }
}

async fn put(client: &Client, content: &str) -> wire::WriteResult {
    let options = PutOptions { format: Some("json"), if_match: None };
    client.put(DB, content.as_bytes().to_vec(), options).await.unwrap()
}

/// A node holding version 1 of `acme/shop/prod/db` (`{"pool": 10}`), its client URL, a client,
/// and the write's result.
async fn node_with_db() -> (node::Node, String, Client, wire::WriteResult) {
    let n = node::node().await;
    let url = n.client_url("");
    let client = n.client();
    let v1 = put(&client, r#"{"pool": 10}"#).await;
    (n, url, client, v1)
}

/// What a watcher running in its own task reports after each answer.
type Report = (Result<wire::WatchAnswer, String>, BTreeMap<String, Held>, u64);

/// Runs `watcher` in a task that reports every answer (and what it then holds) on the channel.
fn spawn(mut watcher: Watcher) -> mpsc::Receiver<Report> {
    let (reports, received) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let answer = watcher.next().await.map_err(|error| error.to_string());
            let failed = answer.is_err();
            if reports.send((answer, watcher.known().clone(), watcher.revision())).await.is_err() || failed {
                return;
            }
        }
    });
    received
}

async fn next_report(reports: &mut mpsc::Receiver<Report>) -> (wire::WatchAnswer, BTreeMap<String, Held>, u64) {
    let report = tokio::time::timeout(QUICK, reports.recv()).await.expect("an answer within 5 s");
    let (answer, known, revision) = report.expect("the watcher runs");
    (answer.unwrap(), known, revision)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_gets_each_published_version_the_deletion_and_the_re_creation_at_once() {
    let (_node, url, client, v1) = node_with_db().await;
    // What an application holds: a client token for its env, which can resolve and watch only.
    let request = wire::TokenRequest {
        name: "app".into(),
        role: "client".into(),
        scope: "acme/shop/prod".into(),
        ttl_seconds: None,
    };
    let app_token = client.create_token(&request).await.unwrap().token;

    let mut watcher = Watcher::new(vec![url.clone()], spec(&["db"])).with_token(Some(app_token));
    let first = tokio::time::timeout(QUICK, watcher.next()).await.unwrap().unwrap();
    assert_eq!(first.changes.len(), 1, "{first:?}");
    let change = &first.changes[0];
    assert_eq!((change.config.as_str(), change.version, change.format.as_str()), ("db", 1, "json"));
    assert_eq!(change.content.as_deref(), Some(r#"{"pool": 10}"#), "small contents are inlined");
    assert_eq!(Some(&change.checksum), v1.checksum.as_ref());
    assert!(first.revision >= v1.revision && first.deleted.is_empty());
    assert_eq!(watcher.known()["db"], Held::Exact { version: 1, checksum: v1.checksum.clone() });
    assert_eq!((watcher.revision(), watcher.node()), (first.revision, url.as_str()));
    let mut reports = spawn(watcher);

    // While it is parked, the node lists it with its labels and the version it holds.
    let deadline = Instant::now() + QUICK;
    let listed = loop {
        let listing = client.config_watchers(DB, &Page::default()).await.unwrap();
        match listing.watchers.iter().find(|w| w.client_id.as_deref() == Some("web-1") && w.connected) {
            Some(watcher) => break watcher.clone(),
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => panic!("web-1 is not listed as a connected watcher: {listing:?}"),
        }
    };
    assert_eq!((listed.version, listed.labels.get("region").map(String::as_str)), (1, Some("eu")));

    // A new version reaches clients when a release hands it out.
    let v2 = put(&client, r#"{"pool": 20}"#).await;
    let current = client.get_release(DB).await.unwrap().number;
    let published = client.publish_release(DB, &wire::Publish { version: 2, message: None }, current).await.unwrap();
    let (second, known, revision) = next_report(&mut reports).await;
    assert_eq!(
        second.changes.iter().map(|c| (c.version, c.release, c.content.as_deref())).collect::<Vec<_>>(),
        [(2, published.release, Some(r#"{"pool": 20}"#))]
    );
    assert!(second.revision >= published.revision && revision == second.revision);
    assert_eq!(known["db"], Held::Exact { version: 2, checksum: v2.checksum });

    let deleted = client.delete(DB, None).await.unwrap();
    let (third, known, revision) = next_report(&mut reports).await;
    assert_eq!((third.changes.len(), third.deleted.as_slice()), (0, &["db".to_string()][..]));
    assert!(third.revision >= deleted.revision && revision == third.revision);
    assert_eq!(known["db"], Held::Version(0), "a deleted config is held as absent, so its re-creation is seen");

    put(&client, r#"{"pool": 30}"#).await;
    let (fourth, known, _) = next_report(&mut reports).await;
    assert_eq!(fourth.changes.iter().map(|c| c.content.as_deref()).collect::<Vec<_>>(), [Some(r#"{"pool": 30}"#)]);
    assert_eq!(known["db"].version(), fourth.changes[0].version);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_node_in_the_list_is_skipped() {
    let (node, url, _, _) = node_with_db().await;
    // Nothing listens on port 1: the connection is refused and the watcher moves on.
    let mut watcher = Watcher::new(vec!["http://127.0.0.1:1".into(), url.clone()], spec(&["db"]))
        .with_token(Some(node.token.clone()));
    let answer = tokio::time::timeout(QUICK, watcher.next()).await.unwrap().unwrap();
    assert_eq!(answer.changes[0].version, 1);
    assert_eq!(watcher.node(), url);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_does_not_exist_is_refused_not_retried() {
    let (node, url, _, _) = node_with_db().await;
    let mut watcher = Watcher::new(vec![url], spec(&["db", "dbb"])).with_token(Some(node.token.clone()));
    let error = tokio::time::timeout(QUICK, watcher.next()).await.unwrap().unwrap_err();
    assert!(matches!(&error, ClientError::Problem(_)) && error.is_not_found(), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn conflux_watch_prints_one_json_line_per_change() {
    let (node, url, client, v1) = node_with_db().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args(["watch", "acme/shop/prod", "db", "--json", "--client-id", "cli-1", "--endpoint", &url])
        .env("CONFLUX_TOKEN", &node.token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || -> serde_json::Value {
        let line = tokio::time::timeout(QUICK, lines.next_line()).await.unwrap().unwrap().expect("a line");
        serde_json::from_str(&line).unwrap()
    };
    let first = next_line().await;
    assert_eq!(
        (&first["config"], &first["version"], &first["content"]),
        (&"db".into(), &1.into(), &r#"{"pool": 10}"#.into())
    );
    assert!(first["revision"].as_u64().unwrap() >= v1.revision);
    client.delete(DB, None).await.unwrap();
    let deleted = next_line().await;
    assert_eq!((&deleted["config"], &deleted["deleted"]), (&"db".into(), &true.into()));
    child.kill().await.unwrap();
}
