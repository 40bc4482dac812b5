//! Who this node is and which cluster it belongs to, and the check every inbound peer call
//! passes: right token (constant-time), right target node, right cluster. A node without a
//! cluster takes one only from the leader that adds it as a member (`join`); until then it
//! refuses every other peer call, so a stray cluster sharing the token cannot capture it.
//!
//! With peer TLS, a Raft call must also come over a connection whose certificate (signed by the
//! peer CA) names the node in `x-conflux-from-node`, and that node must be a member (voter or
//! learner) of the membership this node knows: [`check_certificate`]. The token stays a second
//! factor.

use std::collections::BTreeSet;
use std::sync::RwLock;

use subtle::ConstantTimeEq;

use crate::store::{Store, StoreError};
use crate::tls::PeerCertificate;
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
    #[error("this node belongs to no cluster yet: it joins one when a leader adds it as a member")]
    NotJoined,
    #[error("cluster id {0:?} is not 1 to {MAX_CLUSTER_ID_LEN} letters, digits, '-' or '_'")]
    InvalidCluster(String),
    #[error("could not record the cluster id: {0}")]
    Store(String),
    #[error("a Raft call over peer TLS must present a node certificate signed by the peer CA")]
    NoCertificate,
    #[error("the call says it comes from node {claimed:?}, which its certificate does not name")]
    CertificateNamesOtherNode { claimed: String },
    #[error("node {node} is not a member of this cluster")]
    NotAMember { node: NodeId },
}

