//! One configuration's state: its record (head version, kept versions, current release), the
//! metadata of each immutable version, the releases that decide what clients receive, and the
//! retention rule that decides which old versions may be dropped.

use serde::{Deserialize, Serialize};

use super::release::Rule;
use super::Format;

/// The record kept for each configuration. Versions are immutable and numbered from 1; a delete
/// clears `current_version` and the release but keeps the counters, so numbers are never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// Format of the head version.
    pub format: Format,
    /// The head: the newest version, `None` once the config is deleted.
    pub current_version: Option<u64>,
    pub latest_version: u64,
    /// Raft log index of the last change to this configuration (write, delete, release, schema).
    pub revision: u64,
    /// Numbers of the versions still stored, ascending.
    pub kept_versions: Vec<u64>,
    /// What clients receive; `None` while the config is deleted.
    pub release: Option<Release>,
    /// Number of the last release ever made (numbers are never reused either).
    pub latest_release: u64,
    /// sha256 of the JSON Schema every new version must satisfy, when one is set.
    pub schema_checksum: Option<String>,
}

/// The format a write without one gets: the live config's, else text.
pub fn default_format(record: Option<&ConfigRecord>) -> Format {
    record.filter(|r| r.current_version.is_some()).map_or(Format::Text, |r| r.format)
}

/// What is recorded for each immutable version besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: u64,
    pub format: Format,
    pub author: String,
    pub message: String,
    /// The leader's clock when the write was proposed, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    pub size: u64,
    /// Hex sha256 of the content.
    pub checksum: String,
    pub revision: u64,
}

/// How a release came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseAction {
    /// Made automatically when a config's first version (after creation or deletion) is written.
    Initial,
    /// A whole rule list was set (gray release, promotion).
    Set,
    /// One version became the default for everyone.
    Publish,
    /// An earlier release's rules were restored.
    Rollback { to: u64 },
}

impl ReleaseAction {
    pub fn name(self) -> &'static str {
        match self {
            ReleaseAction::Initial => "initial",
            ReleaseAction::Set => "set",
            ReleaseAction::Publish => "publish",
            ReleaseAction::Rollback { .. } => "rollback",
        }
    }
}

/// One release: an ordered rule list, numbered per config, kept in the config's release history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub number: u64,
    pub rules: Vec<Rule>,
    pub action: ReleaseAction,
    pub author: String,
    pub message: String,
    pub created_ms: u64,
    pub revision: u64,
}

impl Release {
    /// Whether any rule hands out `version`.
    pub fn uses(&self, version: u64) -> bool {
        self.rules.iter().any(|rule| rule.version == version)
    }
}

/// The versions to drop: every version older than the newest `keep` that `release` does not use.
/// `kept` is ascending; at least the newest version is always kept.
pub fn versions_to_drop(kept: &[u64], keep: u32, release: Option<&Release>) -> Vec<u64> {
    let keep = (keep as usize).max(1);
    let older = &kept[..kept.len().saturating_sub(keep)];
    older.iter().copied().filter(|version| !release.is_some_and(|r| r.uses(*version))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::release::Labels;

    fn release_of(versions: &[u64]) -> Release {
        let rules = versions
            .iter()
            .enumerate()
            .map(|(i, v)| Rule { labels: Labels::new(), version: *v, priority: i as u32, percent: None })
            .collect();
        Release {
            number: 1,
            rules,
            action: ReleaseAction::Set,
            author: "a".into(),
            message: String::new(),
            created_ms: 0,
            revision: 1,
        }
    }

    #[test]
    fn retention_drops_the_oldest_versions_beyond_the_limit() {
        let kept: Vec<u64> = (1..=150).collect();
        assert_eq!(versions_to_drop(&kept, 100, None), (1..=50).collect::<Vec<u64>>());
        assert!(versions_to_drop(&kept[..100], 100, None).is_empty());
    }

    #[test]
    fn retention_never_drops_a_version_the_release_uses() {
        let kept: Vec<u64> = (1..=5).collect();
        let release = release_of(&[1, 4]);
        assert_eq!(versions_to_drop(&kept, 2, Some(&release)), vec![2, 3], "1 is pinned, 4 and 5 are the newest");
        let kept: Vec<u64> = (1..=150).collect();
        let dropped = versions_to_drop(&kept, 100, Some(&release_of(&[1])));
        assert_eq!(dropped, (2..=50).collect::<Vec<u64>>(), "the last 100 plus the pinned one stay");
    }

    #[test]
    fn retention_always_keeps_at_least_the_newest() {
        assert_eq!(versions_to_drop(&[1, 2, 3], 0, None), vec![1, 2]);
    }
}
