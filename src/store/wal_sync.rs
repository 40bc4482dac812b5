//! The WAL syncer: one thread per store that fsyncs RocksDB's WAL and only then completes the
//! `IOFlushed` callbacks of the appends written before that sync.
//!
//! `LogStore::append` writes its batch without syncing (readers, and so replication, see the
//! entries at once) and hands its callback here; openraft's core goes on meanwhile, so a leader
//! sends new entries to its followers while its own copy is being synced, and counts itself in
//! the quorum only once the callback says it is durable. Callbacks queued while a sync runs share
//! the next one (group commit). Every callback completes after a sync that began after its
//! append's write, in the order the appends were written.
//!
//! Votes and truncations are still written synced, inline: one WAL serves every column family, so
//! a synced vote also makes every append written before it durable. That is why openraft #2118
//! (a new leader counting unflushed appends as flushed; fixed in 0.10.0-alpha.35) cannot bite
//! here: `save_vote` of the election's vote finishes, synced, before `become_leader` runs.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Weak};

use openraft::storage::IOFlushed;
use rocksdb::DB;

use crate::types::TypeConfig;

/// The handle appends queue their callbacks on; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct WalSyncer {
    queue: Sender<IOFlushed<TypeConfig>>,
}

impl WalSyncer {
    /// Starts the thread. It holds the database only while a sync runs, so dropping the store
    /// closes it.
    pub(super) fn start(db: &Arc<DB>) -> io::Result<WalSyncer> {
        let (queue, pending) = mpsc::channel();
        let db = Arc::downgrade(db);
        std::thread::Builder::new().name("conflux-wal-sync".into()).spawn(move || sync_until_closed(&db, &pending))?;
        Ok(WalSyncer { queue })
    }

    /// Completes `callback` once a WAL sync that starts after this call has finished.
    pub(super) fn complete_after_sync(&self, callback: IOFlushed<TypeConfig>) -> io::Result<()> {
        self.queue.send(callback).map_err(|_| io::Error::other("the WAL sync thread has stopped"))
    }
}

fn sync_until_closed(db: &Weak<DB>, pending: &Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        group.extend(pending.try_iter());
        let synced = match db.upgrade() {
            Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
            None => Err("the store was closed before its WAL was synced".to_string()),
        };
        crate::metrics::global().wal_sync_group_appends.observe(group.len() as f64);
        for callback in group {
            callback.io_completed(synced.clone().map_err(io::Error::other));
        }
    }
}
