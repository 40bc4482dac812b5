//! Backups: runs each `ConfluxBackup` once (reads `GET /admin/backup` from a healthy member,
//! a follower when there is one, and streams it into the destination), and keeps a cluster's
//! `spec.backup` schedule (creates scheduled `ConfluxBackup`s when due, deletes the ones
//! retention lets go, objects first).
//!
//! Memory: the stream goes through an `object_store` `BufWriter` of [`PART_BYTES`]; once a
//! backup outgrows it, it becomes a multipart upload with at most [`UPLOADS_IN_FLIGHT`] parts in
//! flight, so a backup of any size holds at most about `(1 + UPLOADS_IN_FLIGHT) × PART_BYTES`
//! (24 MiB) in the operator.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{controller::Action as Requeue, events::EventType},
    Resource, ResourceExt,
};
use object_store::{buffered::BufWriter, path::Path};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{
    controller::{publish_event, Context},
    crd::{
        backup::{
            BackupDestination, BackupPhase, ConfluxBackup, ConfluxBackupSpec, ConfluxBackupStatus,
            SCHEDULED_AT_ANNOTATION, SCHEDULED_BY_LABEL,
        },
        labels, ConfluxCluster, MemberRole,
    },
    destination,
    nodes::BackupTaken,
    resources::{secret_value, Names, ADMIN_TOKEN_KEY},
    schedule::{expired, next_due, Due, Scheduled},
    Error, Result,
};

/// Size of the upload buffer and of each multipart part.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Multipart parts uploaded concurrently.
pub const UPLOADS_IN_FLIGHT: usize = 2;

/// Runs one `ConfluxBackup` to `Completed` or `Failed`; both are final.
pub async fn reconcile(backup: Arc<ConfluxBackup>, context: Arc<Context>) -> Result<Requeue> {
    let status = backup.status.clone().unwrap_or_default();
    if backup.metadata.deletion_timestamp.is_some()
        || matches!(status.phase, Some(BackupPhase::Completed | BackupPhase::Failed))
    {
        return Ok(Requeue::await_change());
    }
    let namespace = backup.namespace().ok_or_else(|| Error::MissingNamespace(backup.name_any()))?;
    let run = Run { backup: &backup, context: &context, namespace };
    run.run(status).await
}

struct Run<'a> {
    backup: &'a ConfluxBackup,
    context: &'a Context,
    namespace: String,
}

