//! Backups (schedule with an injected clock, `ConfluxBackup` lifecycle, retention) and restore
//! (bootstrap from a backup instead of init; a failed restore never initializes), against
//! kube-fake-client, the fake nodes and a real local-filesystem object store.

use std::sync::Arc;

use k8s_openapi::api::events::v1::Event;
use kube::{
    api::{Patch, PatchParams, PostParams},
    ResourceExt,
};
use serde_json::json;

use super::{condition, test_cluster, Harness, BACKUP_MAGIC, NAME, NAMESPACE};
use crate::{
    backup,
    controller::reconcile,
    crd::{
        backup::{
            BackupDestination, BackupLocation, BackupPhase, BackupSchedule, BootstrapSpec, ConfluxBackup,
            ConfluxBackupSpec, FromBackup, LocalDestination, SCHEDULED_AT_ANNOTATION, SCHEDULED_BY_LABEL,
        },
        ConfluxCluster,
    },
};

fn local(dir: &tempfile::TempDir) -> BackupDestination {
    BackupDestination { s3: None, local: Some(LocalDestination { path: dir.path().display().to_string() }) }
}

fn at(text: &str) -> jiff::Timestamp {
    text.parse().expect("timestamp")
}

/// A 3-member cluster created at 2026-01-01T00:00Z that backs up daily at 03:00 into `dir`.
async fn scheduled_harness(dir: &tempfile::TempDir, retention: u32) -> Harness {
    let mut cluster = test_cluster(3);
    cluster.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-01-01T00:00:00Z")));
    cluster.spec.backup = Some(BackupSchedule { schedule: "0 3 * * *".into(), retention, destination: local(dir) });
    let mut harness = Harness::of(cluster).await;
    harness.set_clock("2026-01-01T00:00:00Z");
    harness.nodes.raft().backup_file = [BACKUP_MAGIC, b" of c1 at revision 42"].concat();
    harness.settle(8).await;
    assert_eq!(harness.voters(), 3);
    harness
}

impl Harness {
    fn set_clock(&mut self, text: &str) {
        *self.now.lock().expect("clock lock") = at(text);
    }

    async fn backups(&self) -> Vec<ConfluxBackup> {
        let mut backups = self.api::<ConfluxBackup>().list(&Default::default()).await.expect("list backups").items;
        backups.sort_by_key(|b| b.name_any());
        backups
    }

    async fn run_backup(&self, name: &str) -> ConfluxBackup {
        let backup = Arc::new(self.api::<ConfluxBackup>().get(name).await.expect("backup exists"));
        backup::reconcile(backup, self.context.clone()).await.expect("backup reconcile");
        self.api::<ConfluxBackup>().get(name).await.expect("backup exists")
    }

    async fn event_reasons(&self) -> Vec<String> {
        let events = self.api::<Event>().list(&Default::default()).await.expect("events").items;
        events.into_iter().filter_map(|event| event.reason).collect()
    }
}

#[tokio::test]
async fn a_schedule_is_not_due_before_its_time_and_then_makes_one_owned_backup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = scheduled_harness(&dir, 3).await;
    harness.set_clock("2026-01-01T02:59:59Z");
    harness.reconcile_once().await;
    assert!(harness.backups().await.is_empty(), "not due before 03:00");

    harness.set_clock("2026-01-01T03:00:20Z");
    harness.reconcile_once().await;
    harness.reconcile_once().await;
    let backups = harness.backups().await;
    assert_eq!(backups.iter().map(|b| b.name_any()).collect::<Vec<_>>(), ["cfx-20260101030000"]);
    let made = &backups[0];
    assert_eq!(made.spec.cluster, NAME);
    assert_eq!(made.labels().get(SCHEDULED_BY_LABEL).map(String::as_str), Some(NAME));
    assert_eq!(made.annotations().get(SCHEDULED_AT_ANNOTATION).map(String::as_str), Some("2026-01-01T03:00:00Z"));
    let owner = &made.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ConfluxCluster", NAME));
    assert!(harness.event_reasons().await.contains(&"BackupScheduled".to_string()));

    // Until the next occurrence, nothing more.
    harness.set_clock("2026-01-02T02:00:00Z");
    harness.reconcile_once().await;
    assert_eq!(harness.backups().await.len(), 1);
}

