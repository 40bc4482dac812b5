//! The Raft network seam, outbound: openraft's `RaftNetworkFactory`/`RaftNetwork` over the pooled
//! [`PeerClient`]. Connection failures become `Unreachable` so openraft backs off (exponentially,
//! capped); other failures become `NetworkError` and are retried by openraft on its next tick.

use std::time::Duration;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};

use super::{PeerCallError, PeerClient};
use crate::types::{typ, NodeId, PeerNode, TypeConfig};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// Hands out one connection object per target; all share the pooled client.
#[derive(Clone)]
pub struct RaftNetworkClient {
    peers: PeerClient,
}

impl RaftNetworkClient {
    pub fn new(peers: PeerClient) -> Self {
        RaftNetworkClient { peers }
    }
}

/// openraft's handle on one target node.
pub struct PeerConnection {
    peers: PeerClient,
    target: NodeId,
    node: PeerNode,
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkClient {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerConnection {
        PeerConnection { peers: self.peers.clone(), target, node: node.clone() }
    }
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(&self, path: &str, request: &Req, option: &RPCOption) -> Result<Resp, typ::RPCError<E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let reply: Result<Resp, typ::RaftError<E>> = self
            .peers
            .call(&self.node.peer_url, path, self.target, request, option.soft_ttl())
            .await
            .map_err(|e| match &e {
                PeerCallError::Unreachable(_) | PeerCallError::Refused { .. } if e.is_unreachable() => {
                    openraft::error::RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => openraft::error::RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| openraft::error::RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, typ::RPCError> {
        self.rpc(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<typ::InstallSnapshotResponse, typ::RPCError<typ::InstallSnapshotError>> {
        self.rpc(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: typ::VoteRequest, option: RPCOption) -> Result<typ::VoteResponse, typ::RPCError> {
        self.rpc(PATH_VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        // 100 ms, doubling, capped at 2 s: an unreachable peer costs little, and a returning one
        // is picked up within two seconds.
        Backoff::new((0..).map(|attempt: u32| Duration::from_millis(100u64 << attempt.min(4)).min(Duration::from_secs(2))))
    }
}
