//! conflux-operator: keeps a Conflux cluster's Raft membership equal to `ConfluxCluster`
//! `spec.replicas` without ever losing quorum. Modules in reading order: the resource (`crd`),
//! the pure membership planner (`plan`), the pure object builders (`resources`), the seam to
//! the nodes' admin API (`nodes`), the reconcile loop (`controller`) and its metrics (`metrics`);
//! `tls` makes the members' certificates; `leader` elects the one replica that runs the loop.
//! Day two: backup destinations (`destination`), the pure backup schedule (`schedule`), running
//! `ConfluxBackup`s (`backup`), restoring a new cluster (`restore`) and quorum-loss recovery
//! (`recovery`).
//!
//! **Architecture Invariant:** `plan` and `resources` do no IO; only `controller` talks to the
//! Kubernetes API and only through `nodes` to Conflux nodes.

pub mod backup;
pub mod controller;
pub mod crd;
pub mod destination;
pub mod leader;
pub mod metrics;
pub mod network_policy;
pub mod node_settings;
pub mod nodes;
pub mod placement;
pub mod plan;
pub mod recovery;
pub mod resources;
pub mod restore;
pub mod schedule;
pub mod tls;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("node at {endpoint}: {source}")]
    Node { endpoint: String, source: Box<conflux::client::ClientError> },
    #[error("no pod answers as the cluster's leader")]
    NoLeader,
    #[error("pod 0 is initialized but reports no cluster id")]
    NoClusterId,
    #[error("cluster {0} has no namespace")]
    MissingNamespace(String),
    #[error("secret {name} has no valid `token` key")]
    InvalidTokenSecret { name: String },
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("serializing {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
    #[error("backup storage at {location}: {source}")]
    Store { location: String, source: Box<object_store::Error> },
    #[error("secret {secret} has no valid `{key}` key")]
    MissingCredential { secret: String, key: &'static str },
    #[error("ConfluxBackup {name} cannot be restored from: {reason}")]
    BackupNotRestorable { name: String, reason: &'static str },
    #[error("no backup destination: set spec.destination or the cluster's spec.backup.destination")]
    NoDestination,
    #[error("spec.bootstrap.fromBackup is not set")]
    NoBackupSource,
}

impl Error {
    /// The label of `conflux_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Node { .. } => "node",
            Error::NoLeader => "no_leader",
            Error::NoClusterId => "no_cluster_id",
            Error::MissingNamespace(_) => "missing_namespace",
            Error::InvalidTokenSecret { .. } => "invalid_token_secret",
            Error::Tls(_) => "tls",
            Error::Serialize { .. } => "serialize",
            Error::Store { .. } => "store",
            Error::MissingCredential { .. } => "missing_credential",
            Error::BackupNotRestorable { .. } => "backup_not_restorable",
            Error::NoDestination => "no_destination",
            Error::NoBackupSource => "no_backup_source",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
