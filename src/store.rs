//! The node's one RocksDB: opening it, its column families and key layout, the node's identity
//! (node id, cluster id) and the read side of the configuration state. The only module that
//! imports `rocksdb`.
//!
//! Column families: `meta` (vote, committed, last purged, node id, cluster id), `logs`
//! (big-endian index → entry), `sm_meta` (last applied, membership), `sm_data` (tenants, apps,
//! envs, configs, versions, releases, schemas, audit; layout in `keys`), `snapshot` (the current
//! snapshot's meta and bytes). One WAL covers them all, so a durable record implies every
//! earlier record is durable.

mod apply;
pub mod backup;
pub mod feed;
mod idempotency;
pub mod keys;
pub mod log_store;
mod reads;
pub mod state_machine;
pub mod views;
mod wal_sync;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use apply::checksum;
pub use log_store::LogStore;
pub use reads::Page;
pub use state_machine::{ArmedPlan, InstallPlan, StateMachineStore};
pub use views::{ConfigView, LiveRelease, VersionBody};

use crate::types::{typ, NodeId};

/// Errors opening or reading the store outside openraft's traits.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("corrupt record under {what}: {source}")]
    Corrupt { what: &'static str, source: bincode::Error },
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the backup reader stopped before it read the state")]
    BackupStopped,
    #[error("refused to relabel the state at revision {applied} as revision {label}: a relabel must move it up")]
    Relabel { applied: u64, label: u64 },
}

pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_SM_DATA: &str = "sm_data";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
const ALL_CFS: [&str; 5] = [CF_META, CF_LOGS, CF_SM_META, CF_SM_DATA, CF_SNAPSHOT];

/// Each column family's options (a column family does not inherit the database's). All compress
/// with LZ4. `sm_data` is read by key on every apply, often for a key that does not exist yet (a
/// new config's record): a bloom filter over whole keys in its memtable and in each SST file
/// answers "absent" without searching either.
fn column_family_options(name: &str) -> Options {
    let mut options = Options::default();
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    if name == CF_SM_DATA {
        options.set_memtable_whole_key_filtering(true);
        options.set_memtable_prefix_bloom_ratio(0.1);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        options.set_block_based_table_factory(&table);
    }
    options
}

/// A handle on the node's RocksDB, cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<DB>,
    feed: Arc<feed::AppliedFeed>,
    plan: Arc<state_machine::PlanSlot>,
    deferred_purge: Arc<log_store::DeferredPurge>,
    wal_syncer: wal_sync::WalSyncer,
}

/// Everything openraft needs from storage, built from one [`Store`].
pub struct RaftStorage {
    pub log_store: LogStore,
    pub state_machine: StateMachineStore,
}

