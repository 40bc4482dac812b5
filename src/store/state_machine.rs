//! openraft's `RaftStateMachine` on RocksDB. `apply` writes each batch's data, last-applied log id
//! and membership in one `WriteBatch` (the shared WAL makes it durable in log order). Snapshots are
//! read through one RocksDB snapshot, so their metadata and data always agree, and installed with
//! one synced `WriteBatch` that replaces the whole state, so a crash leaves old or new, never a mix.
//!
//! openraft hands `apply` each entry with the responder of the client waiting for it; responses
//! are sent only once the batch is written, so an answered client's write is visible to reads.
//!
//! Restore and recover hand Raft a snapshot of their own (`service/backup.rs`); an
//! [`InstallPlan`] armed for that snapshot's label (its last log id) makes its install also record the new cluster id
//! in the same batch, and (recover) keep the local data, only relabelling it.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use openraft_legacy::network_v1::SnapshotReceiverFactory;
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::apply::{EntryApplier, Overlay};
use super::feed::{Applied, AppliedFeed, Touched};
use super::{
    decode, decode_last_applied, encode, keys, Store, StoreError, CF_META, CF_SM_DATA, CF_SM_META, CF_SNAPSHOT,
};
use crate::command::{CommandBatch, CommandResponse};
use crate::types::{typ, TypeConfig};

/// Keys and values of the state-machine data, in key order.
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// State machine handle; clones share the database.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    feed: Arc<AppliedFeed>,
    plan: Arc<PlanSlot>,
}

/// How the state machine installs one particular snapshot, which the node hands Raft itself
/// (restore, recover) rather than receiving it from a leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The label (last log id) of the snapshot it is for; any other snapshot is installed as usual.
    pub label: typ::LogId,
    /// Recorded in the install's batch: a crash leaves the old cluster id with the old state, or
    /// the new one with the new state.
    pub cluster_id: String,
    /// Keep the data the state machine holds (recover) instead of the snapshot's (which is then
    /// empty), relabelled with the snapshot's last log id and membership.
    pub keep_local_data: bool,
}

/// Where an armed [`InstallPlan`] waits for its install.
#[derive(Debug, Default)]
pub struct PlanSlot(Mutex<Option<InstallPlan>>);

impl PlanSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<InstallPlan>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan armed for the snapshot labelled `label`, taken out of the slot.
    fn take_for(&self, label: Option<typ::LogId>) -> Option<InstallPlan> {
        self.lock().take_if(|plan| Some(plan.label) == label)
    }
}

/// An armed [`InstallPlan`]; dropping it disarms the plan if no install took it.
pub struct ArmedPlan {
    slot: Arc<PlanSlot>,
    label: typ::LogId,
}

impl ArmedPlan {
    pub(super) fn arm(slot: Arc<PlanSlot>, plan: InstallPlan) -> ArmedPlan {
        let label = plan.label;
        *slot.lock() = Some(plan);
        ArmedPlan { slot, label }
    }

    /// Whether the state machine took the plan: its snapshot reached the install.
    pub fn taken(&self) -> bool {
        self.slot.lock().as_ref().is_none_or(|plan| plan.label != self.label)
    }
}

impl Drop for ArmedPlan {
    fn drop(&mut self) {
        let _ = self.slot.take_for(Some(self.label));
    }
}

/// What a snapshot's bytes hold: every key and value of the state-machine data.
#[derive(Serialize, Deserialize)]
pub struct SnapshotPayload {
    pairs: KeyValues,
}

/// The current snapshot as stored in the `snapshot` column family.
#[derive(Serialize, Deserialize)]
pub struct StoredSnapshot {
    meta: typ::SnapshotMeta,
    data: Vec<u8>,
}

impl StateMachineStore {
    pub(super) fn new(db: Arc<DB>, feed: Arc<AppliedFeed>, plan: Arc<PlanSlot>) -> Self {
        StateMachineStore { db, feed, plan }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        Store::cf(&self.db, name)
    }

