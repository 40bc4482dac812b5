//! Resolve: what one client (its labels and id) receives for one config, decided by the config's
//! current release and read from this node's applied state.

use super::Error;
use crate::model::config::VersionMeta;
use crate::model::release::{self, Labels, Rule};
use crate::model::ConfigKey;
use crate::store::Store;

/// The version a client receives and why.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub meta: VersionMeta,
    pub content: Vec<u8>,
    pub release: u64,
    pub rule_index: usize,
    pub rule: Rule,
}

/// Resolves `key` for a client; `None` when the config does not exist or is deleted.
pub fn resolve(
    store: &Store,
    key: &ConfigKey,
    labels: &Labels,
    client_id: Option<&str>,
) -> Result<Option<Resolution>, Error> {
    let Some(record) = store.config_record(key)? else { return Ok(None) };
    let Some(current) = record.release else { return Ok(None) };
    let config_id = key.to_string();
    let rule_index = release::evaluate(&current.rules, &config_id, labels, client_id).ok_or_else(|| {
        Error::Storage(format!("release {} of {key} has no rule matching every client", current.number))
    })?;
    let rule =
        current.rules.get(rule_index).cloned().ok_or_else(|| Error::Storage(format!("rule {rule_index} of {key}")))?;
    let missing = || {
        Error::Storage(format!(
            "release {} of {key} names version {} which is not stored",
            current.number, rule.version
        ))
    };
    let meta = store.version_meta(key, rule.version)?.ok_or_else(missing)?;
    let content = store.version_content(key, rule.version)?.ok_or_else(missing)?;
    Ok(Some(Resolution { meta, content, release: current.number, rule_index, rule }))
}
