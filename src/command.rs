//! The Raft log payload: what client changes become once they enter consensus, and what applying
//! them answers. One log entry carries a [`CommandBatch`]: the writes that concurrent clients sent
//! while the previous entry was being committed. Encoded with bincode inside log entries.

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

/// One log entry's payload: commands applied in order, atomically, all at the entry's index (so
/// they share one revision, as the writes of one etcd transaction do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch(pub Vec<Command>);

impl Command {
    /// Roughly how many bytes this command adds to a log entry.
    pub fn size_hint(&self) -> usize {
        let key_bytes = |k: &ConfigKey| k.tenant.len() + k.app.len() + k.env.len() + k.name.len();
        match self {
            Command::Put { key, content, .. } => key_bytes(key) + content.len(),
            Command::Delete { key, .. } => key_bytes(key),
        }
    }
}

/// The result of applying one command.
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
}
