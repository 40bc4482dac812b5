//! Resolve: what one client (its labels and id) receives for one config, decided by the config's
//! current release, from a consistent view of this node's applied state.

use std::sync::Arc;

use super::Error;
use crate::model::release::{self, Labels, Rule};
use crate::model::ConfigKey;
use crate::store::{ConfigView, Store, VersionBody};

/// The version a client receives and why.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub body: Arc<VersionBody>,
    pub release: u64,
    pub rule_index: usize,
    pub rule: Rule,
}

/// Resolves `key` for a client from the node's current state; `None` when the config does not
/// exist or is deleted.
pub fn resolve(
    store: &Store,
    key: &ConfigKey,
    labels: &Labels,
    client_id: Option<&str>,
) -> Result<Option<Resolution>, Error> {
    resolve_in(&store.config_view(key)?, key, labels, client_id)
}

/// Resolves `key` (whose view `view` is) for a client.
pub fn resolve_in(
    view: &ConfigView,
    key: &ConfigKey,
    labels: &Labels,
    client_id: Option<&str>,
) -> Result<Option<Resolution>, Error> {
    let Some(current) = &view.release else { return Ok(None) };
    let config_id = key.to_string();
    let rule_index = release::evaluate(&current.rules, &config_id, labels, client_id).ok_or_else(|| {
        Error::Storage(format!("release {} of {key} has no rule matching every client", current.number))
    })?;
    let rule =
        current.rules.get(rule_index).cloned().ok_or_else(|| Error::Storage(format!("rule {rule_index} of {key}")))?;
    let body = current.versions.get(&rule.version).cloned().ok_or_else(|| {
        Error::Storage(format!(
            "release {} of {key} names version {} which is not stored",
            current.number, rule.version
        ))
    })?;
    Ok(Some(Resolution { body, release: current.number, rule_index, rule }))
}