impl Run<'_> {
    async fn run(&self, mut status: ConfluxBackupStatus) -> Result<Requeue> {
        let clusters: Api<ConfluxCluster> = Api::namespaced(self.context.client.clone(), &self.namespace);
        let Some(cluster) = clusters.get_opt(&self.backup.spec.cluster).await? else {
            let message = format!("ConfluxCluster {} does not exist", self.backup.spec.cluster);
            return self.pending(status, message).await;
        };
        let Some(destination) = self
            .backup
            .spec
            .destination
            .clone()
            .or_else(|| cluster.spec.backup.as_ref().map(|schedule| schedule.destination.clone()))
        else {
            return self.fail(status, &Error::NoDestination).await;
        };
        let names = Names::of(&cluster);
        let Some(ordinal) = source_member(&cluster, &names) else {
            return self.pending(status, "no healthy member to read the backup from".into()).await;
        };
        let key = destination::key(&destination, &self.namespace, &names.cluster, &self.backup.name_any());
        status.phase = Some(BackupPhase::Running);
        status.started_at = Some(self.context.now().to_string());
        status.location = Some(destination::location(&destination, &key));
        status.destination = Some(destination.clone());
        status.key = Some(key.clone());
        status.source_pod = Some(names.pod(ordinal));
        status.message = None;
        self.write_status(&status).await?;

        match self.take(&names, ordinal, &destination, &key).await {
            Ok(taken) => {
                status.phase = Some(BackupPhase::Completed);
                status.completed_at = Some(self.context.now().to_string());
                status.size_bytes = Some(taken.bytes);
                status.revision = Some(taken.revision);
                status.cluster_id = Some(taken.cluster_id);
                status.sha256 = Some(taken.sha256);
                self.write_status(&status).await?;
                let note = format!(
                    "{} bytes at revision {} from {} to {}",
                    taken.bytes,
                    taken.revision,
                    names.pod(ordinal),
                    status.location.as_deref().unwrap_or_default()
                );
                self.event(EventType::Normal, "BackupCompleted", note).await;
                Ok(Requeue::await_change())
            }
            Err(error) => self.fail(status, &error).await,
        }
    }

    /// Streams the backup from the pod at `ordinal` into the destination.
    async fn take(
        &self,
        names: &Names,
        ordinal: u32,
        destination: &BackupDestination,
        key: &str,
    ) -> Result<BackupTaken> {
        let token = admin_token(&self.context.client, &self.namespace, names).await?;
        let store = destination::open(&self.context.client, &self.namespace, destination).await?;
        let store_error = |source: std::io::Error| Error::Store {
            location: destination::location(destination, key),
            source: Box::new(object_store::Error::Generic { store: "backup", source: Box::new(source) }),
        };
        let mut writer =
            BufWriter::with_capacity(store, Path::from(key), PART_BYTES).with_max_concurrency(UPLOADS_IN_FLIGHT);
        let endpoint = self.context.nodes.endpoint(names, ordinal);
        match self.context.nodes.backup(&endpoint, &token, &mut writer).await {
            Ok(taken) => {
                writer.shutdown().await.map_err(store_error)?;
                Ok(taken)
            }
            Err(source) => {
                // Nothing half-written stays behind under the backup's key.
                if let Err(error) = writer.abort().await {
                    tracing::warn!(%error, key, "aborting a failed backup upload failed");
                }
                Err(Error::Node { endpoint, source: Box::new(source) })
            }
        }
    }

    async fn pending(&self, mut status: ConfluxBackupStatus, message: String) -> Result<Requeue> {
        if status.phase != Some(BackupPhase::Pending) || status.message.as_deref() != Some(message.as_str()) {
            status.phase = Some(BackupPhase::Pending);
            status.message = Some(message.clone());
            self.write_status(&status).await?;
            self.event(EventType::Warning, "BackupPending", message).await;
        }
        Ok(Requeue::requeue(std::time::Duration::from_secs(10)))
    }

    async fn fail(&self, mut status: ConfluxBackupStatus, error: &Error) -> Result<Requeue> {
        status.phase = Some(BackupPhase::Failed);
        status.completed_at = Some(self.context.now().to_string());
        status.message = Some(error.to_string());
        self.write_status(&status).await?;
        self.event(EventType::Warning, "BackupFailed", error.to_string()).await;
        Ok(Requeue::await_change())
    }

    async fn write_status(&self, status: &ConfluxBackupStatus) -> Result<()> {
        let value =
            serde_json::to_value(status).map_err(|source| Error::Serialize { what: "backup status", source })?;
        let api: Api<ConfluxBackup> = Api::namespaced(self.context.client.clone(), &self.namespace);
        api.patch_status(&self.backup.name_any(), &PatchParams::default(), &Patch::Merge(&json!({ "status": value })))
            .await?;
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        publish_event(&self.context.recorder, &self.backup.object_ref(&()), type_, reason, note).await;
    }
}

/// The member a backup is read from: a healthy follower (the leader keeps serving writes), else
/// the healthy leader.
fn source_member(cluster: &ConfluxCluster, names: &Names) -> Option<u32> {
    let members = cluster.status.as_ref().map(|status| status.members.as_slice()).unwrap_or_default();
    let healthy = |role: MemberRole| {
        members.iter().filter(move |m| m.healthy && m.role == role).find_map(|m| names.ordinal_of_pod(&m.pod))
    };
    healthy(MemberRole::Follower).or_else(|| healthy(MemberRole::Leader))
}

/// The operator's credential for a cluster's admin API.
pub async fn admin_token(client: &kube::Client, namespace: &str, names: &Names) -> Result<String> {
    let name = names.token_secret();
    let secret = Api::<Secret>::namespaced(client.clone(), namespace).get(&name).await?;
    secret_value(&secret, ADMIN_TOKEN_KEY)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(Error::InvalidTokenSecret { name })
}

