//! The Raft log payload: what a client change becomes once it enters consensus, and what applying
//! it answers. Encoded with bincode inside log entries and snapshots.

use serde::{Deserialize, Serialize};

use crate::model::{ConfigKey, Format};

/// A change to the configuration state, replicated through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Store `content` as the next version of `key` and make it current.
    Put { key: ConfigKey, format: Format, content: Vec<u8>, expected_version: Option<u64> },
    /// Make `key` absent; its versions' numbers are never reused.
    Delete { key: ConfigKey, expected_version: Option<u64> },
}

/// The result of applying one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResponse {
    /// A new version was stored and made current.
    Written { version: u64, revision: u64 },
    /// The configuration was deleted; `version` was current before.
    Deleted { version: u64, revision: u64 },
    /// A delete named a configuration that does not exist.
    NotFound,
    /// `expected_version` did not match; `current` is what is current now.
    VersionMismatch { current: Option<u64> },
    /// A blank or membership entry: nothing for a client.
    Noop,
}
