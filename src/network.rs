//! Node-to-node HTTP: the peer client every outbound call goes through (Raft RPCs, forwarded
//! writes and read-index requests, forwarded admin calls), the identity every inbound call is
//! checked against, and the Raft network seam (`client`) and routes (`server`).
//!
//! Every peer request carries the cluster token (`Authorization: Bearer`), the target node id and
//! the cluster id; bodies are bincode.

pub mod client;
pub mod identity;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use identity::ClusterIdentity;

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
}

impl PeerCallError {
    /// Errors after which retrying the same call soon is pointless: the peer is not there, or is
    /// not the node or cluster we meant.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PeerCallError::Unreachable(_) | PeerCallError::Refused { status: 401 | 409 | 421, .. })
    }
}

/// One pooled HTTP client for all peer traffic, plus what every request must carry.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    token: Arc<str>,
    identity: Arc<ClusterIdentity>,
}

impl PeerClient {
    pub fn new(token: Arc<str>, identity: Arc<ClusterIdentity>) -> PeerClient {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .expect("building the peer HTTP client");
        PeerClient { http, token, identity }
    }

    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
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
            .http
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
        let bytes = response.bytes().await.map_err(PeerCallError::Transport)?;
        if !status.is_success() {
            return Err(PeerCallError::Refused {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        bincode::deserialize(&bytes).map_err(PeerCallError::Decode)
    }
}