/// Keeps `spec.backup` of an initialized cluster: creates the scheduled `ConfluxBackup` that is
/// due, if one is, and deletes the ones retention lets go. A schedule that does not parse is
/// reported (Warning Event) and skipped; membership management goes on.
pub async fn keep_schedule(context: &Context, cluster: &ConfluxCluster, namespace: &str) -> Result<()> {
    let Some(spec) = &cluster.spec.backup else {
        return Ok(());
    };
    let api: Api<ConfluxBackup> = Api::namespaced(context.client.clone(), namespace);
    let name = cluster.name_any();
    let listed = api.list(&ListParams::default().labels(&format!("{SCHEDULED_BY_LABEL}={name}"))).await?;
    let scheduled: Vec<Scheduled> = listed
        .items
        .iter()
        .filter_map(|backup| {
            let at = backup.annotations().get(SCHEDULED_AT_ANNOTATION)?.parse().ok()?;
            Some(Scheduled { name: backup.name_any(), scheduled_at: at, phase: backup.status.as_ref()?.phase })
        })
        .collect();
    // Before the first scheduled backup, the schedule counts from the cluster's creation.
    let last =
        scheduled.iter().map(|backup| backup.scheduled_at).max().unwrap_or_else(|| {
            cluster.metadata.creation_timestamp.as_ref().map_or(Timestamp::UNIX_EPOCH, |time| time.0)
        });
    let reference = cluster.object_ref(&());
    match next_due(&spec.schedule, last, context.now()) {
        Ok(Due::Now(at)) => {
            let backup = scheduled_backup(cluster, namespace, at);
            match api.create(&PostParams::default(), &backup).await {
                Ok(_) => {
                    let note = format!("created ConfluxBackup {} for {at}", backup.name_any());
                    publish_event(&context.recorder, &reference, EventType::Normal, "BackupScheduled", note).await;
                }
                // Made by an earlier round whose answer was lost.
                Err(kube::Error::Api(response)) if response.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Due::At(_)) => {}
        Err(invalid) => {
            publish_event(&context.recorder, &reference, EventType::Warning, "InvalidSchedule", invalid.to_string())
                .await;
        }
    }
    for name in expired(&scheduled, spec.retention) {
        let Some(backup) = listed.items.iter().find(|backup| backup.name_any() == name) else { continue };
        delete_backup(context, namespace, backup).await?;
        let note = format!("deleted ConfluxBackup {name} and its object (retention {})", spec.retention);
        publish_event(&context.recorder, &reference, EventType::Normal, "BackupExpired", note).await;
    }
    Ok(())
}

/// The scheduled backup for the occurrence `at`: named after it, so a retried round makes the
/// same one; owned by the cluster.
fn scheduled_backup(cluster: &ConfluxCluster, namespace: &str, at: Timestamp) -> ConfluxBackup {
    let name = cluster.name_any();
    let mut backup = ConfluxBackup::new(
        &format!("{name}-{}", at.strftime("%Y%m%d%H%M%S")),
        ConfluxBackupSpec { cluster: name.clone(), destination: None },
    );
    let mut backup_labels = labels(&name);
    backup_labels.insert(SCHEDULED_BY_LABEL.into(), name.clone());
    backup.metadata.namespace = Some(namespace.into());
    backup.metadata.labels = Some(backup_labels);
    backup.metadata.annotations = Some([(SCHEDULED_AT_ANNOTATION.to_string(), at.to_string())].into());
    backup.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "conflux.io/v1alpha1".into(),
        kind: "ConfluxCluster".into(),
        name,
        uid: cluster.uid().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
    backup
}

/// Deletes a backup's object, then the `ConfluxBackup`.
async fn delete_backup(context: &Context, namespace: &str, backup: &ConfluxBackup) -> Result<()> {
    let status = backup.status.clone().unwrap_or_default();
    if let (Some(destination), Some(key)) = (&status.destination, &status.key) {
        let store = destination::open(&context.client, namespace, destination).await?;
        match store.delete(&Path::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => {
                return Err(Error::Store {
                    location: destination::location(destination, key),
                    source: Box::new(source),
                })
            }
        }
    }
    let api: Api<ConfluxBackup> = Api::namespaced(context.client.clone(), namespace);
    match api.delete(&backup.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
