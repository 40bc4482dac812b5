//! Consistent reads of one config for resolving: its current release and every version the
//! release's rules name, read from one RocksDB snapshot together with the applied revision they
//! reflect. A view never mixes two states (a release with a version retention already dropped)
//! and says exactly how new it is, which is what lets watchers never step back in time.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{decode, decode_last_applied, keys, Store, StoreError, CF_SM_DATA, CF_SM_META};
use crate::model::config::VersionMeta;
use crate::model::release::Rule;
use crate::model::{ConfigKey, ConfigRecord};

/// One stored version: its metadata and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionBody {
    pub meta: VersionMeta,
    pub content: Vec<u8>,
}

/// The release of a live config with the versions its rules name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRelease {
    pub number: u64,
    pub rules: Vec<Rule>,
    pub versions: BTreeMap<u64, Arc<VersionBody>>,
}

/// A config as of one applied revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigView {
    /// The applied revision of the snapshot the view was read from.
    pub revision: u64,
    /// `None` when the config does not exist or is deleted.
    pub release: Option<LiveRelease>,
}

impl Store {
    /// Reads `key`'s release and released versions, and the revision they reflect, atomically.
    pub fn config_view(&self, key: &ConfigKey) -> Result<ConfigView, StoreError> {
        let snapshot = self.db.snapshot();
        let data = Self::cf(&self.db, CF_SM_DATA);
        let get = |cf, raw_key: &[u8]| snapshot.get_cf(cf, raw_key);
        let last_applied = decode_last_applied(get(Self::cf(&self.db, CF_SM_META), keys::LAST_APPLIED)?)?;
        let revision = last_applied.map_or(0, |id| id.index);
        let record: Option<ConfigRecord> =
            get(data, &keys::record(key))?.map(|raw| decode("config record", &raw)).transpose()?;
        let Some(release) = record.and_then(|r| r.release) else { return Ok(ConfigView { revision, release: None }) };
        let mut versions = BTreeMap::new();
        for rule in &release.rules {
            if versions.contains_key(&rule.version) {
                continue;
            }
            let meta = get(data, &keys::version_meta(key, rule.version))?;
            let content = get(data, &keys::version(key, rule.version))?;
            if let (Some(meta), Some(content)) = (meta, content) {
                let meta: VersionMeta = decode("version metadata", &meta)?;
                versions.insert(rule.version, Arc::new(VersionBody { meta, content }));
            }
        }
        let live = LiveRelease { number: release.number, rules: release.rules, versions };
        Ok(ConfigView { revision, release: Some(live) })
    }
}
