//! How the operator reaches nodes: the [`NodeAdmin`] seam over the admin API, and its real
//! implementation on `conflux::client::Client`. Tests put an in-memory cluster or real local
//! processes behind the same trait; the reconcile code never knows which.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use conflux::{
    client::{Client, ClientError, HostAddress},
    wire,
};
use futures::{future::BoxFuture, stream::BoxStream};
use tokio::io::AsyncWrite;

use crate::{crd::NodeId, resources::Names};

/// What a node reports about a backup it streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTaken {
    pub cluster_id: String,
    pub revision: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What a node reports after a restore or a quorum-loss recovery made it the single voter of a
/// new cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub revision: u64,
}

/// A backup file on its way to a node, read from the object store chunk by chunk.
pub type BackupBody = BoxStream<'static, std::io::Result<Bytes>>;

/// The admin calls the operator makes. `endpoint` is where the pod's admin API is reached.
pub trait NodeAdmin: Send + Sync {
    fn status<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::ClusterStatus, ClientError>>;
    fn init<'a>(&'a self, endpoint: &'a str, token: &'a str) -> BoxFuture<'a, Result<wire::InitResult, ClientError>>;
    fn add_learner<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<wire::LearnerResult, ClientError>>;
    fn set_voters<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        voters: Vec<NodeId>,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>>;
    fn remove_member<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>>;
    /// Hands leadership to the most caught-up other voter.
    fn transfer_leader<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::LeaderTransfer, ClientError>>;

    /// The CA the members of the cluster `names` present certificates from (`None`: plain HTTP).
    /// The controller says so before each reconcile's calls. Harnesses whose nodes speak plain
    /// HTTP keep this default, which trusts nothing more.
    fn trust(&self, _names: &Names, _ca_pem: Option<&str>) {}
    /// Streams a consistent backup of the node's applied state (`GET /admin/backup`) into `out`.
    fn backup<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        out: &'a mut (dyn AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<BackupTaken, ClientError>>;
    /// Makes a pristine node the single voter of a new cluster holding `body` (`POST /admin/restore`).
    fn restore<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        body: BackupBody,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>>;
    /// Makes a member of cluster `cluster_id` that lost its quorum the single voter of a new
    /// cluster, keeping everything it applied (`POST /admin/recover`).
    fn recover<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>>;

    /// Where the admin API of the pod at `ordinal` is reached. In a cluster this is the peer URL
    /// the pod advertises; a test harness may map it elsewhere.
    fn endpoint(&self, names: &Names, ordinal: u32) -> String {
        names.peer_url(ordinal)
    }

    /// The peer URL a new member at `ordinal` is added with (what the pod advertises).
    fn peer_url(&self, names: &Names, ordinal: u32) -> String {
        names.peer_url(ordinal)
    }

    /// The ordinal a member's peer URL belongs to; `None` for a URL this cluster never built.
    fn ordinal_of(&self, names: &Names, peer_url: &str) -> Option<u32> {
        names.ordinal_of_peer_url(peer_url)
    }
}

/// [`NodeAdmin`] over HTTP with the node crate's typed client; one client per endpoint, token and
/// CA. An endpoint under a cluster's peer domain (`<name>-peers.<ns>.svc`) whose CA the controller
/// named is reached over https trusting only that CA.
#[derive(Default)]
pub struct HttpNodeAdmin {
    clients: Mutex<HashMap<ClientKey, Client>>,
    /// Peer domain → CA (PEM).
    trusted: Mutex<HashMap<String, String>>,
    /// Hosts reached at a fixed address instead of through DNS (an operator outside the cluster).
    resolve: Vec<HostAddress>,
}

/// Endpoint, token and CA (PEM) of a cached client.
type ClientKey = (String, String, Option<String>);

fn peer_domain(names: &Names) -> String {
    format!(".{}.{}.svc", names.peer_service(), names.namespace)
}

/// Bound on a status call, so one unreachable pod cannot stall a reconcile.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

impl HttpNodeAdmin {
    pub fn new() -> Arc<HttpNodeAdmin> {
        Arc::new(HttpNodeAdmin::default())
    }

