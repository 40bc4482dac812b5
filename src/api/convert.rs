//! Conversions between the stored model and the JSON bodies of `wire`, by hand, in one place:
//! the model never derives the public API's shape.

use std::collections::BTreeMap;

use super::problem::ApiError;
use crate::model::audit::AuditRecord;
use crate::model::config::{Release, ReleaseAction, VersionMeta};
use crate::model::hierarchy::{LevelInfo, QuotaUpdate, Quotas};
use crate::model::release::{self, Percent, Rule};
use crate::wire;

pub fn checksum(hex: &str) -> String {
    format!("sha256:{hex}")
}

pub fn version_info(meta: &VersionMeta) -> wire::VersionInfo {
    wire::VersionInfo {
        version: meta.version,
        format: meta.format.name().to_string(),
        author: meta.author.clone(),
        message: meta.message.clone(),
        created_at_ms: meta.created_ms,
        size: meta.size,
        checksum: checksum(&meta.checksum),
        revision: meta.revision,
    }
}

pub fn rule_to_wire(rule: &Rule) -> wire::Rule {
    wire::Rule {
        labels: rule.labels.clone(),
        version: rule.version,
        priority: rule.priority,
        percent: rule.percent.map(Percent::as_percent),
    }
}

/// Rules from a request body; percent and labels are checked here, the rest by `release::validate`.
pub fn rules_from_wire(rules: &[wire::Rule]) -> Result<Vec<Rule>, ApiError> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let percent = rule
                .percent
                .map(Percent::from_percent)
                .transpose()
                .map_err(|e| ApiError::InvalidRules(format!("rule {index}: {e}")))?;
            for (key, value) in &rule.labels {
                release::check_label(key, value).map_err(|e| ApiError::InvalidRules(format!("rule {index}: {e}")))?;
            }
            Ok(Rule { labels: rule.labels.clone(), version: rule.version, priority: rule.priority, percent })
        })
        .collect()
}

pub fn release_to_wire(release: &Release) -> wire::Release {
    let rolled_back_to = match release.action {
        ReleaseAction::Rollback { to } => Some(to),
        _ => None,
    };
    wire::Release {
        number: release.number,
        rules: release.rules.iter().map(rule_to_wire).collect(),
        action: release.action.name().to_string(),
        rolled_back_to,
        author: release.author.clone(),
        message: release.message.clone(),
        created_at_ms: release.created_ms,
        revision: release.revision,
    }
}

pub fn quotas_to_wire(quotas: Quotas) -> wire::Quotas {
    wire::Quotas {
        max_config_bytes: quotas.max_config_bytes,
        max_configs: quotas.max_configs,
        max_versions_kept: quotas.max_versions_kept,
    }
}

pub fn quota_update(spec: Option<wire::QuotaSpec>) -> Result<QuotaUpdate, ApiError> {
    let spec = spec.unwrap_or_default();
    let update = QuotaUpdate {
        max_config_bytes: spec.max_config_bytes,
        max_configs: spec.max_configs,
        max_versions_kept: spec.max_versions_kept,
    };
    update.validate()?;
    Ok(update)
}

/// A level (tenant, app, env) as served; the caller fills the counts that apply to it.
pub fn level(path: String, name: &str, info: &LevelInfo, configs: u64) -> wire::Level {
    wire::Level {
        path,
        name: name.to_string(),
        description: info.description.clone(),
        created_revision: info.created_revision,
        created_at_ms: info.created_ms,
        revision: info.revision,
        quotas: None,
        apps: None,
        envs: None,
        configs,
    }
}

pub fn audit_entry(record: &AuditRecord) -> wire::AuditEntry {
    wire::AuditEntry {
        revision: record.revision,
        seq: record.seq,
        time_ms: record.time_ms,
        actor: record.actor.clone(),
        action: record.action.name().to_string(),
        resource: record.resource.clone(),
        before: record.before,
        after: record.after,
        request_id: record.request_id.clone(),
    }
}

/// Labels of a batch body, checked like query labels.
pub fn labels_from_wire(labels: &BTreeMap<String, String>) -> Result<release::Labels, ApiError> {
    if labels.len() > release::MAX_LABELS {
        let detail = format!("at most {} labels, got {}", release::MAX_LABELS, labels.len());
        return Err(ApiError::BadRequest { code: "invalid_labels", detail });
    }
    for (key, value) in labels {
        release::check_label(key, value).map_err(ApiError::InvalidLabels)?;
    }
    Ok(labels.clone())
}
