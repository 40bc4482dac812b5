//! The configuration model: names (`tenant/app/env/name`) here; formats, schemas, diffs, release
//! rules, the hierarchy, per-config state, audit records and access control in the submodules.
//! **Architecture Invariant:** pure — no IO, no openraft, no HTTP, no clock.

pub mod access;
pub mod audit;
pub mod config;
pub mod diff;
pub mod format;
pub mod hierarchy;
pub mod release;
pub mod schema;

pub use config::ConfigRecord;
pub use format::Format;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest allowed name segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Why a name was refused; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field} must be 1 to {MAX_SEGMENT_LEN} characters long, got {len}")]
    BadLength { field: &'static str, len: usize },
    #[error("{field} may contain only letters, digits, '.', '_' and '-' and must not start with '.': {value:?}")]
    BadCharacters { field: &'static str, value: String },
}

/// The address of one configuration: `tenant / app / env / name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigKey {
    pub tenant: String,
    pub app: String,
    pub env: String,
    pub name: String,
}

/// The `tenant / app / env` namespace that configurations are listed under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Namespace {
    pub tenant: String,
    pub app: String,
    pub env: String,
}

/// Checks one name segment (a tenant, app, env or config name).
pub fn check_segment(field: &'static str, value: &str) -> Result<(), ModelError> {
    if value.is_empty() || value.len() > MAX_SEGMENT_LEN {
        return Err(ModelError::BadLength { field, len: value.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if value.starts_with('.') || !value.chars().all(allowed) {
        return Err(ModelError::BadCharacters { field, value: value.to_string() });
    }
    Ok(())
}

impl Namespace {
    pub fn new(tenant: &str, app: &str, env: &str) -> Result<Self, ModelError> {
        check_segment("tenant", tenant)?;
        check_segment("app", app)?;
        check_segment("env", env)?;
        Ok(Self { tenant: tenant.into(), app: app.into(), env: env.into() })
    }
}

impl ConfigKey {
    pub fn new(tenant: &str, app: &str, env: &str, name: &str) -> Result<Self, ModelError> {
        let ns = Namespace::new(tenant, app, env)?;
        check_segment("name", name)?;
        Ok(Self { tenant: ns.tenant, app: ns.app, env: ns.env, name: name.into() })
    }

    pub fn in_namespace(namespace: &Namespace, name: &str) -> Result<Self, ModelError> {
        check_segment("name", name)?;
        Ok(Self {
            tenant: namespace.tenant.clone(),
            app: namespace.app.clone(),
            env: namespace.env.clone(),
            name: name.into(),
        })
    }

    pub fn namespace(&self) -> Namespace {
        Namespace { tenant: self.tenant.clone(), app: self.app.clone(), env: self.env.clone() }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.tenant, self.app, self.env)
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.tenant, self.app, self.env, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_segment_by_segment() {
        assert!(ConfigKey::new("acme", "shop", "prod", "db.json").is_ok());
        assert_eq!(ConfigKey::new("", "a", "b", "c"), Err(ModelError::BadLength { field: "tenant", len: 0 }));
        assert!(matches!(ConfigKey::new("a", "b/c", "d", "e"), Err(ModelError::BadCharacters { field: "app", .. })));
        assert!(matches!(ConfigKey::new("a", "b", "..", "e"), Err(ModelError::BadCharacters { field: "env", .. })));
        let long = "x".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(ConfigKey::new("a", "b", "c", &long), Err(ModelError::BadLength { field: "name", .. })));
    }
}