    fn current_snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        let raw = self.db.get_cf(self.cf(CF_SNAPSHOT), keys::CURRENT_SNAPSHOT)?;
        raw.map(|r| decode("snapshot", &r)).transpose()
    }

    /// Replaces the whole state with a snapshot's, atomically and durably; with a plan, also
    /// records its cluster id, and (`keep_local_data`) keeps the data, relabelled.
    fn install(&self, meta: &typ::SnapshotMeta, data: Vec<u8>, plan: Option<InstallPlan>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let data = match &plan {
            Some(plan) if plan.keep_local_data => self.relabel(meta)?,
            _ => {
                let payload: SnapshotPayload = decode("snapshot payload", &data)?;
                batch.delete_range_cf(self.cf(CF_SM_DATA), keys::SM_DATA_START, keys::SM_DATA_END);
                for (key, value) in payload.pairs {
                    batch.put_cf(self.cf(CF_SM_DATA), key, value);
                }
                data
            }
        };
        batch.put_cf(self.cf(CF_SM_META), keys::LAST_APPLIED, encode(&meta.last_log_id));
        batch.put_cf(self.cf(CF_SM_META), keys::MEMBERSHIP, encode(&meta.last_membership));
        if let Some(plan) = &plan {
            batch.put_cf(self.cf(CF_META), keys::CLUSTER_ID, plan.cluster_id.as_bytes());
        }
        let stored = StoredSnapshot { meta: meta.clone(), data };
        batch.put_cf(self.cf(CF_SNAPSHOT), keys::CURRENT_SNAPSHOT, encode(&stored));
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        self.db.write_opt(batch, &sync)?;
        Ok(())
    }

    /// The payload of the data held now, to become the snapshot labelled `meta`. Runs on the
    /// state machine's task, so no apply can slip in between; refuses a label that is not above
    /// everything applied (revisions would be given out twice).
    fn relabel(&self, meta: &typ::SnapshotMeta) -> Result<Vec<u8>, StoreError> {
        let view = self.db.snapshot();
        let applied = decode_last_applied(view.get_cf(self.cf(CF_SM_META), keys::LAST_APPLIED)?)?;
        let (applied, label) = (applied.map_or(0, |l| l.index), meta.last_log_id.map_or(0, |l| l.index));
        if label <= applied {
            return Err(StoreError::Relabel { applied, label });
        }
        Ok(encode(&SnapshotPayload { pairs: self.pairs(&view)? }))
    }

    /// Every key and value of the state-machine data, as `view` sees them.
    fn pairs(&self, view: &rocksdb::SnapshotWithThreadMode<'_, DB>) -> Result<KeyValues, StoreError> {
        let mut pairs = Vec::new();
        for item in view.iterator_cf(self.cf(CF_SM_DATA), rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            pairs.push((key.into_vec(), value.into_vec()));
        }
        Ok(pairs)
    }

    /// Builds a snapshot from one consistent RocksDB view and makes it current.
    fn build(&self) -> Result<typ::Snapshot, StoreError> {
        let view = self.db.snapshot();
        let last_applied = decode_last_applied(view.get_cf(self.cf(CF_SM_META), keys::LAST_APPLIED)?)?;
        let last_membership: typ::StoredMembership = view
            .get_cf(self.cf(CF_SM_META), keys::MEMBERSHIP)?
            .map(|r| decode("membership", &r))
            .transpose()?
            .unwrap_or_default();
        let pairs = self.pairs(&view)?;
        drop(view);
        let data = encode(&SnapshotPayload { pairs });
        let meta = typ::SnapshotMeta { last_log_id: last_applied, last_membership };
        let metrics = crate::metrics::global();
        metrics.snapshots_built.inc();
        metrics.snapshot_size_bytes.set(data.len() as i64);
        let stored = StoredSnapshot { meta: meta.clone(), data };
        // Unsynced: if lost in a crash, openraft rebuilds it from the state at startup.
        self.db.put_cf(self.cf(CF_SNAPSHOT), keys::CURRENT_SNAPSHOT, encode(&stored))?;
        Ok(Snapshot { meta, snapshot: Cursor::new(stored.data) })
    }

    /// Applies committed entries in one batch and answers each with what its commands returned
    /// (nothing for blank and membership entries); written, not synced (the log's WAL syncs it).
    pub fn apply_entries(&self, entries: Vec<typ::Entry>) -> Result<Vec<Vec<CommandResponse>>, StoreError> {
        let mut overlay = Overlay::new(&self.db);
        let mut responses = Vec::with_capacity(entries.len());
        let mut last_applied = None;
        let mut last_membership = None;
        let watched = self.feed.has_subscribers();
        let mut scopes = Vec::new();
        for entry in entries {
            last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(CommandBatch { time_ms, commands }) => {
                    if watched {
                        scopes.extend(commands.iter().filter_map(|c| c.change.scope()));
                    }
                    let mut applier = EntryApplier::new(&mut overlay, entry.log_id.index, time_ms);
                    let applied = commands.into_iter().map(|command| applier.apply(command)).collect::<Result<_, _>>();
                    applied.and_then(|responses| applier.expire_idempotency_keys().map(|()| responses))?
                }
                EntryPayload::Membership(membership) => {
                    last_membership = Some(typ::StoredMembership::new(Some(entry.log_id), membership));
                    Vec::new()
                }
            };
            responses.push(response);
        }
        if last_applied.is_some() {
            let mut batch = overlay.into_batch();
            if let Some(stored) = &last_membership {
                batch.put_cf(self.cf(CF_SM_META), keys::MEMBERSHIP, encode(stored));
            }
            batch.put_cf(self.cf(CF_SM_META), keys::LAST_APPLIED, encode(&last_applied));
            self.db.write(batch)?;
            if !scopes.is_empty() {
                let revision = last_applied.map_or(0, |id| id.index);
                self.feed.publish(Applied { revision, touched: Touched::Scopes(scopes), at: Instant::now() });
            }
        }
        Ok(responses)
    }

    /// The stored membership and last applied log id.
    fn applied(&self) -> Result<(Option<typ::LogId>, typ::StoredMembership), StoreError> {
        let meta = self.cf(CF_SM_META);
        let last_applied = decode_last_applied(self.db.get_cf(meta, keys::LAST_APPLIED)?)?;
        let membership =
            self.db.get_cf(meta, keys::MEMBERSHIP)?.map(|r| decode("membership", &r)).transpose()?.unwrap_or_default();
        Ok((last_applied, membership))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<typ::Snapshot> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build()).await?.map_err(io::Error::other)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> io::Result<(Option<typ::LogId>, typ::StoredMembership)> {
        self.applied().map_err(io::Error::other)
    }

    async fn apply<Strm>(&mut self, mut stream: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut entries = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = stream.next().await {
            let (entry, responder) = item?;
            entries.push(entry);
            responders.push(responder);
        }
        let responses = self.apply_entries(entries).map_err(io::Error::other)?;
        // Only now, with the batch written: an answered client reads its own write.
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &typ::SnapshotMeta, snapshot: Cursor<Vec<u8>>) -> io::Result<()> {
        let this = self.clone();
        let owned_meta = meta.clone();
        let data = snapshot.into_inner();
        let plan = self.plan.take_for(meta.last_log_id);
        tokio::task::spawn_blocking(move || this.install(&owned_meta, data, plan)).await?.map_err(io::Error::other)?;
        crate::metrics::global().snapshots_installed.inc();
        let revision = meta.last_log_id.map_or(0, |id| id.index);
        self.feed.publish(Applied { revision, touched: Touched::Everything, at: Instant::now() });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<typ::Snapshot>> {
        let stored = self.current_snapshot().map_err(io::Error::other)?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Cursor::new(s.data) }))
    }
}

