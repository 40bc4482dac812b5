//! JSON bodies of the client and admin APIs, shared by the server, the typed client, the CLI and
//! tests. Changing a field here changes the public API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Raft member's id: generated once per data directory, below 2^53 so JSON readers keep it exact.
pub type NodeId = u64;

/// Answer to a successful write or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    pub version: u64,
    pub revision: u64,
}

/// One entry of a namespace listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub name: String,
    pub version: u64,
    pub format: String,
    pub revision: u64,
}

/// Answer to `GET /api/v1/configs/{tenant}/{app}/{env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigList {
    pub configs: Vec<ConfigSummary>,
    pub revision: u64,
}

/// An RFC 9457 problem document; `code` is stable and meant for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub code: String,
    pub detail: String,
}

/// `GET /admin/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub cluster_id: Option<String>,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// On the leader: the last index known replicated to each other member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<BTreeMap<NodeId, u64>>,
}

/// `POST /admin/init` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResult {
    pub node_id: NodeId,
    pub cluster_id: String,
}

/// `POST /admin/learners` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddLearner {
    pub node_id: NodeId,
    pub peer_url: String,
}

/// `POST /admin/learners` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerResult {
    pub node_id: NodeId,
    /// Whether the learner had caught up with the leader's log when the call returned.
    pub caught_up: bool,
    pub matched_index: u64,
}

/// `PUT /admin/voters` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetVoters {
    pub voters: Vec<NodeId>,
}

/// Answer to membership changes: the membership now in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeMap<NodeId, String>,
    pub learners: BTreeMap<NodeId, String>,
    pub log_index: u64,
}
