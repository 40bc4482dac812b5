//! Node-to-node HTTP: the peer client every outbound call goes through (Raft RPCs, forwarded
//! writes and read-index requests, forwarded admin calls), the identity every inbound call is
//! checked against, and the Raft network seam (`client`) and routes (`server`).
//!
//! Every peer request carries the cluster token (`Authorization: Bearer`), the target node id and
//! the cluster id; bodies are bincode.

pub mod client;
pub mod identity;
pub mod server;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use identity::ClusterIdentity;

use crate::client::HostAddress;
use crate::tls::{PeerFiles, TlsError};
use crate::types::NodeId;

pub const HEADER_CLUSTER_ID: &str = "x-conflux-cluster-id";
pub const HEADER_TARGET_NODE: &str = "x-conflux-target-node";
pub const HEADER_FROM_NODE: &str = "x-conflux-from-node";
pub const BINCODE: &str = "application/octet-stream";

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("peer unreachable: {0}")]
    Unreachable(reqwest::Error),
    #[error("peer call failed: {0}")]
    Transport(reqwest::Error),
    #[error("peer refused the call with {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("peer answered with an undecodable body: {0}")]
    Decode(bincode::Error),
    #[error("peer answered with more than {limit} bytes")]
    ReplyTooLarge { limit: usize },
}

impl PeerCallError {
    /// Errors after which retrying the same call soon is pointless: the peer is not there, or is
    /// not the node or cluster we meant.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PeerCallError::Unreachable(_) | PeerCallError::Refused { status: 401 | 409 | 421, .. })
    }
}

/// One pooled HTTP client for all peer traffic, plus what every request must carry. With peer
/// TLS, the client presents this node's certificate and trusts only the peer CA; when those files
/// change, [`PeerClient::reload_tls`] replaces the client (its pool goes with it), so new
/// connections use the new files.
#[derive(Clone)]
pub struct PeerClient {
    http: Arc<RwLock<reqwest::Client>>,
    tls: Option<Arc<PeerFiles>>,
    resolve: Arc<[HostAddress]>,
    token: Arc<str>,
    identity: Arc<ClusterIdentity>,
    max_reply_bytes: usize,
}

fn http_client(tls: Option<&PeerFiles>, resolve: &[HostAddress]) -> Result<reqwest::Client, TlsError> {
    let builder = reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64);
    let builder = crate::client::resolving(builder, resolve);
    let builder = match tls {
        Some(files) => files.client(builder)?,
        None => builder,
    };
    builder.build().map_err(|e| TlsError::PeerClient(e.to_string()))
}

impl PeerClient {
    /// `max_reply_bytes` bounds every answer read (the peer body limit: no honest answer is
    /// larger than what a peer may send); `resolve` names peer hosts reached without DNS
    /// (`--peer-resolve`). Fails when the peer TLS files do not load.
    pub fn new(
        token: Arc<str>,
        identity: Arc<ClusterIdentity>,
        max_reply_bytes: usize,
        tls: Option<PeerFiles>,
        resolve: &[HostAddress],
    ) -> Result<PeerClient, TlsError> {
        let http = Arc::new(RwLock::new(http_client(tls.as_ref(), resolve)?));
        Ok(PeerClient { http, tls: tls.map(Arc::new), resolve: resolve.into(), token, identity, max_reply_bytes })
    }

    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// Builds the client again from the peer TLS files; on failure the previous one stays.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let http = http_client(self.tls.as_deref(), &self.resolve)?;
        *self.http.write().unwrap_or_else(|p| p.into_inner()) = http;
        Ok(())
    }

    fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// POSTs a bincode body to `peer_url + path` on node `target` and decodes the bincode answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer_url: &str,
        path: &str,
        target: NodeId,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerCallError> {
        let body = bincode::serialize(body).map_err(PeerCallError::Decode)?;
        let response = self
            .http()
            .post(format!("{}{}", peer_url.trim_end_matches('/'), path))
            .timeout(timeout)
            .bearer_auth(&*self.token)
            .header(HEADER_TARGET_NODE, target.to_string())
            .header(HEADER_FROM_NODE, self.identity.node_id().to_string())
            .header(HEADER_CLUSTER_ID, self.identity.cluster_id().unwrap_or_default())
            .header(reqwest::header::CONTENT_TYPE, BINCODE)
            .body(body)
            .send()
            .await
            .map_err(|e| if e.is_connect() { PeerCallError::Unreachable(e) } else { PeerCallError::Transport(e) })?;
        let status = response.status();
        let bytes = read_capped(response, self.max_reply_bytes).await?;
        if !status.is_success() {
            return Err(PeerCallError::Refused {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        bincode::deserialize(&bytes).map_err(PeerCallError::Decode)
    }
}

/// Reads a reply's body chunk by chunk, failing as soon as it passes `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, PeerCallError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(PeerCallError::ReplyTooLarge { limit });
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(PeerCallError::Transport)? {
        if bytes.len() + chunk.len() > limit {
            return Err(PeerCallError::ReplyTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer client of a node whose store lives in `dir`.
    pub(crate) fn peer_client(dir: &std::path::Path, max_reply_bytes: usize) -> PeerClient {
        let store = crate::store::Store::open(dir).unwrap();
        let identity = Arc::new(ClusterIdentity::load(store, "a-token-of-sixteen-chars".into()).unwrap());
        PeerClient::new("a-token-of-sixteen-chars".into(), identity, max_reply_bytes, None, &[]).unwrap()
    }

    /// Serves `app` on a free port of 127.0.0.1 and returns its URL.
    pub(crate) async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn replies_larger_than_the_limit_are_refused_without_reading_them_whole() {
        let dir = tempfile::TempDir::new().unwrap();
        let peers = peer_client(dir.path(), 64 * 1024);
        let huge = || async { vec![7u8; 16 * 1024 * 1024] };
        let streamed = || async {
            let chunks = futures::stream::iter((0..256).map(|_| Ok::<_, std::io::Error>(vec![7u8; 64 * 1024])));
            axum::body::Body::from_stream(chunks)
        };
        let small = || async { bincode::serialize(&42u64).unwrap() };
        let app = axum::Router::new()
            .route("/huge", axum::routing::post(huge))
            .route("/streamed", axum::routing::post(streamed))
            .route("/small", axum::routing::post(small));
        let url = serve(app).await;
        for path in ["/huge", "/streamed"] {
            let reply: Result<u64, _> = peers.call(&url, path, 1, &(), Duration::from_secs(5)).await;
            assert!(matches!(reply, Err(PeerCallError::ReplyTooLarge { limit: 65536 })), "{path}: {reply:?}");
        }
        let reply: u64 = peers.call(&url, "/small", 1, &(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply, 42);
    }
}
