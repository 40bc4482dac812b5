//! Fuzz target `store_records`: what a node reads back from its RocksDB, decoded by
//! `store::decode` as `store::{reads, apply, views, log_store, state_machine}` decode it, then used
//! as those readers use it (retention over a record's kept versions, release evaluation, audit
//! filters); and the key layout of `store::keys`, whose ranges must select exactly one subtree.
//!
//! The first byte selects the record type (or the key-layout check); the rest is the stored value.

#![no_main]

use conflux::model::access::TokenRecord;
use conflux::model::audit::{AuditFilter, AuditRecord};
use conflux::model::config::{versions_to_drop, Release, VersionMeta};
use conflux::model::hierarchy::{AppRecord, EnvRecord, TenantRecord};
use conflux::model::release::{self, Labels};
use conflux::model::{ConfigKey, ConfigRecord, Namespace};
use conflux::store::keys;
use conflux::store::state_machine::{SnapshotPayload, StoredSnapshot};
use conflux::types::typ;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes as the store does; what decodes must encode again (apply writes records it read).
fn decode<T: DeserializeOwned + Serialize>(what: &'static str, raw: &[u8]) -> Option<T> {
    let value: T = conflux::store::decode(what, raw).ok()?;
    bincode::serialize(&value).expect("a decoded value encodes");
    Some(value)
}

fn evaluate(release: &Release) {
    let labels: Labels = [("zone".to_string(), "a".to_string())].into();
    let _ = release::validate(&release.rules, |_| true);
    for client in [None, Some("pod-1")] {
        if let Some(winner) = release::evaluate(&release.rules, "t/a/e/c", &labels, client) {
            assert!(winner < release.rules.len());
        }
    }
}

/// Names from raw bytes, split at 0xff; the key layout must hold for every name the model accepts.
fn key_layout(raw: &[u8]) {
    let mut parts = raw.split(|b| *b == 0xff).map(String::from_utf8_lossy);
    let mut next = || parts.next().unwrap_or_default().into_owned();
    let (tenant, app, env, name, other) = (next(), next(), next(), next(), next());
    let Ok(key) = ConfigKey::new(&tenant, &app, &env, &name) else { return };
    let namespace = Namespace::new(&tenant, &app, &env).expect("a key's namespace is valid");
    let inside = |ranges: &[(Vec<u8>, Vec<u8>)], key: &[u8]| {
        ranges.iter().any(|(start, end)| key >= start.as_slice() && key < end.as_slice())
    };
    let under_config = [
        keys::record(&key),
        keys::version(&key, 7),
        keys::version_meta(&key, 7),
        keys::release(&key, 7),
        keys::schema(&key),
    ];
    for subtree in [keys::tenant_subtree(&tenant), keys::app_subtree(&tenant, &app), keys::env_subtree(&namespace)] {
        for held in &under_config {
            assert!(inside(&subtree, held), "a config's key lies in its subtrees");
        }
        assert!(!inside(&subtree, &keys::tenant(&tenant)));
        assert!(!inside(&subtree, &keys::audit(&tenant, 1, 0)), "the audit log outlives its tenant");
    }
    assert!(keys::version_meta(&key, 7).starts_with(&keys::version_meta_prefix(&key)));
    assert!(keys::release(&key, 7).starts_with(&keys::release_prefix(&key)));
    assert!(keys::record(&key).starts_with(&keys::record_prefix(&namespace)));
    assert!(keys::version_meta(&key, 2) < keys::version_meta(&key, 10));
    assert!(keys::audit(&tenant, 5, u32::MAX) < keys::audit(&tenant, 6, 0));
    // A different name at any level selects a disjoint subtree.
    if let Ok(sibling) = ConfigKey::new(&other, &app, &env, &name) {
        if other != tenant {
            assert!(!inside(&keys::tenant_subtree(&tenant), &keys::record(&sibling)));
            assert!(!keys::audit(&other, 1, 0).starts_with(&keys::audit_prefix(&tenant)));
        }
    }
    if let Ok(sibling) = ConfigKey::new(&tenant, &other, &env, &name) {
        if other != app {
            assert!(!inside(&keys::app_subtree(&tenant, &app), &keys::record(&sibling)));
        }
    }
    if let Ok(sibling) = ConfigKey::new(&tenant, &app, &other, &name) {
        if other != env {
            assert!(!inside(&keys::env_subtree(&namespace), &keys::version(&sibling, 1)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, raw)) = data.split_first() else { return };
    match selector % 16 {
        0 => {
            if let Some(record) = decode::<ConfigRecord>("config record", raw) {
                let keep = raw.len() as u32;
                let dropped = versions_to_drop(&record.kept_versions, keep, record.release.as_ref());
                assert!(dropped.len() <= record.kept_versions.len());
                if let Some(release) = &record.release {
                    evaluate(release);
                }
            }
        }
        1 => {
            decode::<VersionMeta>("version metadata", raw);
        }
        2 => {
            if let Some(release) = decode::<Release>("release", raw) {
                evaluate(&release);
            }
        }
        3 => {
            decode::<TenantRecord>("tenant record", raw);
        }
        4 => {
            decode::<AppRecord>("app record", raw);
        }
        5 => {
            decode::<EnvRecord>("env record", raw);
        }
        6 => {
            decode::<TokenRecord>("token record", raw);
        }
        7 => {
            if let Some(record) = decode::<AuditRecord>("audit record", raw) {
                let _ = AuditFilter::default().matches(&record);
                let by_resource = AuditFilter { resource: Some("t/a".into()), ..AuditFilter::default() };
                let _ = by_resource.matches(&record);
            }
        }
        8 => {
            decode::<typ::Entry>("log entry", raw);
        }
        9 => {
            decode::<typ::Vote>("log metadata", raw);
        }
        10 => {
            decode::<Option<typ::LogId>>("log metadata", raw);
        }
        11 => {
            decode::<typ::StoredMembership>("membership", raw);
        }
        12 => {
            decode::<SnapshotPayload>("snapshot payload", raw);
        }
        13 => {
            decode::<StoredSnapshot>("snapshot", raw);
        }
        _ => key_layout(raw),
    }
});
