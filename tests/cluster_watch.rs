//! Watch on a real 3-node cluster under faults: 500 watchers (mixed labels and client ids) spread
//! over the nodes follow 200 publishes and gray-rule flips while the leader is SIGKILLed, a node
//! is partitioned away and later catches up by snapshot (the logs are compacted every 20
//! entries). Every watcher ends holding exactly what resolve gives it, and none is ever handed a
//! version older than one it was already handed. A watcher whose node dies resumes on another.

#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conflux::client::{Client, ClientError, PutOptions, Resolution, ResolveOptions, WatchSpec, Watcher};
use conflux::wire::{ReleaseSpec, Rule};
use harness::{eventually, NodeOptions, TestCluster};

const KEY: [&str; 4] = ["acme", "shop", "prod", "flags"];
const WATCHERS: usize = 500;
const PUBLISHES: u64 = 200;

fn compacting() -> NodeOptions {
    NodeOptions { extra_args: ["--snapshot-logs", "20", "--keep-logs", "5"].map(String::from).to_vec() }
}

fn labels_of(watcher: usize) -> BTreeMap<String, String> {
    let track = if watcher.is_multiple_of(5) { "canary" } else { "stable" };
    let zone = if watcher.is_multiple_of(2) { "a" } else { "b" };
    BTreeMap::from([("track".to_string(), track.to_string()), ("zone".to_string(), zone.to_string())])
}

fn spec(watcher: usize) -> WatchSpec {
    WatchSpec {
        tenant: KEY[0].into(),
        app: KEY[1].into(),
        env: KEY[2].into(),
        configs: Some(vec![KEY[3].into()]),
        labels: labels_of(watcher),
        client_id: Some(format!("w{watcher}")),
        timeout: Duration::from_secs(5),
        inline_max_bytes: Some(0),
    }
}

/// Canary clients get the newest version, half of zone a (by client id) too, everyone else the
/// previous one: each client's version only grows from one publish to the next.
fn rules(newest: u64, previous: u64) -> ReleaseSpec {
    let rule = |labels: &[(&str, &str)], version, priority, percent| Rule {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        version,
        priority,
        percent,
    };
    ReleaseSpec {
        rules: vec![
            rule(&[("track", "canary")], newest, 10, None),
            rule(&[("zone", "a")], newest, 5, Some(50.0)),
            rule(&[], previous, 0, None),
        ],
        message: None,
    }
}

/// Retries `attempt` through each node in turn until one succeeds (writes during a failover or
/// to a partitioned node fail; the test only needs them to land eventually).
async fn until_done<T, F, Fut>(clients: &[Client], mut attempt: F) -> T
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for round in 0..600 {
        match attempt(clients[round % clients.len()].clone()).await {
            Ok(value) => return value,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("a write never succeeded through any node");
}

/// Replaces the release with `spec` through whichever node takes it (reading the current
/// release first, so the If-Match is fresh on every attempt).
async fn set_release(clients: &[Client], spec: &ReleaseSpec) {
    until_done(clients, |c| async move {
        let current = c.get_release(KEY).await?.number;
        c.put_release(KEY, spec, current).await
    })
    .await;
}

/// Everyone gets `version`.
fn everyone(version: u64) -> ReleaseSpec {
    ReleaseSpec { rules: vec![Rule { labels: BTreeMap::new(), version, priority: 0, percent: None }], message: None }
}

/// What one watcher task records: every version it was handed, in order.
type Handed = Arc<Mutex<Vec<Vec<u64>>>>;

/// Starts the watchers from `since`, the revision of the config's first write: one on a follower
/// that has not applied that write yet waits for it instead of being told the config does not
/// exist.
fn spawn_watchers(urls: &[String], handed: &Handed, since: u64) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WATCHERS)
        .map(|w| {
            let mut watcher = Watcher::new(urls.to_vec(), spec(w))
                .with_token(Some(harness::ADMIN_TOKEN.into()))
                .with_known(BTreeMap::new(), since);
            let handed = handed.clone();
            tokio::spawn(async move {
                loop {
                    match watcher.next().await {
                        Ok(answer) => {
                            let mut handed = handed.lock().unwrap();
                            handed[w].extend(answer.changes.iter().map(|c| c.version));
                            handed[w].extend(answer.deleted.iter().map(|_| 0));
                        }
                        Err(e) => panic!("watcher {w} gave up: {e}"),
                    }
                }
            })
        })
        .collect()
}

