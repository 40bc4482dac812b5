//! Tenants, apps and envs: the records kept for each level of `tenant / app / env / config`, the
//! per-tenant quotas, and the counters that let a delete know whether its level is still in use.

use serde::{Deserialize, Serialize};

/// Per-tenant limits, checked when a change is applied so concurrent writers cannot overshoot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    /// Largest content of one version, in bytes.
    pub max_config_bytes: u64,
    /// Most live configs in the tenant, over all its apps and envs.
    pub max_configs: u64,
    /// Versions kept per config; older ones are dropped unless a current release rule uses them.
    pub max_versions_kept: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas { max_config_bytes: 1024 * 1024, max_configs: 10_000, max_versions_kept: 100 }
    }
}

/// Bounds on what a quota may be set to.
pub const MAX_CONFIG_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
pub const MAX_VERSIONS_KEPT_LIMIT: u32 = 10_000;

/// A change to some of a tenant's quotas; `None` keeps the current (or default) value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUpdate {
    pub max_config_bytes: Option<u64>,
    pub max_configs: Option<u64>,
    pub max_versions_kept: Option<u32>,
}

/// Why a quota update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("max_config_bytes must be 1 to {MAX_CONFIG_BYTES_LIMIT}, got {0}")]
    ConfigBytes(u64),
    #[error("max_configs must be at least 1, got {0}")]
    Configs(u64),
    #[error("max_versions_kept must be 1 to {MAX_VERSIONS_KEPT_LIMIT}, got {0}")]
    VersionsKept(u32),
}

impl QuotaUpdate {
    /// Checks every value that is set.
    pub fn validate(&self) -> Result<(), QuotaError> {
        if let Some(bytes) = self.max_config_bytes.filter(|b| *b == 0 || *b > MAX_CONFIG_BYTES_LIMIT) {
            return Err(QuotaError::ConfigBytes(bytes));
        }
        if let Some(count) = self.max_configs.filter(|c| *c == 0) {
            return Err(QuotaError::Configs(count));
        }
        if let Some(kept) = self.max_versions_kept.filter(|k| *k == 0 || *k > MAX_VERSIONS_KEPT_LIMIT) {
            return Err(QuotaError::VersionsKept(kept));
        }
        Ok(())
    }

    /// `quotas` with every set value replaced.
    pub fn applied_to(&self, quotas: Quotas) -> Quotas {
        Quotas {
            max_config_bytes: self.max_config_bytes.unwrap_or(quotas.max_config_bytes),
            max_configs: self.max_configs.unwrap_or(quotas.max_configs),
            max_versions_kept: self.max_versions_kept.unwrap_or(quotas.max_versions_kept),
        }
    }
}

/// What every level records about itself: a description and when it was created and last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelInfo {
    pub description: String,
    pub created_revision: u64,
    pub created_ms: u64,
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub info: LevelInfo,
    pub quotas: Quotas,
    /// Apps in the tenant.
    pub apps: u64,
    /// Live configs in the tenant, over all its apps and envs (the `max_configs` quota counts these).
    pub configs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub info: LevelInfo,
    /// Envs in the app.
    pub envs: u64,
    /// Live configs in the app, over all its envs.
    pub configs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvRecord {
    pub info: LevelInfo,
    /// Live configs in the env.
    pub configs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_updates_are_checked_and_keep_unset_values() {
        assert_eq!(QuotaUpdate { max_configs: Some(0), ..Default::default() }.validate(), Err(QuotaError::Configs(0)));
        let too_big = QuotaUpdate { max_config_bytes: Some(MAX_CONFIG_BYTES_LIMIT + 1), ..Default::default() };
        assert!(matches!(too_big.validate(), Err(QuotaError::ConfigBytes(_))));
        let zero_kept = QuotaUpdate { max_versions_kept: Some(0), ..Default::default() };
        assert_eq!(zero_kept.validate(), Err(QuotaError::VersionsKept(0)));
        let update = QuotaUpdate { max_versions_kept: Some(5), ..Default::default() };
        assert!(update.validate().is_ok());
        let quotas = update.applied_to(Quotas::default());
        assert_eq!(quotas, Quotas { max_versions_kept: 5, ..Quotas::default() });
    }
}
