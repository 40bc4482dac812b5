//! Who this node is and which cluster it belongs to, and the check every inbound peer call
//! passes: right token (constant-time), right target node, right cluster. A node without a
//! cluster takes one only from the leader that adds it as a member (`join`); until then it
//! refuses every other peer call, so a stray cluster sharing the token cannot capture it.
//!
//! With peer TLS, a Raft call must also come over a connection whose certificate (signed by the
//! peer CA) names the node in `x-conflux-from-node`, and that node must be a member (voter or
//! learner) of the membership this node knows: [`check_certificate`]. A certificate names a
//! member either as `node-<id>.conflux` or by the host of the peer URL the member was added with,
//! when no other member shares that host (a pod's stable DNS name; certificates issued before the
//! node id existed). The token stays a second factor.

use std::collections::BTreeMap;
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

/// The certificate check of a Raft call over peer TLS. `certificate` (the connection's, verified
/// against the peer CA) must name the node the call says it comes from (`from`) and that node must
/// be in `members` (every voter and learner of the membership this node knows, with the peer URL
/// each was added with). A certificate names a member when it carries `node-<id>.conflux`, or the
/// host of the member's peer URL if that host is the member's alone (on one machine several
/// members share `127.0.0.1`: the host proves nothing there).
///
/// Until `members` names this node (`local`) there is nothing to compare with: a node being added
/// learns the membership from the leader's first calls (and `/raft/join` passes `members: None`).
/// Then the certificate itself is the proof: the handshake checked it against the peer CA and for
/// the client-authentication usage, which only node certificates carry.
pub fn check_certificate(
    certificate: Option<&PeerCertificate>,
    from: Option<&str>,
    local: NodeId,
    members: Option<&BTreeMap<NodeId, String>>,
) -> Result<(), IdentityError> {
    let certificate = certificate.ok_or(IdentityError::NoCertificate)?;
    let claimed = from.unwrap_or("");
    let names_other = || IdentityError::CertificateNamesOtherNode { claimed: claimed.to_string() };
    let node = claimed.parse::<NodeId>().map_err(|_| names_other())?;
    let members = match members {
        Some(members) if members.contains_key(&local) => members,
        _ => return Ok(()),
    };
    if !members.contains_key(&node) {
        return Err(IdentityError::NotAMember { node });
    }
    let by_host = || own_host(members, node).is_some_and(|host| certificate.names_host(&host));
    if certificate.names_node(node) || by_host() {
        Ok(())
    } else {
        Err(names_other())
    }
}

/// The host of `node`'s peer URL, if no other member's peer URL has the same host.
fn own_host(members: &BTreeMap<NodeId, String>, node: NodeId) -> Option<String> {
    let host = |url: &str| reqwest::Url::parse(url).ok()?.host_str().map(str::to_ascii_lowercase);
    let own = host(members.get(&node)?)?;
    let shared = members.iter().any(|(&id, url)| id != node && host(url).as_deref() == Some(own.as_str()));
    (!shared).then_some(own)
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

    /// `openssl req -x509` leaves: SAN `DNS:cfx-1.cfx-peers.prod.svc` (an operator's pod
    /// certificate) and SANs `DNS:node-7.conflux, IP:127.0.0.1` (scripts/certs.sh style).
    const POD_CERT: &str = include_str!("testdata/pod-cfx-1.pem");
    const NODE_CERT: &str = include_str!("testdata/node-7.pem");

    fn certificate(pem: &str) -> PeerCertificate {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        PeerCertificate::from_der(CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM").to_vec())
    }

    fn members(entries: &[(NodeId, &str)]) -> BTreeMap<NodeId, String> {
        entries.iter().map(|(id, url)| (*id, url.to_string())).collect()
    }

    #[test]
    fn a_certificate_naming_a_members_own_peer_host_proves_that_member() {
        let pod = certificate(POD_CERT);
        let cluster = members(&[
            (11, "https://cfx-0.cfx-peers.prod.svc:7001"),
            (42, "https://cfx-1.cfx-peers.prod.svc:7001"),
            (13, "https://cfx-2.cfx-peers.prod.svc:7001"),
        ]);
        let check = |from: &str| check_certificate(Some(&pod), Some(from), 11, Some(&cluster));
        assert_eq!(check("42"), Ok(()), "cfx-1's certificate proves the member added as cfx-1");
        assert_eq!(check("13"), Err(IdentityError::CertificateNamesOtherNode { claimed: "13".into() }));
        assert_eq!(check("99"), Err(IdentityError::NotAMember { node: 99 }));
        assert_eq!(check("cfx-1"), Err(IdentityError::CertificateNamesOtherNode { claimed: "cfx-1".into() }));
        // The host is compared without case, port or scheme, but it must be the whole host.
        let upper =
            members(&[(11, "https://cfx-0.cfx-peers.prod.svc:7001"), (42, "https://CFX-1.cfx-peers.prod.svc:9")]);
        assert_eq!(check_certificate(Some(&pod), Some("42"), 11, Some(&upper)), Ok(()));
        let longer = members(&[(11, "https://cfx-0.x:7001"), (42, "https://cfx-1.cfx-peers.prod.svc.evil:7001")]);
        assert!(check_certificate(Some(&pod), Some("42"), 11, Some(&longer)).is_err());
    }

    #[test]
    fn a_host_shared_by_two_members_proves_neither_so_the_node_name_is_needed() {
        let (pod, node) = (certificate(POD_CERT), certificate(NODE_CERT));
        let local =
            members(&[(7, "https://127.0.0.1:7101"), (8, "https://127.0.0.1:7102"), (9, "https://127.0.0.1:7103")]);
        // node-7's certificate also names 127.0.0.1, the host every member shares.
        assert_eq!(check_certificate(Some(&node), Some("7"), 9, Some(&local)), Ok(()));
        assert_eq!(
            check_certificate(Some(&node), Some("8"), 9, Some(&local)),
            Err(IdentityError::CertificateNamesOtherNode { claimed: "8".into() })
        );
        let shared = members(&[
            (1, "https://cfx-1.cfx-peers.prod.svc:1"),
            (2, "https://cfx-1.cfx-peers.prod.svc:2"),
            (3, "https://a:3"),
        ]);
        assert!(check_certificate(Some(&pod), Some("1"), 3, Some(&shared)).is_err());
        assert!(check_certificate(Some(&pod), Some("2"), 3, Some(&shared)).is_err());
    }

    #[test]
    fn before_it_knows_its_membership_a_node_needs_a_certificate_but_no_name() {
        let pod = certificate(POD_CERT);
        assert_eq!(check_certificate(None, Some("42"), 5, None), Err(IdentityError::NoCertificate));
        assert_eq!(check_certificate(Some(&pod), Some("42"), 5, None), Ok(()));
        let without_me = members(&[(42, "https://cfx-0.cfx-peers.prod.svc:7001")]);
        assert_eq!(check_certificate(Some(&pod), Some("42"), 5, Some(&without_me)), Ok(()));
        assert_eq!(
            check_certificate(Some(&pod), Some("leader"), 5, None),
            Err(IdentityError::CertificateNamesOtherNode { claimed: "leader".into() })
        );
    }
}
