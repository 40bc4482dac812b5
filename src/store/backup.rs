//! Reading a backup (format: `crate::backup`) out of the state machine: its metadata and every
//! record from one RocksDB snapshot, so the file is exactly the state at one revision whatever
//! is applied meanwhile. A blocking thread encodes the records into chunks and hands them over a
//! small bounded channel, so a backup of any size is streamed, never held in memory, and a
//! client that stops reading stops the thread.

use std::sync::Arc;

use rocksdb::DB;
use tokio::sync::{mpsc, oneshot};

use super::{decode, decode_last_applied, keys, Store, StoreError, CF_META, CF_SM_DATA, CF_SM_META};
use crate::backup::{BackupMeta, Encoder, LogPosition};
use crate::types::{typ, NodeId};
use crate::wire;

/// A chunk is sent once it holds this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks encoded ahead of the client.
const CHUNKS_AHEAD: usize = 4;

/// A backup being read: its metadata (known before any record is read) and its bytes in order.
/// The stream ends with an error instead of the end of the file when reading fails.
pub struct BackupStream {
    pub meta: BackupMeta,
    pub chunks: mpsc::Receiver<Result<Vec<u8>, StoreError>>,
}

/// Who is writing the backup, and when.
#[derive(Debug, Clone, Copy)]
pub struct BackupSource {
    pub node_id: NodeId,
    pub created_at_ms: u64,
}

impl Store {
    /// Starts reading a backup of the applied state; `None` when this node has applied nothing
    /// or belongs to no cluster.
    pub async fn backup(&self, source: BackupSource) -> Result<Option<BackupStream>, StoreError> {
        let db = self.db.clone();
        let (meta_sender, meta) = oneshot::channel();
        let (sender, chunks) = mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || write_backup(&db, source, meta_sender, sender));
        match meta.await.map_err(|_| StoreError::BackupStopped)?? {
            Some(meta) => Ok(Some(BackupStream { meta, chunks })),
            None => Ok(None),
        }
    }
}

type MetaSender = oneshot::Sender<Result<Option<BackupMeta>, StoreError>>;

fn write_backup(
    db: &Arc<DB>,
    source: BackupSource,
    meta_sender: MetaSender,
    sender: mpsc::Sender<Result<Vec<u8>, StoreError>>,
) {
    let view = db.snapshot();
    let meta = match read_meta(db, &view, source) {
        Ok(Some(meta)) => meta,
        other => {
            let _ = meta_sender.send(other);
            return;
        }
    };
    let mut out = Vec::with_capacity(CHUNK_BYTES * 2);
    let mut encoder = Encoder::new(&meta, &mut out);
    if meta_sender.send(Ok(Some(meta))).is_err() {
        return;
    }
    for item in view.iterator_cf(Store::cf(db, CF_SM_DATA), rocksdb::IteratorMode::Start) {
        match item {
            Ok((key, value)) => encoder.record(&key, &value, &mut out),
            Err(e) => {
                let _ = sender.blocking_send(Err(e.into()));
                return;
            }
        }
        if out.len() >= CHUNK_BYTES {
            let chunk = std::mem::replace(&mut out, Vec::with_capacity(CHUNK_BYTES * 2));
            if sender.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
    encoder.finish(&mut out);
    let _ = sender.blocking_send(Ok(out));
}

/// The backup's metadata as `view` sees the state; `None` before anything was applied or while
/// the node belongs to no cluster.
fn read_meta(
    db: &DB,
    view: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    source: BackupSource,
) -> Result<Option<BackupMeta>, StoreError> {
    let last_applied = decode_last_applied(view.get_cf(Store::cf(db, CF_SM_META), keys::LAST_APPLIED)?)?;
    let membership: typ::StoredMembership = view
        .get_cf(Store::cf(db, CF_SM_META), keys::MEMBERSHIP)?
        .map(|r| decode("membership", &r))
        .transpose()?
        .unwrap_or_default();
    let cluster_id = view.get_cf(Store::cf(db, CF_META), keys::CLUSTER_ID)?;
    let (Some(last_applied), Some(cluster_id)) = (last_applied, cluster_id) else { return Ok(None) };
    let members = membership.membership();
    let url = |id: NodeId| members.get_node(&id).map(|n| n.peer_url.clone()).unwrap_or_default();
    Ok(Some(BackupMeta {
        cluster_id: String::from_utf8_lossy(&cluster_id).into_owned(),
        source_node_id: source.node_id,
        last_applied: LogPosition {
            term: last_applied.leader_id.term,
            leader_node_id: last_applied.leader_id.node_id,
            index: last_applied.index,
        },
        revision: last_applied.index,
        membership: wire::Membership {
            voters: members.voter_ids().map(|id| (id, url(id))).collect(),
            learners: members.learner_ids().map(|id| (id, url(id))).collect(),
            log_index: membership.log_id().map_or(0, |l| l.index),
        },
        created_at_ms: source.created_at_ms,
    }))
}