impl Store {
    /// Opens (creating if needed) the RocksDB under `dir`. A new directory gets a fresh node id.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_as(dir, None)
    }

    /// [`Store::open`]; a new directory gets the node id `node_id` when given (`--node-id`).
    /// A directory that existed keeps its id, whatever `node_id` says.
    pub fn open_as(dir: &Path, node_id: Option<NodeId>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let cfs = ALL_CFS.iter().map(|name| ColumnFamilyDescriptor::new(*name, column_family_options(name)));
        let db = DB::open_cf_descriptors(&opts, dir.join("rocksdb"), cfs)?;
        let db = Arc::new(db);
        let wal_syncer =
            wal_sync::WalSyncer::start(&db).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let store =
            Store { db, feed: Arc::default(), plan: Arc::default(), deferred_purge: Arc::default(), wal_syncer };
        match node_id {
            Some(id) => store.claim_node_id(id)?,
            None => store.ensure_node_id()?,
        };
        Ok(store)
    }

    /// The openraft log store and state machine over this database.
    pub fn raft_storage(&self) -> RaftStorage {
        RaftStorage {
            log_store: LogStore::new(self.db.clone(), self.deferred_purge.clone(), self.wal_syncer.clone()),
            state_machine: StateMachineStore::new(self.db.clone(), self.feed.clone(), self.plan.clone()),
        }
    }

    /// Arms `plan` for the install of its snapshot (see [`InstallPlan`]) until the returned
    /// handle is dropped.
    pub fn arm_install(&self, plan: InstallPlan) -> ArmedPlan {
        ArmedPlan::arm(self.plan.clone(), plan)
    }

    /// Every apply of the state machine from now on: its revision and what it may have changed.
    pub fn subscribe_applied(&self) -> tokio::sync::mpsc::UnboundedReceiver<feed::Applied> {
        self.feed.subscribe()
    }

    pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
        db.cf_handle(name).expect("column family is created at open")
    }

    fn ensure_node_id(&self) -> Result<NodeId, StoreError> {
        if let Some(id) = self.node_id_opt()? {
            return Ok(id);
        }
        // Ids stay below 2^53 so that JSON clients in any language read them exactly.
        let id = rand::random::<u64>() >> 11 | 1;
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.db.put_cf_opt(Self::cf(&self.db, CF_META), keys::NODE_ID, id.to_be_bytes(), &write)?;
        Ok(id)
    }

    fn node_id_opt(&self) -> Result<Option<NodeId>, StoreError> {
        let raw = self.db.get_cf(Self::cf(&self.db, CF_META), keys::NODE_ID)?;
        Ok(raw.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes))
    }

    /// This node's id, created with the data directory.
    pub fn node_id(&self) -> Result<NodeId, StoreError> {
        self.ensure_node_id()
    }

    /// Gives a data directory without a node id the id `id`. Returns the id the directory has:
    /// `id`, or the one it already had.
    fn claim_node_id(&self, id: NodeId) -> Result<NodeId, StoreError> {
        if let Some(existing) = self.node_id_opt()? {
            return Ok(existing);
        }
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.db.put_cf_opt(Self::cf(&self.db, CF_META), keys::NODE_ID, id.to_be_bytes(), &write)?;
        Ok(id)
    }

    /// The cluster this node belongs to, once it was initialized or first contacted by a leader.
    pub fn cluster_id(&self) -> Result<Option<String>, StoreError> {
        let raw = self.db.get_cf(Self::cf(&self.db, CF_META), keys::CLUSTER_ID)?;
        Ok(raw.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Records the cluster id durably.
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), StoreError> {
        let mut write = rocksdb::WriteOptions::default();
        write.set_sync(true);
        self.db.put_cf_opt(Self::cf(&self.db, CF_META), keys::CLUSTER_ID, cluster_id.as_bytes(), &write)?;
        Ok(())
    }

    /// Approximate on-disk size of all column families, in bytes.
    pub fn size_bytes(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|cf| {
                self.db.property_int_value_cf(Self::cf(&self.db, cf), "rocksdb.total-sst-files-size").ok().flatten()
            })
            .sum::<u64>()
            + self.db.property_int_value("rocksdb.cur-size-all-mem-tables").ok().flatten().unwrap_or(0)
    }
}

/// Decodes a value read from RocksDB (a record, a log entry, Raft metadata); `what` names it in
/// the error. Public for the fuzz target `store_records`, which feeds it what a disk could hold.
pub fn decode<T: serde::de::DeserializeOwned>(what: &'static str, raw: &[u8]) -> Result<T, StoreError> {
    bincode::deserialize(raw).map_err(|source| StoreError::Corrupt { what, source })
}

/// Decodes the state machine's last-applied log id as stored under `keys::LAST_APPLIED` (absent:
/// nothing applied yet).
pub(crate) fn decode_last_applied(raw: Option<impl AsRef<[u8]>>) -> Result<Option<typ::LogId>, StoreError> {
    Ok(raw.map(|raw| decode::<Option<typ::LogId>>("last applied", raw.as_ref())).transpose()?.flatten())
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("bincode serialization of in-memory values cannot fail")
}
