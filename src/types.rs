//! Raft type configuration: the one place that names openraft's generic parameters for Conflux,
//! plus short aliases for the openraft types the rest of the crate passes around.

use std::fmt;

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
    /// Conflux's openraft type configuration. Leader ids are openraft's default (term, node id),
    /// which is what 0.9 stored, so data written by 0.9 decodes unchanged.
    pub TypeConfig:
        D = CommandBatch,
        R = Vec<CommandResponse>,
        NodeId = NodeId,
        Node = PeerNode,
);

/// Aliases for openraft's generic types, fixed to [`TypeConfig`].
pub mod typ {
    use std::io::Cursor;

    use super::TypeConfig;
    use crate::store::StateMachineStore;

    /// The leader id of an entry: (term, node id).
    pub type LeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
    pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
    pub type Entry = openraft::alias::EntryOf<TypeConfig>;
    pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
    pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
    pub type Vote = openraft::alias::VoteOf<TypeConfig>;
    pub type StorageError = openraft::StorageError<TypeConfig>;
    pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
    pub type Membership = openraft::Membership<u64, super::PeerNode>;
    pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
    pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;
    pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<TypeConfig, E>;
    pub type RPCError<E = openraft::error::Infallible> = openraft::error::RPCError<TypeConfig, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<TypeConfig>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    pub type LinearizableReadError = openraft::error::LinearizableReadError<TypeConfig>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<TypeConfig>;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
    pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
    pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
    pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
    pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
    pub type InstallSnapshotError = openraft_legacy::network_v1::InstallSnapshotError;
    pub type InstallSnapshotRequest = openraft_legacy::network_v1::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft_legacy::network_v1::InstallSnapshotResponse<TypeConfig>;
}
