//! The audit log's records and the filter a query applies to them. A record is written in the same
//! Raft entry as the mutation it describes, so neither can exist without the other.

use serde::{Deserialize, Serialize};

/// What a mutation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    TenantCreate,
    TenantUpdate,
    TenantDelete,
    AppCreate,
    AppUpdate,
    AppDelete,
    EnvCreate,
    EnvUpdate,
    EnvDelete,
    ConfigWrite,
    ConfigDelete,
    SchemaSet,
    SchemaClear,
    ReleaseSet,
    ReleasePublish,
    ReleaseRollback,
}

impl AuditAction {
    pub const ALL: [AuditAction; 16] = [
        AuditAction::TenantCreate,
        AuditAction::TenantUpdate,
        AuditAction::TenantDelete,
        AuditAction::AppCreate,
        AuditAction::AppUpdate,
        AuditAction::AppDelete,
        AuditAction::EnvCreate,
        AuditAction::EnvUpdate,
        AuditAction::EnvDelete,
        AuditAction::ConfigWrite,
        AuditAction::ConfigDelete,
        AuditAction::SchemaSet,
        AuditAction::SchemaClear,
        AuditAction::ReleaseSet,
        AuditAction::ReleasePublish,
        AuditAction::ReleaseRollback,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuditAction::TenantCreate => "tenant.create",
            AuditAction::TenantUpdate => "tenant.update",
            AuditAction::TenantDelete => "tenant.delete",
            AuditAction::AppCreate => "app.create",
            AuditAction::AppUpdate => "app.update",
            AuditAction::AppDelete => "app.delete",
            AuditAction::EnvCreate => "env.create",
            AuditAction::EnvUpdate => "env.update",
            AuditAction::EnvDelete => "env.delete",
            AuditAction::ConfigWrite => "config.write",
            AuditAction::ConfigDelete => "config.delete",
            AuditAction::SchemaSet => "config.schema.set",
            AuditAction::SchemaClear => "config.schema.clear",
            AuditAction::ReleaseSet => "release.set",
            AuditAction::ReleasePublish => "release.publish",
            AuditAction::ReleaseRollback => "release.rollback",
        }
    }

    pub fn parse(name: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One audited mutation. `before`/`after` are version numbers for config writes and deletes and
/// release numbers for release changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub revision: u64,
    /// Position among the records of the same Raft entry.
    pub seq: u32,
    pub time_ms: u64,
    pub actor: String,
    pub action: AuditAction,
    /// `tenant`, `tenant/app`, `tenant/app/env` or `tenant/app/env/config`.
    pub resource: String,
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub request_id: String,
}

/// Which records an audit query wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    /// Matches the resource itself and everything under it (`acme/shop` matches `acme/shop/prod/db`).
    pub resource: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
}

impl AuditFilter {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let under = |prefix: &String| {
            record.resource == *prefix
                || record.resource.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/'))
        };
        self.actor.as_ref().is_none_or(|a| *a == record.actor)
            && self.action.is_none_or(|a| a == record.action)
            && self.resource.as_ref().is_none_or(under)
            && self.from_ms.is_none_or(|from| record.time_ms >= from)
            && self.to_ms.is_none_or(|to| record.time_ms < to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(resource: &str, time_ms: u64) -> AuditRecord {
        AuditRecord {
            revision: 1,
            seq: 0,
            time_ms,
            actor: "anonymous".into(),
            action: AuditAction::ConfigWrite,
            resource: resource.into(),
            before: None,
            after: Some(1),
            request_id: "r".into(),
        }
    }

    #[test]
    fn action_names_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.name()), Some(action));
        }
        assert_eq!(AuditAction::parse("config.explode"), None);
    }

    #[test]
    fn filters_match_resources_by_prefix_and_time_by_half_open_range() {
        let filter = AuditFilter {
            resource: Some("acme/shop".into()),
            from_ms: Some(10),
            to_ms: Some(20),
            ..Default::default()
        };
        assert!(filter.matches(&record("acme/shop/prod/db", 10)));
        assert!(filter.matches(&record("acme/shop", 19)));
        assert!(!filter.matches(&record("acme/shopping/prod/db", 15)), "a prefix must end at a segment");
        assert!(!filter.matches(&record("acme/shop/prod/db", 20)));
        assert!(!filter.matches(&record("acme/shop/prod/db", 9)));
        let by_actor = AuditFilter { actor: Some("alice".into()), ..Default::default() };
        assert!(!by_actor.matches(&record("acme", 1)));
        let by_action = AuditFilter { action: Some(AuditAction::ConfigDelete), ..Default::default() };
        assert!(!by_action.matches(&record("acme", 1)));
    }
}