/// The longest cluster id a leader may name; generated ids are 32 hex digits.
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// A cluster id travels in a header of every peer call this node makes, so one taken from a
/// peer must be short and plain: a control character or a non-ASCII byte would make every
/// later call fail to build, cutting the node off its cluster for good.
pub fn check_cluster_id(cluster_id: &str) -> Result<(), IdentityError> {
    if cluster_id.is_empty() {
        return Err(IdentityError::MissingCluster);
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if cluster_id.len() > MAX_CLUSTER_ID_LEN || !cluster_id.bytes().all(plain) {
        let shown: String = cluster_id.chars().take(MAX_CLUSTER_ID_LEN).collect();
        return Err(IdentityError::InvalidCluster(shown));
    }
    Ok(())
}

/// The node id, the cluster id (once known) and the token peers must present.
pub struct ClusterIdentity {
    node_id: NodeId,
    cluster_id: RwLock<Option<String>>,
    token: String,
    store: Store,
    /// Held shared by every inbound Raft call (append, vote, snapshot) while it runs, exclusively
    /// while this node changes clusters (restore, recover): see [`ClusterIdentity::pause_peers`].
    gate: tokio::sync::RwLock<()>,
}

impl ClusterIdentity {
    pub fn load(store: Store, token: String) -> Result<ClusterIdentity, StoreError> {
        let cluster_id = RwLock::new(store.cluster_id()?);
        Ok(ClusterIdentity { node_id: store.node_id()?, cluster_id, token, store, gate: Default::default() })
    }

    /// Held by an inbound Raft call from before its identity check until its answer.
    pub async fn admit(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Waits (up to `within`) until no inbound Raft call is running and holds new ones back
    /// until the guard is dropped: a cluster id changed under it ([`ClusterIdentity::fence`])
    /// refuses every later call of the old cluster, and none is still in Raft. `None` when calls
    /// still ran after `within`.
    pub async fn pause_peers(&self, within: std::time::Duration) -> Option<tokio::sync::RwLockWriteGuard<'_, ()>> {
        tokio::time::timeout(within, self.gate.write()).await.ok()
    }

    /// Changes the cluster id this node answers to, in memory only: restore and recover record
    /// the new one durably with the state it belongs to (`store::InstallPlan`), and put the old
    /// one back if they fail.
    pub fn fence(&self, cluster_id: Option<String>) {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = cluster_id;
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

    /// Checks the target node of a peer call.
    pub fn check_target(&self, target: Option<&str>) -> Result<(), IdentityError> {
        let requested = target.unwrap_or("");
        if requested.parse::<NodeId>().ok() != Some(self.node_id) {
            return Err(IdentityError::WrongNode { local: self.node_id, requested: requested.to_string() });
        }
        Ok(())
    }

    /// Checks the target node and cluster of a peer call. A node that belongs to no cluster yet
    /// refuses it: only [`ClusterIdentity::join`] gives it one.
    pub fn check_peer_call(&self, target: Option<&str>, cluster: Option<&str>) -> Result<(), IdentityError> {
        self.check_target(target)?;
        let cluster = cluster.unwrap_or("");
        match self.cluster_id() {
            Some(local) if local == cluster => Ok(()),
            Some(local) => Err(IdentityError::WrongCluster { local, requested: cluster.to_string() }),
            None => Err(IdentityError::NotJoined),
        }
    }

    /// Joins `cluster_id`, named by the leader that is adding this node as a member (the caller
    /// already proved it holds the cluster token). Joining the cluster this node is in is a no-op.
    pub fn join(&self, cluster_id: &str) -> Result<(), IdentityError> {
        // Checked and set under one lock, so two racing leaders cannot both win.
        let mut current = self.cluster_id.write().unwrap_or_else(|p| p.into_inner());
        match current.as_deref() {
            Some(local) if local == cluster_id => Ok(()),
            Some(local) => Err(IdentityError::WrongCluster { local: local.to_string(), requested: cluster_id.into() }),
            None => {
                check_cluster_id(cluster_id)?;
                tracing::info!(cluster_id, "joining the cluster of the leader adding this node");
                self.store.set_cluster_id(cluster_id).map_err(|e| IdentityError::Store(e.to_string()))?;
                *current = Some(cluster_id.to_string());
                Ok(())
            }
        }
    }
}

/// The certificate check of a Raft call over peer TLS: `certificate` (the connection's, verified
/// against the peer CA) must name the node the call says it comes from (`from`), and that node
/// must be in `members` (every voter and learner of the membership this node knows), unless
/// `members` does not name this node yet (`local`): a node being added learns the membership from
/// the leader's first calls, so until then the certificate is the proof (as for `/raft/join`,
/// which passes `members: None`).
pub fn check_certificate(
    certificate: Option<&PeerCertificate>,
    from: Option<&str>,
    local: NodeId,
    members: Option<&BTreeSet<NodeId>>,
) -> Result<(), IdentityError> {
    let certificate = certificate.ok_or(IdentityError::NoCertificate)?;
    let claimed = from.unwrap_or("");
    let node = match claimed.parse::<NodeId>() {
        Ok(node) if certificate.names_node(node) => node,
        _ => return Err(IdentityError::CertificateNamesOtherNode { claimed: claimed.to_string() }),
    };
    match members {
        Some(members) if members.contains(&local) && !members.contains(&node) => {
            Err(IdentityError::NotAMember { node })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_that_cannot_travel_in_a_header_is_refused() {
        let generated = format!("{:032x}", u128::MAX - 7);
        assert_eq!(check_cluster_id(&generated), Ok(()));
        assert_eq!(check_cluster_id(""), Err(IdentityError::MissingCluster));
        for bad in ["a\nb", "a b", "caf\u{e9}", "x\u{0}", &"a".repeat(MAX_CLUSTER_ID_LEN + 1)] {
            assert!(matches!(check_cluster_id(bad), Err(IdentityError::InvalidCluster(_))), "{bad:?}");
        }
        for good in [generated.as_str(), "a", "prod-eu_1", &"f".repeat(MAX_CLUSTER_ID_LEN)] {
            assert_eq!(check_cluster_id(good), Ok(()));
            assert!(reqwest::header::HeaderValue::from_str(good).is_ok(), "{good:?} must fit in a header");
        }
    }
}