#[tokio::test]
async fn a_backup_streams_from_a_follower_into_the_store_and_records_where_and_what() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = scheduled_harness(&dir, 3).await;
    harness.set_clock("2026-01-01T03:00:20Z");
    harness.reconcile_once().await;

    let done = harness.run_backup("cfx-20260101030000").await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, Some(BackupPhase::Completed), "{:?}", status.message);
    let file = harness.nodes.raft().backup_file.clone();
    assert_eq!(status.size_bytes, Some(file.len() as u64));
    assert_eq!(status.revision, Some(42));
    assert_eq!(status.cluster_id.as_deref(), Some("c1"));
    let key = status.key.clone().expect("key");
    assert_eq!(key, "prod/cfx/cfx-20260101030000.cfxbackup");
    assert_eq!(status.location, Some(format!("file://{}/{key}", dir.path().display())));
    assert_eq!(std::fs::read(dir.path().join(&key)).expect("the object is on disk"), file);
    let leader_pod = harness.cluster().await.status.and_then(|s| s.leader).expect("leader");
    let source = status.source_pod.expect("source pod");
    assert_ne!(source, leader_pod, "read from a follower");
    assert_eq!(
        harness.nodes.raft().backups_from,
        [harness.names.peer_url(harness.names.ordinal_of_pod(&source).expect("ordinal"))]
    );
    assert!(harness.event_reasons().await.contains(&"BackupCompleted".to_string()));

    // Completed is final: another round reads nothing again.
    harness.run_backup("cfx-20260101030000").await;
    assert_eq!(harness.nodes.raft().backups_from.len(), 1);
}

#[tokio::test]
async fn an_on_demand_backup_waits_for_its_cluster_and_fails_without_a_destination() {
    let mut harness = Harness::new(3).await;
    harness.settle(8).await;
    let backups = harness.api::<ConfluxBackup>();
    let mut orphan = ConfluxBackup::new("orphan", ConfluxBackupSpec { cluster: "missing".into(), destination: None });
    orphan.metadata.namespace = Some(NAMESPACE.into());
    backups.create(&PostParams::default(), &orphan).await.expect("created");
    let status = harness.run_backup("orphan").await.status.expect("status");
    assert_eq!(status.phase, Some(BackupPhase::Pending));
    assert_eq!(status.message.as_deref(), Some("ConfluxCluster missing does not exist"));

    let mut nowhere = ConfluxBackup::new("nowhere", ConfluxBackupSpec { cluster: NAME.into(), destination: None });
    nowhere.metadata.namespace = Some(NAMESPACE.into());
    backups.create(&PostParams::default(), &nowhere).await.expect("created");
    let status = harness.run_backup("nowhere").await.status.expect("status");
    assert_eq!(status.phase, Some(BackupPhase::Failed));
    assert!(status.message.expect("message").contains("no backup destination"));
    assert!(harness.nodes.raft().backups_from.is_empty());
    assert!(harness.event_reasons().await.contains(&"BackupFailed".to_string()));
}

#[tokio::test]
async fn retention_deletes_the_oldest_scheduled_backups_and_their_objects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut harness = scheduled_harness(&dir, 2).await;
    for day in 1..=4 {
        harness.set_clock(&format!("2026-01-0{day}T03:00:30Z"));
        harness.reconcile_once().await;
        harness.run_backup(&format!("cfx-2026010{day}030000")).await;
    }
    // Retention runs in the cluster's reconcile once day 4 has completed.
    harness.reconcile_once().await;
    let names: Vec<String> = harness.backups().await.iter().map(|b| b.name_any()).collect();
    assert_eq!(names, ["cfx-20260103030000", "cfx-20260104030000"]);
    for (day, kept) in [(1, false), (2, false), (3, true), (4, true)] {
        let object = dir.path().join(format!("prod/cfx/cfx-2026010{day}030000.cfxbackup"));
        assert_eq!(object.exists(), kept, "{}", object.display());
    }
    assert!(harness.event_reasons().await.contains(&"BackupExpired".to_string()));
}

/// A new 3-member cluster whose `spec.bootstrap.fromBackup` is `from`.
async fn restoring_harness(from: FromBackup) -> Harness {
    let mut cluster = test_cluster(3);
    cluster.spec.bootstrap = Some(BootstrapSpec { from_backup: Some(from) });
    Harness::of(cluster).await
}

fn write_backup(dir: &tempfile::TempDir, key: &str, content: &[u8]) -> BackupLocation {
    let path = dir.path().join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
    std::fs::write(path, content).expect("backup file");
    BackupLocation { destination: local(dir), key: key.into() }
}

