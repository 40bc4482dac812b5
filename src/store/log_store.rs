//! openraft's `RaftLogStorage` on RocksDB. An append is one `WriteBatch`, written at once and
//! made durable by the WAL syncer (`wal_sync`), which completes its `IOFlushed` callback only
//! after the fsync: openraft 0.10 replicates meanwhile and counts this node's copy only once it is
//! durable. Votes and truncations are written synced, inline, before they return. Many writes
//! also share one entry one level up, where `service::write_batcher` batches them.
//!
//! A purge is written only once the state machine (same database) has applied what it removes.
//! openraft 0.9 runs the purge that follows a snapshot install at once, on its core task, while
//! the install itself runs on the state-machine task. Purging first and then being killed before
//! the install was written left a node whose purged log was ahead of its state machine, which
//! openraft refuses to start ever again (`purge_upto <= committed`); the fault suite's
//! kill-while-joining fault found it. Such a purge is deferred: reads and the log state act as if
//! it were done, and the next append (once the state machine has caught up) writes it in its own
//! batch. Killed before that is durable, the node restarts on a log and state machine that agree.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::io;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::wal_sync::WalSyncer;
use super::{decode, decode_last_applied, encode, keys, Store, CF_LOGS, CF_META, CF_SM_META};
use crate::types::{typ, TypeConfig};

/// A purge openraft asked for before the state machine held what it removes (see the module
/// doc), shared by every handle on one database; lost, as it should be, when the process dies.
pub(super) type DeferredPurge = Mutex<Option<typ::LogId>>;

/// Log store handle; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    committed: Arc<AtomicU64>,
    deferred_purge: Arc<DeferredPurge>,
    syncer: WalSyncer,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>, deferred_purge: Arc<DeferredPurge>, syncer: WalSyncer) -> Self {
        LogStore { db, committed: Arc::new(AtomicU64::new(0)), deferred_purge, syncer }
    }

    /// The highest index openraft has reported committed, kept current for readiness and metrics.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }

    fn logs(&self) -> &rocksdb::ColumnFamily {
        Store::cf(&self.db, CF_LOGS)
    }

    fn meta(&self) -> &rocksdb::ColumnFamily {
        Store::cf(&self.db, CF_META)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let raw = self.db.get_cf(self.meta(), key).map_err(io::Error::other)?;
        raw.map(|r| decode("log metadata", &r).map_err(io::Error::other)).transpose()
    }

    /// The index the state machine has applied (0: nothing), read from the shared database.
    fn applied_index(&self) -> io::Result<u64> {
        let raw = self.db.get_cf(Store::cf(&self.db, CF_SM_META), keys::LAST_APPLIED);
        let applied = raw.map_err(io::Error::other)?;
        let applied = decode_last_applied(applied).map_err(io::Error::other)?;
        Ok(applied.map_or(0, |id| id.index))
    }

    fn deferred(&self) -> Option<typ::LogId> {
        *self.deferred_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_deferred(&self, purge: Option<typ::LogId>) {
        *self.deferred_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = purge;
    }

    /// The last purged log id as openraft sees it: written, or deferred.
    fn purged(&self) -> io::Result<Option<typ::LogId>> {
        let written: Option<typ::LogId> = self.get_meta(keys::LAST_PURGED)?;
        Ok(written.max(self.deferred()))
    }

    /// Adds the purge of every entry up to `upto` to `batch`: the marker and the deletion land
    /// together, in one batch.
    fn purge_into(&self, batch: &mut WriteBatch, upto: &typ::LogId) {
        batch.put_cf(self.meta(), keys::LAST_PURGED, encode(upto));
        batch.delete_range_cf(self.logs(), keys::log_index(0), keys::log_index(upto.index + 1));
    }

    /// What `append` writes (unsynced: the WAL syncer makes it durable): the entries, and a
    /// deferred purge once the state machine holds what it removes.
    fn write_entries(&self, entries: impl IntoIterator<Item = typ::Entry>) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        let deferred = self.deferred();
        let ready = match deferred {
            Some(upto) if self.applied_index()? >= upto.index => Some(upto),
            _ => None,
        };
        if let Some(upto) = &ready {
            self.purge_into(&mut batch, upto);
        }
        for entry in entries {
            batch.put_cf(self.logs(), keys::log_index(entry.log_id.index), encode(&entry));
        }
        self.db.write(batch).map_err(io::Error::other)?;
        if ready.is_some() {
            // Unless a newer purge was deferred meanwhile.
            let mut slot = self.deferred_purge.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if *slot == ready {
                *slot = None;
            }
        }
        Ok(())
    }

    /// Writes `batch` and fsyncs the WAL before returning. Every column family shares the WAL,
    /// so this also makes every earlier unsynced write (applies, committed index) durable.
    fn write_synced(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<typ::Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        // Entries a deferred purge removed are gone for openraft.
        let start = start.max(self.deferred().map_or(0, |purged| purged.index + 1));
        let mode = rocksdb::IteratorMode::From(&keys::log_index(start), rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.logs(), mode) {
            let (key, value) = item.map_err(io::Error::other)?;
            let index = u64::from_be_bytes(
                key.as_ref().try_into().map_err(|_| io::Error::other(format!("log key of {} bytes", key.len())))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: typ::Entry = decode("log entry", &value).map_err(io::Error::other)?;
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<typ::Vote>> {
        self.get_meta(keys::VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.purged()?;
        let last = self.db.iterator_cf(self.logs(), rocksdb::IteratorMode::End).next();
        let last_entry = match last {
            Some(item) => {
                let (_, value) = item.map_err(io::Error::other)?;
                let entry: typ::Entry = decode("log entry", &value).map_err(io::Error::other)?;
                Some(entry.log_id)
            }
            None => None,
        };
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &typ::Vote) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta(), keys::VOTE, encode(vote));
        self.write_synced(batch).map_err(io::Error::other)
    }

    async fn save_committed(&mut self, committed: Option<typ::LogId>) -> io::Result<()> {
        if let Some(id) = committed {
            self.committed.store(id.index, Ordering::Relaxed);
            crate::metrics::global().raft_committed_index.set(id.index as i64);
        }
        // Not synced: a stale value only means more replay after a restart.
        self.db.put_cf(self.meta(), keys::COMMITTED, encode(&committed)).map_err(io::Error::other)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<typ::LogId>> {
        Ok(self.get_meta::<Option<typ::LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.write_entries(entries)?;
        self.syncer.complete_after_sync(callback)
    }

    async fn truncate_after(&mut self, last_kept: Option<typ::LogId>) -> io::Result<()> {
        let first_removed = last_kept.map_or(0, |id| id.index + 1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.logs(), keys::log_index(first_removed), keys::log_index(u64::MAX));
        self.write_synced(batch).map_err(io::Error::other)
    }

    async fn purge(&mut self, log_id: typ::LogId) -> io::Result<()> {
        if self.applied_index()? < log_id.index {
            self.set_deferred(self.deferred().max(Some(log_id)));
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.purge_into(&mut batch, &log_id);
        self.db.write(batch).map_err(io::Error::other)?;
        if self.deferred() <= Some(log_id) {
            self.set_deferred(None);
        }
        Ok(())
    }
}
