//! Who this node is and which cluster it belongs to, and the check every inbound peer call
//! passes: right token (constant-time), right target node, right cluster.

use std::sync::RwLock;

use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError};
use crate::types::NodeId;

/// Why an inbound peer call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("missing or wrong cluster token")]
    BadToken,
    #[error("this is node {local}, the call was meant for node {requested}")]
    WrongNode { local: NodeId, requested: String },
    #[error("this node belongs to cluster {local}, the call came from cluster {requested:?}")]
    WrongCluster { local: String, requested: String },
    #[error("the call names no cluster id")]
    MissingCluster,
    #[error("could not record the cluster id: {0}")]
    Store(String),
}

/// The node id, the cluster id (once known) and the token peers must present.
pub struct ClusterIdentity {
    node_id: NodeId,
    cluster_id: RwLock<Option<String>>,
    token: String,
    store: Store,
}

impl ClusterIdentity {
    pub fn load(store: Store, token: String) -> Result<ClusterIdentity, StoreError> {
        Ok(ClusterIdentity { node_id: store.node_id()?, cluster_id: RwLock::new(store.cluster_id()?), token, store })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the cluster id durably; used when this node founds a cluster.
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), StoreError> {
        self.store.set_cluster_id(cluster_id)?;
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = Some(cluster_id.to_string());
        Ok(())
    }

    /// Checks the bearer token in constant time.
    pub fn check_token(&self, authorization: Option<&str>) -> Result<(), IdentityError> {
        let presented = authorization.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(())
        } else {
            Err(IdentityError::BadToken)
        }
    }

    /// Checks the target node and cluster of a peer call. A node that belongs to no cluster yet
    /// joins the caller's (the caller already proved it holds the cluster token).
    pub fn check_peer_call(&self, target: Option<&str>, cluster: Option<&str>) -> Result<(), IdentityError> {
        let requested = target.unwrap_or("");
        if requested.parse::<NodeId>().ok() != Some(self.node_id) {
            return Err(IdentityError::WrongNode { local: self.node_id, requested: requested.to_string() });
        }
        let cluster = cluster.unwrap_or("");
        match self.cluster_id() {
            Some(local) if local == cluster => Ok(()),
            Some(local) => Err(IdentityError::WrongCluster { local, requested: cluster.to_string() }),
            None if cluster.is_empty() => Err(IdentityError::MissingCluster),
            None => {
                tracing::info!(cluster_id = cluster, "joining cluster on first contact from its leader");
                self.set_cluster_id(cluster).map_err(|e| IdentityError::Store(e.to_string()))
            }
        }
    }
}
