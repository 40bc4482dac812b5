//! Backup, restore and quorum-loss recovery with real node processes: a backup taken from a
//! follower restores every key, version, release, release history, schema, token and audit
//! record into a new cluster whose revisions continue above the backup's; a backup taken under
//! writes restores exactly the state at its revision; a corrupt, truncated or oversized backup
//! is refused and leaves the node pristine; after losing two of three nodes the survivor (a
//! follower, or the leader) recovers as a single-voter cluster with everything it had applied,
//! and a new node joins it.

#[path = "support/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conflux::client::{AuditQuery, BackupOptions, Client, ClientError, Page, PutOptions};
use conflux::wire;
use futures::stream::{self, StreamExt};
use harness::{eventually, NodeOptions, TestCluster};

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const APPS: [&str; 2] = ["shop", "billing"];
const ENVS: [&str; 2] = ["prod", "staging"];
const KEYS: usize = 1000;
/// Requests in flight at once while seeding and comparing.
const PARALLEL: usize = 32;

/// Key `i`: spread over every tenant, app and env.
fn key(i: usize) -> [String; 4] {
    let env = i % (TENANTS.len() * APPS.len() * ENVS.len());
    [
        TENANTS[env / (APPS.len() * ENVS.len())].to_string(),
        APPS[env / ENVS.len() % APPS.len()].to_string(),
        ENVS[env % ENVS.len()].to_string(),
        format!("cfg{i:04}"),
    ]
}

fn parts(key: &[String; 4]) -> [&str; 4] {
    [&key[0], &key[1], &key[2], &key[3]]
}

fn json(version: u64, i: usize) -> Vec<u8> {
    format!("{{\"key\": {i}, \"v\": {version}, \"pool\": {}}}", i % 17).into_bytes()
}

/// Writes 1,000 keys with three versions each, schemas on some, gray releases (published, then
/// rolled back) on others, a deleted config and three tokens; returns the tokens' secrets.
async fn seed(client: &Client) -> Vec<String> {
    let written: Vec<Result<(), String>> = stream::iter(0..KEYS)
        .map(|i| {
            let client = client.clone();
            async move {
                let json_format = PutOptions { format: Some("json"), if_match: None };
                let key = key(i);
                for version in 1..=3 {
                    let put = client.put(parts(&key), json(version, i), json_format.clone()).await;
                    put.map_err(|e| format!("{key:?} v{version}: {e}"))?;
                }
                if i % 50 == 0 {
                    let schema = br#"{"type": "object", "required": ["key", "v"]}"#.to_vec();
                    client.put_schema(parts(&key), schema).await.map_err(|e| format!("schema {key:?}: {e}"))?;
                    client.put(parts(&key), json(4, i), json_format.clone()).await.map_err(|e| e.to_string())?;
                }
                if i % 25 == 0 {
                    release_with_rollback(&client, &key).await.map_err(|e| format!("release {key:?}: {e}"))?;
                }
                if i % 200 == 199 {
                    client.delete(parts(&key), None).await.map_err(|e| format!("delete {key:?}: {e}"))?;
                }
                Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let failed: Vec<&String> = written.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} seeding writes failed, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]);
    let mut secrets = Vec::new();
    for (name, role, scope) in
        [("reader", "viewer", "acme"), ("shop-editor", "editor", "globex/shop"), ("ops", "admin", "*")]
    {
        let request =
            wire::TokenRequest { name: name.into(), role: role.into(), scope: scope.into(), ttl_seconds: None };
        secrets.push(client.create_token(&request).await.expect("create token").token);
    }
    secrets
}

/// A gray release (a labelled rule, a percent rule, the default), then publishing version 3 to
/// everyone, then rolling back to the gray release.
async fn release_with_rollback(client: &Client, key: &[String; 4]) -> Result<(), ClientError> {
    let current = client.get_release(parts(key)).await?.number;
    let rule = |labels: &[(&str, &str)], version, priority, percent| wire::Rule {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        version,
        priority,
        percent,
    };
    let gray = wire::ReleaseSpec {
        rules: vec![rule(&[("canary", "true")], 3, 10, None), rule(&[], 2, 5, Some(25.5)), rule(&[], 1, 0, None)],
        message: Some("gray".into()),
    };
    let gray = client.put_release(parts(key), &gray, current).await?.release;
    let publish = wire::Publish { version: 3, message: Some("everyone".into()) };
    let published = client.publish_release(parts(key), &publish, gray).await?.release;
    let rollback = wire::Rollback { to: gray, message: Some("back to gray".into()) };
    client.rollback_release(parts(key), &rollback, published).await?;
    Ok(())
}

