//! Key layout inside the column families. Name segments never contain `\0` or `\x01` (the model
//! allows only letters, digits, `.`, `_` and `-`), so `\0` separates them, a prefix ending in `\0`
//! selects exactly one level's children, and the same prefix ending in `\x01` bounds it.
//!
//! `sm_data` holds, per kind, a one-letter tag then the names:
//! `t` tenant, `p` app, `e` env, `c` config record, `v` version content, `m` version metadata,
//! `r` release history, `s` schema, `a` audit (per tenant, by revision then position), `k` access
//! token (by id), `i` idempotency answer (by actor and key), `j` the same by time (for expiry).

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

/// The per-kind tags of `sm_data` keys.
const TENANT: &str = "t";
const APP: &str = "p";
const ENV: &str = "e";
const CONFIG: &str = "c";
const CONTENT: &str = "v";
const META: &str = "m";
const RELEASE: &str = "r";
const SCHEMA: &str = "s";
const AUDIT: &str = "a";
const TOKEN: &str = "k";
const IDEMPOTENCY: &str = "i";
const IDEMPOTENCY_BY_TIME: &str = "j";

/// Every kind of key that lives under a config (and so under its env, app and tenant).
const CONFIG_KINDS: [&str; 5] = [CONFIG, CONTENT, META, RELEASE, SCHEMA];

fn joined(tag: &str, segments: &[&str]) -> Vec<u8> {
    let mut out = tag.as_bytes().to_vec();
    for segment in segments {
        out.push(0);
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

/// `prefix` followed by `\0`: the start of everything under it.
fn children(mut prefix: Vec<u8>) -> Vec<u8> {
    prefix.push(0);
    prefix
}

/// The key range `[prefix\0, prefix\x01)`: exactly the keys under `prefix`.
fn range(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.clone();
    end.push(1);
    (children(prefix), end)
}

fn config_segments(key: &ConfigKey) -> [&str; 4] {
    [&key.tenant, &key.app, &key.env, &key.name]
}

pub fn tenant(tenant: &str) -> Vec<u8> {
    joined(TENANT, &[tenant])
}

pub fn tenant_prefix() -> Vec<u8> {
    children(TENANT.as_bytes().to_vec())
}

pub fn app(tenant: &str, app: &str) -> Vec<u8> {
    joined(APP, &[tenant, app])
}

pub fn app_prefix(tenant: &str) -> Vec<u8> {
    children(joined(APP, &[tenant]))
}

pub fn env(namespace: &Namespace) -> Vec<u8> {
    joined(ENV, &[&namespace.tenant, &namespace.app, &namespace.env])
}

pub fn env_prefix(tenant: &str, app: &str) -> Vec<u8> {
    children(joined(ENV, &[tenant, app]))
}

pub fn record_prefix(ns: &Namespace) -> Vec<u8> {
    children(joined(CONFIG, &[&ns.tenant, &ns.app, &ns.env]))
}

pub fn record(key: &ConfigKey) -> Vec<u8> {
    joined(CONFIG, &config_segments(key))
}

fn numbered(tag: &str, key: &ConfigKey, number: u64) -> Vec<u8> {
    let mut out = children(joined(tag, &config_segments(key)));
    out.extend_from_slice(&number.to_be_bytes());
    out
}

/// The content of one version.
pub fn version(key: &ConfigKey, version: u64) -> Vec<u8> {
    numbered(CONTENT, key, version)
}

/// The metadata of one version.
pub fn version_meta(key: &ConfigKey, version: u64) -> Vec<u8> {
    numbered(META, key, version)
}

pub fn version_meta_prefix(key: &ConfigKey) -> Vec<u8> {
    children(joined(META, &config_segments(key)))
}

pub fn release(key: &ConfigKey, number: u64) -> Vec<u8> {
    numbered(RELEASE, key, number)
}

pub fn release_prefix(key: &ConfigKey) -> Vec<u8> {
    children(joined(RELEASE, &config_segments(key)))
}

pub fn schema(key: &ConfigKey) -> Vec<u8> {
    joined(SCHEMA, &config_segments(key))
}

pub fn audit(tenant: &str, revision: u64, seq: u32) -> Vec<u8> {
    let mut out = audit_prefix(tenant);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

pub fn audit_prefix(tenant: &str) -> Vec<u8> {
    children(joined(AUDIT, &[tenant]))
}

pub fn token(id: &str) -> Vec<u8> {
    joined(TOKEN, &[id])
}

pub fn token_prefix() -> Vec<u8> {
    children(TOKEN.as_bytes().to_vec())
}

pub fn idempotency(actor: &str, key: &str) -> Vec<u8> {
    joined(IDEMPOTENCY, &[actor, key])
}

/// `j\0<time_ms big-endian>\0<actor>\0<key>`: ordered by time, so expiry scans from the start.
pub fn idempotency_by_time(time_ms: u64, actor: &str, key: &str) -> Vec<u8> {
    let mut out = idempotency_by_time_prefix();
    out.extend_from_slice(&time_ms.to_be_bytes());
    for segment in [actor, key] {
        out.push(0);
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

pub fn idempotency_by_time_prefix() -> Vec<u8> {
    children(IDEMPOTENCY_BY_TIME.as_bytes().to_vec())
}

/// The key ranges holding everything under a tenant, except its own record and its audit log
/// (which outlives it).
pub fn tenant_subtree(tenant: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [APP, ENV].iter().chain(CONFIG_KINDS.iter()).map(|tag| range(joined(tag, &[tenant]))).collect()
}

/// The key ranges holding everything under an app, except its own record.
pub fn app_subtree(tenant: &str, app: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [ENV].iter().chain(CONFIG_KINDS.iter()).map(|tag| range(joined(tag, &[tenant, app]))).collect()
}

/// The key ranges holding everything under an env, except its own record.
pub fn env_subtree(namespace: &Namespace) -> Vec<(Vec<u8>, Vec<u8>)> {
    let segments = [namespace.tenant.as_str(), &namespace.app, &namespace.env];
    CONFIG_KINDS.iter().map(|tag| range(joined(tag, &segments))).collect()
}

/// Bounds that cover every key of the state-machine data.
pub const SM_DATA_START: &[u8] = b"\x00";
pub const SM_DATA_END: &[u8] = b"\xff";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_range_holds_its_children_and_nothing_of_a_longer_sibling() {
        let ranges = tenant_subtree("acme");
        let inside = |key: &[u8]| ranges.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice());
        let key = ConfigKey::new("acme", "shop", "prod", "db").unwrap();
        assert!(inside(&record(&key)));
        assert!(inside(&version(&key, 7)));
        assert!(inside(&app("acme", "shop")));
        assert!(!inside(&tenant("acme")), "the tenant's own record is deleted separately");
        assert!(!inside(&audit("acme", 1, 0)), "the audit log outlives the tenant");
        let sibling = ConfigKey::new("acme2", "shop", "prod", "db").unwrap();
        assert!(!inside(&record(&sibling)));
        assert!(!inside(&app("acme2", "shop")));
    }

    #[test]
    fn numbered_keys_sort_by_number() {
        let key = ConfigKey::new("t", "a", "e", "c").unwrap();
        assert!(version_meta(&key, 2) < version_meta(&key, 10));
        assert!(version_meta(&key, 2).starts_with(&version_meta_prefix(&key)));
        assert!(release(&key, 42).starts_with(&release_prefix(&key)));
        assert!(audit("t", 5, 1) < audit("t", 6, 0));
    }
}
