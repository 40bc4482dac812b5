//! conflux-operator: keeps a Conflux cluster's Raft membership equal to `ConfluxCluster`
//! `spec.replicas` without ever losing quorum. Modules in reading order: the resource (`crd`),
//! the pure membership planner (`plan`), the pure object builders (`resources`), the seam to
//! the nodes' admin API (`nodes`), the reconcile loop (`controller`) and its metrics (`metrics`);
//! `tls` makes the members' certificates; `leader` elects the one replica that runs the loop.
//!
//! **Architecture Invariant:** `plan` and `resources` do no IO; only `controller` talks to the
//! Kubernetes API and only through `nodes` to Conflux nodes.

pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod network_policy;
pub mod node_settings;
pub mod nodes;
pub mod placement;
pub mod plan;
pub mod resources;
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
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