/// Every page of a listing, through `fetch(page)`.
async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, ClientError>
where
    F: FnMut(Page) -> Fut,
    Fut: std::future::Future<Output = Result<wire::Page<T>, ClientError>>,
{
    let mut items = Vec::new();
    let mut page = Page { limit: Some(1000), cursor: None };
    loop {
        let answer = fetch(page.clone()).await?;
        items.extend(answer.items);
        match answer.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(items),
        }
    }
}

/// An answer as text for comparison: the value, or the problem code.
fn shown<T: std::fmt::Debug>(answer: Result<T, ClientError>) -> String {
    match answer {
        Ok(value) => format!("{value:?}"),
        Err(ClientError::Problem(p)) => format!("problem {}", p.code),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Everything the public API shows of the seeded data, by what it is (answers' `revision`
/// fields that say what the node had applied are left out: only the data's own revisions count).
async fn dump(client: &Client) -> BTreeMap<String, String> {
    let mut dump = BTreeMap::new();
    let tenants = all_pages(|page| async move { client.list_tenants(&page).await }).await.unwrap();
    dump.insert("tenants".to_string(), format!("{tenants:?}"));
    for tenant in TENANTS {
        let apps = all_pages(|page| async move { client.list_apps(tenant, &page).await }).await.unwrap();
        dump.insert(format!("apps {tenant}"), format!("{apps:?}"));
        for app in APPS {
            let envs = all_pages(|page| async move { client.list_envs([tenant, app], &page).await }).await.unwrap();
            dump.insert(format!("envs {tenant}/{app}"), format!("{envs:?}"));
            for env in ENVS {
                let configs = client.list(tenant, app, env).await.unwrap().configs;
                dump.insert(format!("configs {tenant}/{app}/{env}"), format!("{configs:?}"));
            }
        }
        let audit = all_pages(|page| async move { client.audit(tenant, &AuditQuery::default(), &page).await });
        let audit = audit.await.unwrap();
        assert!(!audit.is_empty(), "tenant {tenant} has audit records");
        dump.insert(format!("audit {tenant}"), format!("{audit:?}"));
    }
    let tokens = all_pages(|page| async move { client.tokens(&page).await }).await.unwrap();
    dump.insert("tokens".to_string(), format!("{tokens:?}"));
    let per_key: Vec<Vec<(String, String)>> = stream::iter(0..KEYS)
        .map(|i| async move {
            let key = key(i);
            let name = key.join("/");
            let k = parts(&key);
            let current =
                client.get(k, false).await.unwrap().map(|c| (c.content, c.version, c.revision, c.content_type));
            let versions = all_pages(|page| async move { client.versions(k, &page).await }).await.unwrap();
            let mut entries = vec![
                (format!("{name} current"), format!("{current:?}")),
                (format!("{name} versions"), format!("{versions:?}")),
                (format!("{name} release"), shown(client.get_release(k).await)),
                (format!("{name} schema"), shown(client.get_schema(k).await)),
            ];
            let history = all_pages(|page| async move { client.release_history(k, &page).await }).await;
            entries.push((format!("{name} releases"), shown(history)));
            for info in &versions {
                let version = client.version(k, info.version).await.unwrap();
                entries.push((format!("{name} v{}", info.version), format!("{version:?}")));
            }
            entries
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    dump.extend(per_key.into_iter().flatten());
    dump
}

/// Asserts two dumps are equal, naming the first entries that differ.
fn assert_same(source: &BTreeMap<String, String>, restored: &BTreeMap<String, String>) {
    let keys: BTreeSet<&String> = source.keys().chain(restored.keys()).collect();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|k| source.get(*k) != restored.get(*k))
        .take(3)
        .map(|k| format!("{k}:\n  source:   {:?}\n  restored: {:?}", source.get(k), restored.get(k)))
        .collect();
    assert!(differing.is_empty(), "the restored state differs from the source:\n{}", differing.join("\n"));
}

/// A pristine node (started with `--join`, never initialized) in a cluster of its own.
async fn pristine(options: NodeOptions) -> TestCluster {
    let mut cluster = TestCluster::empty(options);
    cluster.add_node().await;
    let status = cluster.status(0).await.unwrap();
    assert_eq!((status.state.as_str(), status.cluster_id), ("Uninitialized", None));
    cluster
}

async fn backup_of(admin: &Client, options: BackupOptions) -> (Vec<u8>, wire::BackupSummary) {
    let mut file = Vec::new();
    let summary = admin.backup_with(options, &mut file).await.expect("backup");
    assert_eq!(summary.bytes, file.len() as u64);
    (file, summary)
}

/// Waits until `node` of `cluster` leads a cluster of only itself.
async fn leads_alone(cluster: &TestCluster, node: usize) -> wire::ClusterStatus {
    let node_id = cluster.nodes[node].node_id;
    eventually("the node leads a cluster of its own", Duration::from_secs(10), || async {
        let status = cluster.status(node).await?;
        let alone = status.voters.keys().copied().collect::<Vec<_>>() == [node_id] && status.learners.is_empty();
        (status.state == "Leader" && status.leader_id == Some(node_id) && alone).then_some(status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_follower_restores_every_record_into_a_new_cluster() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let source = cluster.nodes[leader].client();
    let secrets = seed(&source).await;
    let last = cluster.status(leader).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let follower = (leader + 1) % 3;
    let source_cluster = cluster.status(follower).await.unwrap().cluster_id.unwrap();

    let (file, summary) = backup_of(&cluster.nodes[follower].admin(), BackupOptions::default()).await;
    assert_eq!(summary.cluster_id, source_cluster);
    assert_eq!(summary.revision, last, "the follower had applied everything");
    assert_eq!(summary.sha256.len(), 64);

    let target = pristine(NodeOptions::default()).await;
    let restored = target.nodes[0].admin().restore(file).await.expect("restore");
    assert_eq!(restored.node_id, target.nodes[0].node_id);
    assert_eq!(restored.revision, summary.revision);
    assert_ne!(restored.cluster_id, source_cluster, "a restore founds a new cluster");
    let status = leads_alone(&target, 0).await;
    assert_eq!(status.cluster_id.as_deref(), Some(restored.cluster_id.as_str()));
    assert!(status.applied_index > summary.revision, "the new leader's first entry is above the backup");

    let (source_dump, restored_dump) = (dump(&source).await, dump(&target.nodes[0].client()).await);
    assert_same(&source_dump, &restored_dump);
    eprintln!(
        "backup of {} bytes at revision {}; {} answers compared",
        summary.bytes,
        summary.revision,
        restored_dump.len()
    );

    // Tokens of the old cluster work on the new one; its revisions continue above the backup's.
    let url = target.nodes[0].client_url();
    let reader = Client::new(&url, Some(secrets[0].clone())).whoami().await.expect("an old token");
    assert_eq!((reader.role.as_str(), reader.scope.as_str()), ("viewer", "acme"));
    let written =
        target.nodes[0].client().put(["acme", "shop", "prod", "after"], b"x".to_vec(), Default::default()).await;
    assert!(written.unwrap().revision > summary.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_writes_restores_exactly_the_state_at_its_revision() {
    let cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let clients: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|worker| {
            let (clients, acked, stop) = (clients.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("{worker}-{seq}");
                    let client = &clients[(worker + seq) % clients.len()];
                    if let Ok(written) =
                        client.put(["load", "t", "w", &name], name.clone().into_bytes(), Default::default()).await
                    {
                        acked.lock().unwrap().push((name, written.revision));
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_before: Vec<(String, u64)> = acked.lock().unwrap().clone();
    let options = BackupOptions { linearizable: true };
    let (file, summary) = backup_of(&cluster.nodes[follower].admin(), options).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let backup_revision = summary.revision;
    assert!(acked_before.len() > 50, "too little load before the backup: {}", acked_before.len());
    assert!(acked.iter().any(|(_, revision)| *revision > backup_revision), "writes went on after the backup");

    let target = pristine(NodeOptions::default()).await;
    target.nodes[0].admin().restore(file).await.expect("restore");
    leads_alone(&target, 0).await;
    let restored = revisions_of(&target.nodes[0].client(), u64::MAX).await;
    for (name, revision) in &acked_before {
        assert_eq!(restored.get(name), Some(revision), "{name}, acknowledged before the backup started, is missing");
    }
    for (name, revision) in &acked {
        let expected = (*revision <= backup_revision).then_some(revision);
        assert_eq!(restored.get(name), expected, "{name} was written at revision {revision}");
    }
    // Exactly the source's state at the backup's revision: every write is a new key, so the
    // source's keys up to that revision are that state.
    let source = revisions_of(&cluster.nodes[leader].client(), backup_revision).await;
    assert_eq!(restored, source);
    eprintln!(
        "{} writes acknowledged ({} before the backup started), backup at revision {} holds {}",
        acked.len(),
        acked_before.len(),
        backup_revision,
        restored.len()
    );
}

/// The revision of each config in `load/t/w` last written at or before `up_to`, by name.
async fn revisions_of(client: &Client, up_to: u64) -> BTreeMap<String, u64> {
    let page = client.list("load", "t", "w").await.unwrap();
    page.configs.into_iter().filter(|c| c.revision <= up_to).map(|c| (c.name, c.revision)).collect()
}

fn problem_code(error: ClientError) -> (u16, String, String) {
    match error {
        ClientError::Problem(p) => (p.status, p.code, p.detail),
        other => panic!("expected a problem, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_truncated_or_oversized_backup_is_refused_and_the_node_stays_pristine() {
    let cluster = TestCluster::start(1, NodeOptions::default()).await;
    let client = cluster.nodes[0].client();
    for i in 0..5 {
        let content = vec![b'a' + i as u8; 1000 * 1000];
        client.put(["big", "a", "e", &format!("c{i}")], content, PutOptions::default()).await.unwrap();
    }
    let (file, summary) = backup_of(&cluster.nodes[0].admin(), BackupOptions::default()).await;
    assert!(file.len() > 4 * 1024 * 1024);

    let target = pristine(NodeOptions::default()).await;
    let admin = target.nodes[0].admin();
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 0x01;
    let refusals = [
        (file[..file.len() - 1].to_vec(), "truncated"),
        (file[..file.len() / 3].to_vec(), "truncated"),
        (flipped, "checksum mismatch"),
        (b"{\"a\": \"json file\"}".to_vec(), "not a Conflux backup"),
        (Vec::new(), "truncated"),
    ];
    for (body, says) in refusals {
        let (status, code, detail) = problem_code(admin.restore(body).await.unwrap_err());
        assert_eq!((status, code.as_str()), (400, "invalid_backup"), "{detail}");
        assert!(detail.contains(says), "{detail:?} should say {says:?}");
    }
    let status = target.status(0).await.unwrap();
    assert_eq!((status.state.as_str(), status.cluster_id, status.applied_index), ("Uninitialized", None, 0));

    let url = format!("http://{}", target.nodes[0].peer_addr);
    for token in [None, Some("not-the-admin-token-0123456789".to_string())] {
        let (status, code, _) = problem_code(Client::new(&url, token).restore(file.clone()).await.unwrap_err());
        assert_eq!((status, code.as_str()), (401, "unauthorized"));
    }

    let restored = admin.restore(file.clone()).await.expect("the intact backup restores");
    assert_eq!(restored.revision, summary.revision);
    for node in [&admin, &cluster.nodes[0].admin()] {
        let (status, code, _) = problem_code(node.restore(file.clone()).await.unwrap_err());
        assert_eq!((status, code.as_str()), (409, "already_initialized"));
    }

    let small = pristine(NodeOptions { extra_args: vec!["--max-snapshot-bytes".into(), "4194304".into()] }).await;
    let (status, code, _) = problem_code(small.nodes[0].admin().restore(file).await.unwrap_err());
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(small.status(0).await.unwrap().state, "Uninitialized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_two_of_three_nodes_a_follower_recovers_alone_and_a_new_node_joins() {
    survive_with(Survivor::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_two_of_three_nodes_the_leader_recovers_alone_and_a_new_node_joins() {
    survive_with(Survivor::Leader).await;
}

/// Which member outlives the other two.
enum Survivor {
    Follower,
    Leader,
}

/// Three nodes, 200 writes, two nodes SIGKILLed; the survivor recovers as a single voter with
/// every write it had applied, takes writes, and a new node joins it.
async fn survive_with(which: Survivor) {
    let mut cluster = TestCluster::start(3, NodeOptions::default()).await;
    let leader = cluster.leader().await;
    let client = cluster.nodes[leader].client();
    for i in 0..200 {
        client
            .put(["acme", "shop", "prod", &format!("k{i}")], format!("v{i}").into_bytes(), Default::default())
            .await
            .unwrap();
    }
    let last = cluster.status(leader).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let survivor = match which {
        Survivor::Follower => (leader + 1) % 3,
        Survivor::Leader => leader,
    };
    let old_cluster = cluster.status(survivor).await.unwrap().cluster_id.unwrap();
    let admin = cluster.nodes[survivor].admin();

    let (status, code, _) = problem_code(admin.recover(&old_cluster).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "quorum_available"), "a cluster with a quorum is not recovered");
    // 1600 ms is the harness's --election-timeout-max-ms.
    let acked = cluster.status(leader).await.unwrap().quorum_acked_ms_ago;
    assert!(acked.is_some_and(|ago| ago < 1600), "a leader with its quorum was acknowledged lately: {acked:?}");

    for index in 0..3 {
        if index != survivor {
            cluster.kill(index);
        }
    }
    if let Survivor::Leader = which {
        // A Raft leader does not step down alone; the age of its last quorum acknowledgement
        // (what tells an operator it lost its quorum) grows past the election timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = cluster.status(survivor).await.unwrap();
            assert_eq!(status.state, "Leader");
            if status.quorum_acked_ms_ago.is_some_and(|ago| ago > 1600) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the acknowledgement never aged: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (status, code, _) = problem_code(admin.recover("another-cluster").await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "cluster_id_mismatch"));
    let applied = cluster.status(survivor).await.unwrap().applied_index;

    let recovered = admin.recover(&old_cluster).await.expect("recover");
    assert_eq!(recovered.node_id, cluster.nodes[survivor].node_id);
    assert_ne!(recovered.cluster_id, old_cluster);
    assert!(recovered.revision > applied, "revisions continue above the survivor's: {recovered:?}, applied {applied}");
    let status = leads_alone(&cluster, survivor).await;
    assert_eq!(status.cluster_id.as_deref(), Some(recovered.cluster_id.as_str()));

    let survivor_client = cluster.nodes[survivor].client();
    let listed = survivor_client.list("acme", "shop", "prod").await.unwrap();
    assert_eq!(listed.configs.len(), 200, "every write the survivor had applied is kept");
    for i in (0..200).step_by(7) {
        let got = survivor_client.get(["acme", "shop", "prod", &format!("k{i}")], false).await.unwrap().unwrap();
        assert_eq!(got.content, format!("v{i}").into_bytes());
    }
    let written = survivor_client.put(["acme", "shop", "prod", "after"], b"x".to_vec(), Default::default()).await;
    assert!(written.unwrap().revision > recovered.revision);

    let joiner = cluster.add_node().await;
    cluster.add_learner(joiner).await;
    let voters = vec![cluster.nodes[survivor].node_id, cluster.nodes[joiner].node_id];
    admin.set_voters(voters.clone()).await.expect("the new node becomes a voter");
    assert_eq!(cluster.wait_converged_membership().await, voters.iter().copied().collect::<BTreeSet<u64>>());
    let last = cluster.status(survivor).await.unwrap().last_log_index;
    cluster.wait_applied(last).await;
    let joined = cluster.nodes[joiner].client();
    assert_eq!(joined.list("acme", "shop", "prod").await.unwrap().configs.len(), 201);
    let status = cluster.status(joiner).await.unwrap();
    assert_eq!(status.cluster_id.as_deref(), Some(recovered.cluster_id.as_str()));
    let written = joined.put(["acme", "shop", "prod", "joined"], b"y".to_vec(), Default::default()).await.unwrap();
    assert!(written.revision > recovered.revision);
}
