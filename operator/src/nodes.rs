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
    client::{Client, ClientError},
    wire,
};
use futures::{future::BoxFuture, stream::BoxStream, TryStreamExt};
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

/// [`NodeAdmin`] over HTTP with the node crate's typed client; one client per endpoint.
#[derive(Default)]
pub struct HttpNodeAdmin {
    clients: Mutex<HashMap<(String, String), Client>>,
}

/// Bound on a status call, so one unreachable pod cannot stall a reconcile.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

impl HttpNodeAdmin {
    pub fn new() -> Arc<HttpNodeAdmin> {
        Arc::new(HttpNodeAdmin::default())
    }

    fn client(&self, endpoint: &str, token: &str) -> Client {
        let key = (endpoint.to_string(), token.to_string());
        let mut clients = match self.clients.lock() {
            Ok(clients) => clients,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients.entry(key).or_insert_with(|| Client::new(endpoint, Some(token.to_string()))).clone()
    }
}

impl NodeAdmin for HttpNodeAdmin {
    fn status<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::ClusterStatus, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
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
        Box::pin(async move { client.init().await })
    }

    fn add_learner<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<wire::LearnerResult, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client.add_learner(node_id, peer_url, None).await })
    }

    fn set_voters<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        voters: Vec<NodeId>,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client.set_voters(voters).await })
    }

    fn remove_member<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move { client.remove_member(node_id).await })
    }
    fn backup<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        out: &'a mut (dyn AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<BackupTaken, ClientError>> {
        let client = self.client(endpoint, token);
        Box::pin(async move {
            let summary = client.backup(out).await?;
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
            // The node client sends a restore as one body: the whole backup is held here.
            let chunks: Vec<Bytes> = body.try_collect().await.map_err(ClientError::Write)?;
            let result = client.restore(chunks.concat()).await?;
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
            let result = client.recover(cluster_id).await?;
            Ok(Rebuilt { node_id: result.node_id, cluster_id: result.cluster_id, revision: result.revision })
        })
    }
}