#[tokio::test]
async fn a_cluster_from_a_backup_location_restores_pod_zero_instead_of_initializing_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = [BACKUP_MAGIC, b" with 1000 keys"].concat();
    let location = write_backup(&dir, "old/cfx/b1.cfxbackup", &file);
    let mut harness = restoring_harness(FromBackup { backup_name: None, location: Some(location) }).await;
    harness.settle(8).await;

    {
        let raft = harness.nodes.raft();
        assert_eq!(raft.inits, 0, "never initialized empty");
        assert_eq!(raft.restored, [file]);
        let restore = raft.intents_seen.iter().find(|(call, ..)| call == "restore").expect("restore called");
        assert_eq!(restore.1, Some(crate::crd::OperationKind::Restore), "intent recorded first");
    }
    assert_eq!(harness.voters(), 3, "the others joined and were promoted");
    let status = harness.cluster().await.status.expect("status");
    assert_eq!(status.cluster_id.as_deref(), Some("c2"));
    let restored = status.restored_from.expect("restoredFrom");
    assert_eq!(restored.revision, 43);
    assert_eq!(restored.location, format!("file://{}/old/cfx/b1.cfxbackup", dir.path().display()));
    assert_eq!(condition(&harness.cluster().await, "Restored"), ("True".into(), "Restored".into()));
}

#[tokio::test]
async fn a_cluster_from_a_completed_confluxbackup_restores_from_where_it_was_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = [BACKUP_MAGIC, b" from a ConfluxBackup"].concat();
    let location = write_backup(&dir, "prod/old/b2.cfxbackup", &file);
    let mut harness = restoring_harness(FromBackup { backup_name: Some("b2".into()), location: None }).await;
    let backups = harness.api::<ConfluxBackup>();
    let mut b2 = ConfluxBackup::new("b2", ConfluxBackupSpec { cluster: "old".into(), destination: None });
    b2.metadata.namespace = Some(NAMESPACE.into());
    backups.create(&PostParams::default(), &b2).await.expect("created");

    // Not completed yet: the restore fails and nothing is initialized.
    harness.settle_tolerating_errors(4).await;
    let (inits, restores) = {
        let raft = harness.nodes.raft();
        (raft.inits, raft.restored.len())
    };
    assert_eq!((inits, restores), (0, 0));
    let status =
        json!({ "status": { "phase": "Completed", "destination": location.destination, "key": location.key } });
    backups.patch_status("b2", &PatchParams::default(), &Patch::Merge(&status)).await.expect("status");

    harness.settle(8).await;
    assert_eq!(harness.nodes.raft().restored, [file]);
    assert_eq!(harness.nodes.raft().inits, 0);
    assert_eq!(harness.voters(), 3);
}

impl Harness {
    /// Like `settle`, for rounds that are expected to fail.
    async fn settle_tolerating_errors(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let cluster = Arc::new(self.cluster().await);
            let _ = reconcile(cluster, self.context.clone()).await;
            self.kubelet().await;
        }
    }
}

#[tokio::test]
async fn a_failed_restore_is_reported_and_never_falls_back_to_an_empty_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = BackupLocation { destination: local(&dir), key: "nowhere.cfxbackup".into() };
    let mut harness = restoring_harness(FromBackup { backup_name: None, location: Some(missing) }).await;
    harness.settle_tolerating_errors(6).await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Restored"), ("False".into(), "RestoreFailed".into()));
    let status = cluster.status.expect("status");
    assert_eq!(status.cluster_id, None);
    assert_eq!(harness.nodes.raft().inits, 0);
    assert!(harness.event_reasons().await.contains(&"RestoreFailed".to_string()));

    // A corrupt file: the node refuses it (`invalid_backup`), still no init.
    let corrupt = write_backup(&dir, "corrupt.cfxbackup", b"not a backup");
    let patch = json!({ "spec": { "bootstrap": { "fromBackup": { "location": corrupt } } } });
    harness.api::<ConfluxCluster>().patch(NAME, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    harness.settle_tolerating_errors(4).await;
    let cluster = harness.cluster().await;
    assert_eq!(condition(&cluster, "Restored"), ("False".into(), "RestoreFailed".into()));
    let message =
        cluster.status.expect("status").conditions.into_iter().find(|c| c.type_ == "Restored").expect("c").message;
    assert!(message.contains("invalid_backup"), "{message}");
    assert_eq!(harness.nodes.raft().inits, 0);
    assert!(harness.nodes.raft().restored.is_empty());
}
