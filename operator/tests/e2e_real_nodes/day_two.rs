//! Day two with real nodes: a `ConfluxBackup` into a local-filesystem object store and into an S3
//! bucket on a real S3 API, the cluster deleted, a new one restored from it with
//! `spec.bootstrap.fromBackup` (every key, version, release and audit record compared); and quorum loss: two of three members gone, the
//! annotation, every write the survivor had applied kept and the cluster back to three members.

use std::{sync::Arc, time::Duration};

use conflux::{
    client::{AuditQuery, Client, Page, PutOptions},
    wire,
};
use conflux_operator::{
    backup,
    crd::{
        backup::{
            BackupDestination, BackupPhase, BootstrapSpec, ConfluxBackup, ConfluxBackupSpec, FromBackup,
            LocalDestination, S3Destination,
        },
        ConfluxCluster, ConfluxClusterSpec, StorageSpec,
    },
    destination::{ACCESS_KEY_ID, SECRET_ACCESS_KEY},
    recovery,
};
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{PersistentVolumeClaim, Pod, Secret},
    },
    ByteString,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    ResourceExt,
};
use serde_json::json;

use super::{reconcile, s3_server::S3Server, Harness, NAME, NAMESPACE};

const KEYS: usize = 1000;

fn key(i: usize) -> String {
    format!("k{i:04}")
}

/// One config as read back: name, content, version, version history and release.
type ConfigState = (String, Vec<u8>, u64, Vec<wire::VersionInfo>, wire::Release);

/// Everything a restore must bring back, read through the client API.
#[derive(Debug, PartialEq)]
struct Contents {
    configs: Vec<ConfigState>,
    audit: Vec<wire::AuditEntry>,
}

/// 1,000 configs; every second one has two versions, every tenth one a published release.
async fn write_history(client: &Client) {
    for i in 0..KEYS {
        let name = key(i);
        let path = ["e2e", "app", "prod", name.as_str()];
        let options = || PutOptions { format: Some("text"), if_match: None };
        client.put(path, format!("v1 of {name}").into_bytes(), options()).await.expect("write v1");
        if i % 2 == 0 {
            client.put(path, format!("v2 of {name}").into_bytes(), options()).await.expect("write v2");
        }
        if i % 10 == 0 {
            let current = client.get_release(path).await.expect("release").number;
            let publish = wire::Publish { version: 1, message: Some("pin v1".into()) };
            client.publish_release(path, &publish, current).await.expect("publish");
        }
    }
}

async fn read_contents(client: &Client) -> Contents {
    let mut configs = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let name = key(i);
        let path = ["e2e", "app", "prod", name.as_str()];
        let config = client.get(path, false).await.expect("read").expect("config exists");
        let versions = client.versions(path, &Page::default()).await.expect("versions").items;
        let release = client.get_release(path).await.expect("release");
        configs.push((name, config.content, config.version, versions, release));
    }
    let mut audit = Vec::new();
    let mut page = Page { limit: Some(1000), cursor: None };
    loop {
        let answer = client.audit("e2e", &AuditQuery::default(), &page).await.expect("audit");
        audit.extend(answer.items);
        match answer.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    Contents { configs, audit }
}

impl Harness {
    /// `kubectl delete confluxcluster` with every volume gone too: processes, data directories,
    /// and (the fake API server has no garbage collector) the owned objects.
    async fn delete_everything(&mut self) {
        self.processes.clear();
        for (_, dir) in std::mem::take(&mut self.volumes) {
            let _ = std::fs::remove_dir_all(dir);
        }
        *self.addresses.lock().expect("addresses") = Default::default();
        let params = DeleteParams::default();
        self.api::<ConfluxCluster>().delete(NAME, &params).await.expect("delete cluster");
        let _ = self.api::<StatefulSet>().delete(NAME, &params).await;
        let _ = self.api::<Secret>().delete(&format!("{NAME}-token"), &params).await;
        for pod in self.api::<Pod>().list(&Default::default()).await.expect("pods").items {
            let _ = self.api::<Pod>().delete(&pod.name_any(), &params).await;
        }
        for claim in self.api::<PersistentVolumeClaim>().list(&Default::default()).await.expect("claims").items {
            let _ = self.api::<PersistentVolumeClaim>().delete(&claim.name_any(), &params).await;
        }
    }

