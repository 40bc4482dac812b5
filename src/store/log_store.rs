//! openraft's `RaftLogStorage` on RocksDB. Appends are written without sync (readable at once)
//! and made durable by one flusher thread: a single WAL fsync covers every append queued
//! meanwhile, and only then are their `LogFlushed` callbacks completed. (openraft 0.9 awaits each
//! callback before its next append, so a group is one append there; `service::write_batcher`
//! puts many writes in one entry instead.) Votes and truncations are fsynced before returning.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, OptionalSend};
use rocksdb::{WriteBatch, DB};

use super::{decode, encode, keys, Store, CF_LOGS, CF_META};
use crate::types::{typ, TypeConfig};

/// Log store handle; clones share the database and the flusher thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    committed: Arc<AtomicU64>,
}

impl LogStore {
    pub(super) fn new(db: Arc<DB>) -> Self {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flusher_db = Arc::downgrade(&db);
        std::thread::Builder::new()
            .name("conflux-log-flusher".into())
            .spawn(move || run_flusher(flusher_db, rx))
            .expect("spawning the log flusher thread");
        LogStore { db, flusher: tx, committed: Arc::new(AtomicU64::new(0)) }
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

    async fn sync_wal(&self) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        let synced = tokio::task::spawn_blocking(move || db.flush_wal(true)).await.map_err(std::io::Error::other)?;
        synced.map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Completes append callbacks in groups: waits for one, takes every other queued one, syncs the
/// WAL once, then reports the result to all of them.
fn run_flusher(db: std::sync::Weak<DB>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        let Some(db) = db.upgrade() else { return };
        let result = db.flush_wal(true);
        drop(db);
        crate::metrics::global().log_fsync_group_entries.observe(group.len() as f64);
        for callback in group {
            let outcome = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(outcome);
        }
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
        self.db.put_cf(self.meta(), keys::VOTE, encode(vote)).map_err(|e| typ::StorageIOError::write_vote(&e))?;
        self.sync_wal().await.map_err(|e| typ::StorageIOError::write_vote(&e))?;
        Ok(())
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
        self.db.write(batch).map_err(|e| typ::StorageIOError::write_logs(&e))?;
        // The flusher only goes away with the database; if it is gone, say so instead of hanging.
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        self.db
            .delete_range_cf(self.logs(), keys::log_index(log_id.index), keys::log_index(u64::MAX))
            .map_err(|e| typ::StorageIOError::write_logs(&e))?;
        self.sync_wal().await.map_err(|e| typ::StorageIOError::write_logs(&e))?;
        Ok(())
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
