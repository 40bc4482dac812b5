//! openraft's `RaftLogStorage` on RocksDB. An append is one synced `WriteBatch` (the WAL is
//! fsynced before it returns), and only then is its `LogFlushed` callback completed; votes and
//! truncations are synced the same way. The sync is inline: openraft 0.9 awaits each append's callback before it does
//! anything else, so handing it to a flusher thread only added a thread hop (measured: no group
//! ever held more than one append). Many writes share one fsync one level up, where
//! `service::write_batcher` puts them in one entry.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, OptionalSend};
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::{decode, encode, keys, Store, CF_LOGS, CF_META};
use crate::types::{typ, TypeConfig};

/// Log store handle; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> Self {
        LogStore { db, committed: Arc::new(AtomicU64::new(0)) }
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

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, typ::StorageError> {
        let raw = self.db.get_cf(self.meta(), key).map_err(|e| typ::StorageIOError::read(&e))?;
        raw.map(|r| decode("log metadata", &r).map_err(|e| typ::StorageIOError::read(&e).into())).transpose()
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
    ) -> Result<Vec<typ::Entry>, typ::StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mode = rocksdb::IteratorMode::From(&keys::log_index(start), rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(self.logs(), mode) {
            let (key, value) = item.map_err(|e| typ::StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                typ::StorageIOError::read_logs(AnyError::error(format!("log key of {} bytes", key.len())))
            })?);
            if !range.contains(&index) {
                break;
            }
            let entry: typ::Entry = decode("log entry", &value).map_err(|e| typ::StorageIOError::read_logs(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        let last_purged_log_id: Option<typ::LogId> = self.get_meta(keys::LAST_PURGED)?;
        let last = self.db.iterator_cf(self.logs(), rocksdb::IteratorMode::End).next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(|e| typ::StorageIOError::read_logs(&e))?;
                let entry: typ::Entry = decode("log entry", &value).map_err(|e| typ::StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &typ::Vote) -> Result<(), typ::StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.meta(), keys::VOTE, encode(vote));
        self.write_synced(batch).map_err(|e| typ::StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        self.get_meta(keys::VOTE)
    }

    async fn save_committed(&mut self, committed: Option<typ::LogId>) -> Result<(), typ::StorageError> {
        if let Some(id) = committed {
            self.committed.store(id.index, Ordering::Relaxed);
            crate::metrics::global().raft_committed_index.set(id.index as i64);
        }
        // Not synced: a stale value only means more replay after a restart.
        self.db.put_cf(self.meta(), keys::COMMITTED, encode(&committed)).map_err(|e| typ::StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<typ::LogId>, typ::StorageError> {
        Ok(self.get_meta::<Option<typ::LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(self.logs(), keys::log_index(entry.log_id.index), encode(&entry));
        }
        self.write_synced(batch).map_err(|e| typ::StorageIOError::write_logs(&e))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.logs(), keys::log_index(log_id.index), keys::log_index(u64::MAX));
        self.write_synced(batch).map_err(|e| typ::StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        // The marker goes first: openraft ignores entries at or below it, so a crash between the
        // two writes leaves only harmless garbage.
        self.db
            .put_cf(self.meta(), keys::LAST_PURGED, encode(&log_id))
            .map_err(|e| typ::StorageIOError::write_logs(&e))?;
        self.db
            .delete_range_cf(self.logs(), keys::log_index(0), keys::log_index(log_id.index + 1))
            .map_err(|e| typ::StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