    async fn backup_until_done(&self, name: &str) -> ConfluxBackup {
        let api = self.api::<ConfluxBackup>();
        for _ in 0..100 {
            let current = api.get(name).await.expect("backup");
            if matches!(
                current.status.as_ref().and_then(|s| s.phase),
                Some(BackupPhase::Completed | BackupPhase::Failed)
            ) {
                return current;
            }
            // The cluster's status (healthy members) is what the backup picks its source from.
            let _ = reconcile(Arc::new(self.cluster().await), self.context.clone()).await;
            backup::reconcile(Arc::new(current), self.context.clone()).await.expect("backup reconcile");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("backup {name} never finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_every_key_version_release_and_audit_record() {
    let store = tempfile::tempdir().expect("backup directory");
    let destination =
        BackupDestination { s3: None, local: Some(LocalDestination { path: store.path().display().to_string() }) };
    // Only the path goes into the closure: `store` lives to the end, past the restore that reads it.
    let directory = store.path().to_path_buf();
    let stored_size =
        |key: String| async move { std::fs::metadata(directory.join(key)).expect("object on disk").len() };
    back_up_delete_and_restore(destination, None, stored_size).await;
}

/// The same through an S3 bucket: a real S3 API (moto's server) on loopback, credentials from a
/// Secret, signed requests from the operator's `object_store` client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_through_an_s3_bucket_restores_into_a_new_cluster() {
    let s3 = S3Server::start().await;
    let destination = BackupDestination {
        s3: Some(S3Destination {
            bucket: S3Server::BUCKET.into(),
            prefix: Some("conflux/e2e".into()),
            endpoint: Some(s3.endpoint.clone()),
            region: Some("eu-west-1".into()),
            credentials_secret: Some("s3-credentials".into()),
            allow_http: true,
        }),
        local: None,
    };
    let mut credentials = Secret::default();
    credentials.metadata.name = Some("s3-credentials".into());
    credentials.metadata.namespace = Some(NAMESPACE.into());
    credentials.data = Some(
        [(ACCESS_KEY_ID, S3Server::ACCESS_KEY_ID), (SECRET_ACCESS_KEY, S3Server::SECRET_ACCESS_KEY)]
            .into_iter()
            .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
            .collect(),
    );
    let stored_size = |key: String| s3.object_size(key);
    back_up_delete_and_restore(destination, Some(credentials), stored_size).await;
}

/// A `ConfluxBackup` of a cluster with history into `destination` (`credentials` created first
/// when given), the object's size as `stored_size` finds it checked against the status, the
/// cluster deleted with its volumes, and a new one restored from the backup: every config,
/// version, release and audit record equal on every pod, and revisions going on above the backup's.
async fn back_up_delete_and_restore<Size, Sized>(
    destination: BackupDestination,
    credentials: Option<Secret>,
    stored_size: Size,
) where
    Size: FnOnce(String) -> Sized,
    Sized: std::future::Future<Output = u64>,
{
    let mut harness = Harness::new(3).await;
    harness.converge(3, "bootstrap").await;
    let (_, admin_token) = harness.tokens().await.expect("tokens");
    let client = harness.api_client(0, &admin_token);
    write_history(&client).await;
    let before = read_contents(&client).await;
    let old_cluster_id = harness.cluster().await.status.and_then(|s| s.cluster_id).expect("cluster id");

    if let Some(secret) = credentials {
        harness.api::<Secret>().create(&PostParams::default(), &secret).await.expect("credentials created");
    }
    let mut request =
        ConfluxBackup::new("before-delete", ConfluxBackupSpec { cluster: NAME.into(), destination: Some(destination) });
    request.metadata.namespace = Some(NAMESPACE.into());
    harness.api::<ConfluxBackup>().create(&PostParams::default(), &request).await.expect("backup created");
    let done = harness.backup_until_done("before-delete").await;
    let status = done.status.expect("backup status");
    assert_eq!(status.phase, Some(BackupPhase::Completed), "{:?}", status.message);
    assert_eq!(status.cluster_id.as_deref(), Some(old_cluster_id.as_str()));
    let backup_revision = status.revision.expect("revision");
    let stored = stored_size(status.key.clone().expect("key")).await;
    assert_eq!(stored, status.size_bytes.expect("size"), "the stored object is the backup the status describes");
    eprintln!("backup: {} bytes at revision {backup_revision}", status.size_bytes.unwrap_or(0));

    harness.delete_everything().await;
    let mut restored = ConfluxCluster::new(
        NAME,
        ConfluxClusterSpec {
            replicas: 3,
            image: "conflux".into(),
            version: "dev".into(),
            storage: StorageSpec { size: "1Gi".into(), ..StorageSpec::default() },
            bootstrap: Some(BootstrapSpec {
                from_backup: Some(FromBackup { backup_name: Some("before-delete".into()), location: None }),
            }),
            ..ConfluxClusterSpec::default()
        },
    );
    restored.metadata.namespace = Some(NAMESPACE.into());
    harness.api::<ConfluxCluster>().create(&PostParams::default(), &restored).await.expect("cluster recreated");
    harness.converge(3, "restore").await;

    let status = harness.cluster().await.status.expect("status");
    let new_cluster_id = status.cluster_id.clone().expect("cluster id");
    assert_ne!(new_cluster_id, old_cluster_id, "a restore makes a new cluster");
    assert_eq!(status.restored_from.as_ref().map(|r| r.revision), Some(backup_revision));
    let (_, admin_token) = harness.tokens().await.expect("new tokens");
    for ordinal in 0..3 {
        let after = read_contents(&harness.api_client(ordinal, &admin_token)).await;
        assert!(after == before, "pod {ordinal} differs from the backed-up cluster");
    }
    let next = harness
        .api_client(1, &admin_token)
        .put(
            ["e2e", "app", "prod", "after-restore"],
            b"x".to_vec(),
            PutOptions { format: Some("text"), if_match: None },
        )
        .await
        .expect("write after restore");
    assert!(next.revision > backup_revision, "revisions continue above the backup's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_quorum_loss_the_annotation_rebuilds_the_cluster_from_the_survivor_with_every_write_it_applied() {
    quorum_loss_with(Survivor::Follower).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_quorum_loss_the_annotation_rebuilds_the_cluster_from_a_surviving_leader_with_every_write_it_applied() {
    quorum_loss_with(Survivor::Leader).await;
}

/// Which member outlives the other two.
#[derive(Debug, Clone, Copy)]
enum Survivor {
    Follower,
    Leader,
}

/// Three members, 200 writes, two machines down for good; the annotation makes the survivor the
/// single voter of a new cluster with every write it had applied, and the cluster grows back to
/// three members (the lost ids tombstoned, their volumes replaced).
async fn quorum_loss_with(which: Survivor) {
    let mut harness = Harness::new(3).await;
    harness.converge(3, "bootstrap").await;
    let (_, admin_token) = harness.tokens().await.expect("tokens");
    let client = harness.api_client(0, &admin_token);
    let mut written = Vec::new();
    for i in 0..200 {
        let name = format!("q{i}");
        client
            .put(["e2e", "app", "prod", &name], b"v".to_vec(), PutOptions { format: Some("text"), if_match: None })
            .await
            .expect("write");
        written.push(name);
    }
    let status = harness.cluster().await.status.expect("status");
    let leader_pod = status.leader.clone().expect("a leader pod");
    let leader: u32 = leader_pod.trim_start_matches(&format!("{NAME}-")).parse().expect("ordinal");
    let survivor = match which {
        Survivor::Follower => (leader + 1) % 3,
        Survivor::Leader => leader,
    };
    let old_cluster_id = status.cluster_id.clone().expect("cluster id");
    // The survivor has applied everything the leader committed.
    let leading = harness.admin_api(leader, &admin_token).status().await.expect("status");
    let committed = leading.committed_index;
    let lease = recovery::DEFAULT_ELECTION_TIMEOUT_MAX_MS;
    assert!(
        leading.quorum_acked_ms_ago.is_some_and(|ago| ago <= lease),
        "a leader with its followers alive reports a recent quorum acknowledgement: {leading:?}"
    );
    let survivor_admin = harness.admin_api(survivor, &admin_token);
    let survivor_node = survivor_admin.status().await.expect("status").node_id;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while survivor_admin.status().await.expect("status").applied_index < committed {
        assert!(std::time::Instant::now() < deadline, "pod {survivor} never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The other two pods are gone (their machines down); the kubelet does not bring them back.
    for ordinal in (0..3).filter(|&ordinal| ordinal != survivor) {
        harness.down.insert(ordinal);
        harness.processes.remove(&ordinal);
    }
    if let Survivor::Leader = which {
        // A Raft leader does not step down when its followers die: it answers as `Leader` on,
        // and only the age of its last quorum acknowledgement tells. Before that is older than
        // an election timeout, the operator rightly refuses (the loss is not evident yet).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = survivor_admin.status().await.expect("status");
            assert_eq!(status.state, "Leader", "the lone leader keeps answering as the leader");
            if status.quorum_acked_ms_ago.is_some_and(|ago| ago > lease) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the leader's quorum acknowledgement never aged: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let patch = json!({ "metadata": { "annotations": { recovery::ANNOTATION: old_cluster_id } } });
    harness
        .api::<ConfluxCluster>()
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotate");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Err(error) = reconcile(Arc::new(harness.cluster().await), harness.context.clone()).await {
            eprintln!("reconcile during recovery (retried): {error}");
        }
        harness.kubelet().await;
        let cluster = harness.cluster().await;
        let status = cluster.status.clone().unwrap_or_default();
        if status.cluster_id.as_deref() != Some(old_cluster_id.as_str()) {
            assert!(!cluster.annotations().contains_key(recovery::ANNOTATION), "the annotation is removed");
            assert_eq!(status.voters, vec![survivor_node], "pod {survivor} is the single voter");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery from {which:?} pod {survivor}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The machines come back on their old volumes; their ids are tombstoned, so they rejoin new.
    harness.down.clear();
    harness.converge(3, "back to three members").await;
    let status = harness.cluster().await.status.expect("status");
    assert_ne!(status.cluster_id.as_deref(), Some(old_cluster_id.as_str()));
    assert_eq!(status.removed_node_ids.len(), 2, "the lost members are tombstoned: {:?}", status.removed_node_ids);
    assert!(status.voters.contains(&survivor_node), "the survivor stays a voter: {:?}", status.voters);
    for ordinal in 0..3 {
        let reader = harness.api_client(ordinal, &admin_token);
        for name in &written {
            let found = reader.get(["e2e", "app", "prod", name], false).await.expect("read");
            assert!(found.is_some(), "write {name} the survivor had applied is missing on pod {ordinal}");
        }
    }
}