/// Snapshot chunks from a leader (openraft-legacy's chunked transport) are gathered in memory;
/// `network::server` bounds their total size before they get here.
impl SnapshotReceiverFactory<TypeConfig> for StateMachineStore {
    type SnapshotReceiver = Cursor<Vec<u8>>;

    async fn begin_receiving_snapshot(&mut self) -> io::Result<Cursor<Vec<u8>>> {
        Ok(Cursor::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupMeta, Decoder, Encoder, LogPosition};

    #[test]
    fn a_backups_records_are_the_snapshot_payload_byte_for_byte() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            (0..20u8).map(|i| (vec![b'c', 0, b'a' + i], vec![i; usize::from(i) * 3])).collect();
        let meta = BackupMeta {
            cluster_id: "c".into(),
            source_node_id: 1,
            last_applied: LogPosition { term: 1, leader_node_id: 1, index: 9 },
            revision: 9,
            membership: crate::wire::Membership {
                voters: Default::default(),
                learners: Default::default(),
                log_index: 0,
            },
            created_at_ms: 0,
        };
        let mut file = Vec::new();
        let mut encoder = Encoder::new(&meta, &mut file);
        for (key, value) in &pairs {
            encoder.record(key, value, &mut file);
        }
        encoder.finish(&mut file);
        let mut decoder = Decoder::collecting(u64::MAX, None);
        decoder.feed(&file).unwrap();
        let payload = decoder.finish().unwrap().payload;
        assert_eq!(payload, encode(&SnapshotPayload { pairs: pairs.clone() }));
        let decoded: SnapshotPayload = decode("snapshot payload", &payload).unwrap();
        assert_eq!(decoded.pairs, pairs);
    }
}
