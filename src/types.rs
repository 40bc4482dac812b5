//! Raft type configuration: the one place that names openraft's generic parameters for Conflux,
//! plus short aliases for the openraft types the rest of the crate passes around.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::command::{CommandBatch, CommandResponse};

pub use crate::wire::NodeId;

/// What the cluster knows about a member: where its peer (Raft + admin) listener is reachable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// Base URL of the member's peer listener, e.g. `http://10.0.0.5:7001`.
    pub peer_url: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer_url)
    }
}

openraft::declare_raft_types!(
    /// Conflux's openraft type configuration.
    pub TypeConfig:
        D = CommandBatch,
        R = Vec<CommandResponse>,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Aliases for openraft's generic types, fixed to [`TypeConfig`].
pub mod typ {
    use super::{NodeId, PeerNode, TypeConfig};

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type StorageIOError = openraft::StorageIOError<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = openraft::error::Infallible> = openraft::error::RPCError<NodeId, PeerNode, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, PeerNode>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, PeerNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, PeerNode>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
}
