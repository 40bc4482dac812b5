//! The Raft network seam, outbound: openraft's `RaftNetworkFactory` over the pooled [`PeerClient`],
//! through openraft-legacy's `RaftNetwork` (v1) adapter, which sends snapshots in chunks. Connection failures become `Unreachable` so openraft backs off (exponentially,
//! capped); other failures become `NetworkError` and are retried by openraft on its next tick.

use std::time::Duration;

use std::io::Cursor;

use openraft::error::{NetworkError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory};
use openraft_legacy::network_v1::{Adapter, RaftNetwork};

use super::{PeerCallError, PeerClient};
use crate::types::{typ, NodeId, PeerNode, TypeConfig};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub const PATH_TRANSFER_LEADER: &str = "/raft/transfer-leader";

/// Most bytes of entries sent in one AppendEntries. openraft 0.9 caps batches only by count, and
/// the whole round trip must fit in the heartbeat interval, so a larger batch is cut here and
/// reported as a partial success; openraft sends the rest next.
pub const APPEND_BYTES_BUDGET: u64 = 4 * 1024 * 1024;

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
    type Network = Adapter<TypeConfig, PeerConnection, Cursor<Vec<u8>>>;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerConnection { peers: self.peers.clone(), target, node: node.clone() }.into_v2()
    }
}

impl PeerConnection {
    async fn rpc<Req, Resp, E>(&self, path: &str, request: &Req, option: &RPCOption) -> Result<Resp, typ::RPCError<E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let reply: Result<Resp, typ::RaftError<E>> = self.send(path, request, option).await?;
        reply.map_err(|e| {
            openraft::error::RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e))
        })
    }

    /// One call; transport failures become `Unreachable` (openraft backs off) or `Network`.
    async fn send<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, openraft::error::RPCError<TypeConfig, E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error,
    {
        self.peers.call(&self.node.peer_url, path, self.target, request, option.soft_ttl()).await.map_err(
            |e| match &e {
                PeerCallError::Unreachable(_) | PeerCallError::Refused { .. } if e.is_unreachable() => {
                    openraft::error::RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => openraft::error::RPCError::Network(NetworkError::new(&e)),
            },
        )
    }
}

/// How many leading entries fit in [`APPEND_BYTES_BUDGET`]; always at least one.
fn entries_within_budget(entries: &[typ::Entry]) -> usize {
    let mut bytes = 0u64;
    for (count, entry) in entries.iter().enumerate() {
        bytes += bincode::serialized_size(entry).unwrap_or(APPEND_BYTES_BUDGET);
        if bytes > APPEND_BYTES_BUDGET && count > 0 {
            return count;
        }
    }
    entries.len()
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        mut rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, typ::RPCError> {
        let keep = entries_within_budget(&rpc.entries);
        if keep == rpc.entries.len() {
            return self.rpc(PATH_APPEND, &rpc, &option).await;
        }
        rpc.entries.truncate(keep);
        let last_sent = rpc.entries.last().map(|e| e.log_id);
        let response = self.rpc(PATH_APPEND, &rpc, &option).await?;
        Ok(match response {
            openraft::raft::AppendEntriesResponse::Success => {
                openraft::raft::AppendEntriesResponse::PartialSuccess(last_sent)
            }
            other => other,
        })
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

    /// The leader hands over leadership; a receiver that fails (openraft stops there) is reported
    /// as unreachable, since this call's error type cannot carry a remote error.
    async fn transfer_leader(
        &mut self,
        rpc: typ::TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<typ::TransferLeaderResponse, openraft::error::RPCError<TypeConfig>> {
        let reply: Result<typ::TransferLeaderResponse, openraft::error::Fatal<TypeConfig>> =
            self.send(PATH_TRANSFER_LEADER, &rpc, &option).await?;
        reply.map_err(|e| openraft::error::RPCError::Unreachable(Unreachable::new(&e)))
    }

    fn backoff(&self) -> Backoff {
        // 100 ms, doubling, capped at 2 s: an unreachable peer costs little, and a returning one
        // is picked up within two seconds.
        Backoff::new(
            (0..).map(|attempt: u32| Duration::from_millis(100u64 << attempt.min(4)).min(Duration::from_secs(2))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Change, Command, CommandBatch, Origin};
    use crate::model::{ConfigKey, Format};

    fn entry_of(bytes: usize, index: u64) -> typ::Entry {
        let change = Change::WriteVersion {
            key: ConfigKey::new("t", "a", "e", "n").unwrap(),
            format: Format::Text,
            content: vec![b'x'; bytes],
            message: String::new(),
            expected_version: None,
            checked_schema: None,
            format_from_config: false,
        };
        let command = Command { origin: Origin::new("test", "r"), change };
        openraft::Entry {
            log_id: typ::LogId::new(typ::LeaderId { term: 1, node_id: 1 }, index),
            payload: openraft::EntryPayload::Normal(CommandBatch { time_ms: 0, commands: vec![command] }),
        }
    }

    #[test]
    fn append_batches_are_cut_to_the_byte_budget_but_never_empty() {
        let small: Vec<_> = (0..100).map(|i| entry_of(128, i)).collect();
        assert_eq!(entries_within_budget(&small), 100);
        let megabyte: Vec<_> = (0..10).map(|i| entry_of(1024 * 1024, i)).collect();
        assert_eq!(entries_within_budget(&megabyte), 3);
        let huge = vec![entry_of(6 * 1024 * 1024, 0), entry_of(10, 1)];
        assert_eq!(entries_within_budget(&huge), 1);
        assert_eq!(entries_within_budget(&[]), 0);
    }
}