    /// An admin that reaches each host in `resolve` at its address, not through DNS (like the
    /// nodes' `--peer-resolve`); https endpoints only, as only they are named by host.
    pub fn resolving(resolve: Vec<HostAddress>) -> Arc<HttpNodeAdmin> {
        Arc::new(HttpNodeAdmin { resolve, ..HttpNodeAdmin::default() })
    }

    fn client(&self, endpoint: &str, token: &str) -> Result<Client, ClientError> {
        let host = endpoint.split("://").nth(1).unwrap_or(endpoint).split(':').next().unwrap_or_default();
        let ca = {
            let trusted = self.trusted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            trusted.iter().find(|(domain, _)| host.ends_with(domain.as_str())).map(|(_, ca)| ca.clone())
        };
        let key = (endpoint.to_string(), token.to_string(), ca.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let token = Some(token.to_string());
        let client = match &ca {
            Some(ca) => Client::with_ca_resolving(endpoint, token, ca.as_bytes(), &self.resolve)?,
            None => Client::new(endpoint, token),
        };
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl NodeAdmin for HttpNodeAdmin {
    fn trust(&self, names: &Names, ca_pem: Option<&str>) {
        let mut trusted = self.trusted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match ca_pem {
            Some(ca) => trusted.insert(peer_domain(names), ca.to_string()),
            None => trusted.remove(&peer_domain(names)),
        };
    }

    fn status<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::ClusterStatus, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
            let client = client?;
            match tokio::time::timeout(STATUS_TIMEOUT, client.status()).await {
                Ok(answer) => answer,
                Err(_) => {
                    Err(ClientError::Unexpected { status: 0, body: format!("no answer within {STATUS_TIMEOUT:?}") })
                }
            }
        })
    }

    fn init<'a>(&'a self, endpoint: &'a str, token: &'a str) -> BoxFuture<'a, Result<wire::InitResult, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client?.init().await })
    }

    fn add_learner<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<wire::LearnerResult, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client?.add_learner(node_id, peer_url, None).await })
    }

    fn set_voters<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        voters: Vec<NodeId>,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client?.set_voters(voters).await })
    }

    fn remove_member<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client?.remove_member(node_id).await })
    }

    fn transfer_leader<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::LeaderTransfer, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client?.transfer_leader(None).await })
    }

    fn backup<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        out: &'a mut (dyn AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<BackupTaken, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
            let summary = client?.backup(out).await?;
            Ok(BackupTaken {
                cluster_id: summary.cluster_id,
                revision: summary.revision,
                bytes: summary.bytes,
                sha256: summary.sha256,
            })
        })
    }

    fn restore<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        body: BackupBody,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
            // Streamed: each chunk read from the destination is sent on, none is kept.
            let result = client?.restore(reqwest::Body::wrap_stream(body)).await?;
            Ok(Rebuilt { node_id: result.node_id, cluster_id: result.cluster_id, revision: result.revision })
        })
    }

    fn recover<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
            let result = client?.recover(cluster_id).await?;
            Ok(Rebuilt { node_id: result.node_id, cluster_id: result.cluster_id, revision: result.revision })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_a_cluster_with_a_trusted_ca_are_reached_with_it_and_others_are_not() {
        let admin = HttpNodeAdmin::default();
        let names = Names { cluster: "cfx".into(), namespace: "prod".into(), tls: true };
        // An unusable CA makes building the client fail: proof it is the one applied.
        admin.trust(&names, Some("not a certificate"));
        assert!(matches!(admin.client(&names.peer_url(0), "t"), Err(ClientError::NoCaCertificate)));
        assert!(admin.client("https://cfx-0.cfx-peers.other.svc:7001", "t").is_ok(), "another namespace");
        assert!(admin.client("https://cfx2-0.cfx2-peers.prod.svc:7001", "t").is_ok(), "another cluster");
        admin.trust(&names, None);
        assert!(admin.client(&names.peer_url(0), "t").is_ok());
    }
}
