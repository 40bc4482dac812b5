//! Key layout inside the column families. Name segments never contain `\0` (the model refuses
//! it), so `\0` separates them and a namespace prefix selects exactly its configs.

use crate::model::{ConfigKey, Namespace};

pub const NODE_ID: &[u8] = b"node_id";
pub const CLUSTER_ID: &[u8] = b"cluster_id";
pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const LAST_PURGED: &[u8] = b"last_purged";
pub const LAST_APPLIED: &[u8] = b"last_applied";
pub const MEMBERSHIP: &[u8] = b"membership";
pub const CURRENT_SNAPSHOT: &[u8] = b"current";

/// Log entries are keyed by big-endian index so iteration order is index order.
pub fn log_index(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn record_prefix(ns: &Namespace) -> Vec<u8> {
    format!("c\0{}\0{}\0{}\0", ns.tenant, ns.app, ns.env).into_bytes()
}

pub fn record(key: &ConfigKey) -> Vec<u8> {
    let mut out = record_prefix(&key.namespace());
    out.extend_from_slice(key.name.as_bytes());
    out
}

pub fn version(key: &ConfigKey, version: u64) -> Vec<u8> {
    let mut out = format!("v\0{}\0{}\0{}\0{}\0", key.tenant, key.app, key.env, key.name).into_bytes();
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// Bounds that cover every key of the state-machine data.
pub const SM_DATA_START: &[u8] = b"\x00";
pub const SM_DATA_END: &[u8] = b"\xff";
