//! The backup side of the API: the `ConfluxBackup` custom resource (`conflux.io/v1alpha1`, one
//! backup of one cluster, on demand or made by a schedule), a cluster's `spec.backup` schedule,
//! where backups are stored (`BackupDestination`) and `spec.bootstrap.fromBackup`.
//!
//! **API Boundary:** these types are CRD schema, like the rest of `crd`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduled backups of a cluster (`spec.backup`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSchedule {
    /// A cron expression in UTC (`minute hour day-of-month month day-of-week`, e.g. `0 3 * * *`).
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Scheduled backups kept: once a newer one completes, the oldest beyond this many are
    /// deleted, object and `ConfluxBackup` both. On-demand backups are never deleted.
    #[schemars(range(min = 1, max = 1000))]
    pub retention: u32,
    /// Where the backups go.
    pub destination: BackupDestination,
}

/// Where backup files are stored: S3-compatible object storage, or a directory of the operator's
/// file system (a volume mounted into the operator pod, or a test's temporary directory).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.local)").message("set exactly one of s3 and local"))]
#[serde(rename_all = "camelCase")]
pub struct BackupDestination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalDestination>,
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix of every backup object (e.g. `conflux/prod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint URL of a non-AWS service (e.g. `http://minio.storage:9000`); AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret in the same namespace with the keys `accessKeyId` and `secretAccessKey` (and
    /// optionally `sessionToken`). Without it, the operator's environment (`AWS_*`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Allow a plain `http://` endpoint (MinIO-like services inside the cluster).
    #[serde(default)]
    pub allow_http: bool,
}

/// A directory on the operator's file system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalDestination {
    /// Absolute path of an existing directory (a volume mounted into the operator pod).
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

/// How a new cluster starts (`spec.bootstrap`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from a backup instead of empty. Only read while the cluster has never been
    /// initialized; a failed restore never falls back to an empty cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// The backup a new cluster starts from: a completed `ConfluxBackup` in the same namespace, or
/// an object at a location.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, x_kube(cel))]
#[x_kube(
    validation = Rule::new("has(self.backupName) != has(self.location)").message("set exactly one of backupName and location")
)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<BackupLocation>,
}

/// One backup object: its destination and its key there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocation {
    pub destination: BackupDestination,
    /// The object's key (for `local`, its path below the directory), as `status.key` of a
    /// `ConfluxBackup` shows it.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// One backup of a cluster's applied state.
// Clippy reads the repeated `printcolumn(type_ = ..)` arguments as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    derive = "Default",
    group = "conflux.io",
    version = "v1alpha1",
    kind = "ConfluxBackup",
    namespaced,
    shortname = "cfxbackup",
    status = "ConfluxBackupStatus",
    doc = "One backup of a Conflux cluster, taken on demand or by the cluster's schedule",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ConfluxBackupSpec {
    /// The `ConfluxCluster` to back up, in the same namespace.
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// Where to store it; the cluster's `spec.backup.destination` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<BackupDestination>,
}

/// Progress and result of a backup, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfluxBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// Bytes of the backup file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The cluster revision the backup holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The Raft cluster id it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// SHA-256 of the backup's data, as the node computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The pod it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Where it is, for humans (`s3://bucket/key` or `file:///dir/key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The destination it was written to (resolved when the backup started) and its key there:
    /// what `spec.bootstrap.fromBackup.backupName` restores from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<BackupDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it is pending or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a backup stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Waiting for its cluster or a healthy member.
    Pending,
    Running,
    Completed,
    /// Final; create a new `ConfluxBackup` to try again.
    Failed,
}

/// Label on scheduled backups: the cluster whose schedule made them.
pub const SCHEDULED_BY_LABEL: &str = "conflux.io/scheduled-by";
/// Annotation on scheduled backups: the schedule's occurrence (RFC 3339) they were made for.
pub const SCHEDULED_AT_ANNOTATION: &str = "conflux.io/scheduled-at";