async fn watchers_per_node(cluster: &TestCluster) -> Vec<u64> {
    let mut counts = Vec::new();
    for node in &cluster.nodes {
        counts.push(node.metric("conflux_watchers", &[]).await as u64);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_watchers_end_on_what_they_resolve_through_kills_partitions_and_snapshots() {
    let mut cluster = TestCluster::start(3, compacting()).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u, Some(harness::ADMIN_TOKEN.to_string()))).collect();
    let first = until_done(&clients, |c| async move { c.put(KEY, b"v1".to_vec(), PutOptions::default()).await }).await;

    let handed: Handed = Arc::new(Mutex::new(vec![Vec::new(); WATCHERS]));
    let tasks = spawn_watchers(&urls, &handed, first.revision);
    eventually("every watcher holds version 1", Duration::from_secs(60), || async {
        handed.lock().unwrap().iter().all(|h| h.last() == Some(&first.version)).then_some(())
    })
    .await;
    let spread = watchers_per_node(&cluster).await;
    assert!(spread.iter().all(|n| *n > 50), "watchers are spread over the nodes: {spread:?}");

    let (mut previous, mut killed, mut partitioned) = (first.version, None, None);
    for step in 1..=PUBLISHES {
        match step {
            50 => {
                let leader = cluster.leader().await;
                cluster.kill(leader);
                killed = Some(leader);
            }
            90 => {
                let index = killed.take().unwrap();
                cluster.restart(index).await;
            }
            110 => {
                let leader = cluster.leader().await;
                let follower = (0..3).find(|i| *i != leader).unwrap();
                cluster.partition(&[follower]);
                partitioned = Some(follower);
            }
            170 => {
                cluster.heal();
                partitioned = None;
            }
            _ => {}
        }
        let content = format!("v{step}");
        let written = until_done(&clients, |c| {
            let content = content.clone();
            async move { c.put(KEY, content.into_bytes(), PutOptions::default()).await }
        })
        .await;
        set_release(&clients, &rules(written.version, previous)).await;
        previous = written.version;
    }
    assert!(killed.is_none() && partitioned.is_none());
    let mut installed = false;
    for node in &cluster.nodes {
        installed |= node.metric("conflux_snapshots_installed_total", &[]).await > 0.0;
    }

    // Every watcher converges on exactly what resolve now gives it.
    let expected: Vec<u64> = {
        let mut expected = Vec::new();
        for w in 0..WATCHERS {
            let options =
                ResolveOptions { labels: labels_of(w), client_id: Some(format!("w{w}")), ..Default::default() };
            let resolved = until_done(&clients, |c| {
                let options = options.clone();
                async move { c.resolve(KEY, &options).await }
            })
            .await;
            let Resolution::Content { resolved, .. } = resolved else { panic!("resolve without an ETag answered 304") };
            expected.push(resolved.version);
        }
        expected
    };
    eventually("every watcher holds what it resolves", Duration::from_secs(60), || async {
        let handed = handed.lock().unwrap();
        let off: Vec<usize> = (0..WATCHERS).filter(|w| handed[*w].last() != Some(&expected[*w])).collect();
        off.is_empty().then_some(())
    })
    .await;
    for task in tasks {
        task.abort();
    }
    let handed = handed.lock().unwrap();
    for (w, versions) in handed.iter().enumerate() {
        assert!(versions.windows(2).all(|p| p[0] < p[1]), "watcher {w} went back or was told twice: {versions:?}");
    }
    let newest = expected.iter().max().unwrap();
    assert!(expected.iter().any(|v| v < newest), "some watchers are on the previous version (the gray rule)");
    assert!(installed, "a lagging node caught up by snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_node_is_killed_resumes_on_another_and_ends_on_the_final_state() {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u, Some(harness::ADMIN_TOKEN.to_string()))).collect();
    let first = until_done(&clients, |c| async move { c.put(KEY, b"one".to_vec(), PutOptions::default()).await }).await;
    // Starting from the write's revision, a watcher on a follower that has not applied it yet
    // waits for it instead of being told the config does not exist.
    let mut watcher = Watcher::new(urls.clone(), spec(1))
        .with_token(Some(harness::ADMIN_TOKEN.into()))
        .with_known(BTreeMap::new(), first.revision);
    let answer = watcher.next().await.unwrap();
    assert_eq!(answer.changes[0].version, first.version);
    let watched = urls.iter().position(|u| u == watcher.node()).unwrap();

    let parked = tokio::spawn(async move {
        let answer = watcher.next().await;
        (answer, watcher)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(watched);
    let alive: Vec<Client> = (0..3).filter(|i| *i != watched).map(|i| clients[i].clone()).collect();
    let mut last = first.version;
    for content in ["two", "three"] {
        let written =
            until_done(&alive, |c| async move { c.put(KEY, content.into(), PutOptions::default()).await }).await;
        set_release(&alive, &everyone(written.version)).await;
        last = written.version;
    }
    let (answer, mut watcher) = tokio::time::timeout(Duration::from_secs(30), parked).await.unwrap().unwrap();
    let mut version = answer.unwrap().changes[0].version;
    while version != last {
        version =
            tokio::time::timeout(Duration::from_secs(30), watcher.next()).await.unwrap().unwrap().changes[0].version;
    }
    assert_ne!(watcher.node(), urls[watched], "it moved to a live node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_a_leader_partitioned_away_moves_to_the_majority() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.client_url()).collect();
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u, Some(harness::ADMIN_TOKEN.to_string()))).collect();
    let first = until_done(&clients, |c| async move { c.put(KEY, b"one".to_vec(), PutOptions::default()).await }).await;
    let leader = cluster.leader().await;
    // A watcher starts on a random node; take one that landed on the leader.
    let mut watcher = loop {
        let mut watcher = Watcher::new(urls.clone(), spec(2)).with_token(Some(harness::ADMIN_TOKEN.into()));
        assert_eq!(watcher.next().await.unwrap().changes[0].version, first.version);
        if watcher.node() == urls[leader] {
            break watcher;
        }
    };
    cluster.partition(&[leader]);
    let majority: Vec<Client> = (0..3).filter(|i| *i != leader).map(|i| clients[i].clone()).collect();
    let written =
        until_done(&majority, |c| async move { c.put(KEY, b"two".to_vec(), PutOptions::default()).await }).await;
    set_release(&majority, &everyone(written.version)).await;
    // The old leader still believes it leads until it fails to confirm with a quorum; then it
    // sends its watchers away and the majority tells this one of the publish.
    let answer = tokio::time::timeout(Duration::from_secs(30), watcher.next()).await.unwrap().unwrap();
    assert_eq!(answer.changes[0].version, written.version);
    assert_ne!(watcher.node(), urls[leader]);
    cluster.heal();
}
