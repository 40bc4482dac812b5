//! The backup file format: one node's applied state machine, read from one RocksDB snapshot
//! (`GET /admin/backup`), checked and installed by `POST /admin/restore`, verified by
//! `client::Client::backup` while it writes the file. Pure: bytes in, bytes out; built without
//! the `server` feature, so the operator and the CLI can check a file they hold.
//!
//! ```text
//! file     = header records end checksum
//! header   = magic "CFXBKUP\0"                       8 bytes
//!            format version                           u32 little-endian (FORMAT_VERSION)
//!            meta length                              u32 little-endian (at most 1 MiB)
//!            meta                                     JSON of BackupMeta
//! records  = { key length u64 LE, key, value length u64 LE, value }*
//!            every key and value of the state machine, keys non-empty, strictly ascending
//!            and below 0xff
//! end      = 0xffffffffffffffff (where a key length would be), record count u64 LE
//! checksum = sha256 of every byte before it           32 bytes; nothing follows
//! ```
//!
//! The records are, byte for byte, the pairs of the state machine's snapshot encoding
//! (`store::state_machine::SnapshotPayload` in bincode: a u64 count, then each key and value as
//! a u64 length and the bytes), so a restore prefixes the count and hands them to Raft as a
//! snapshot without decoding a record; [`Decoder::collecting`] builds exactly that. Every record
//! of the state machine is in a backup: tenants, apps, envs, configs, versions, schemas, releases,
//! audit records, token records (hashes only, never secrets) and the idempotency answers of the
//! last 24 hours (so a client retrying a write it sent the old cluster is answered, not applied
//! twice).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::wire::{self, NodeId};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"CFXBKUP\0";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest metadata section accepted.
pub const MAX_META_BYTES: u32 = 1024 * 1024;
/// Where a key length would be, this marks the end of the records.
const END_OF_RECORDS: u64 = u64::MAX;
const CHECKSUM_BYTES: usize = 32;

/// What a backup came from, at the head of the file (JSON, so `head -c 2000 FILE` shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// The cluster whose state this is.
    pub cluster_id: String,
    /// The node that wrote the backup.
    pub source_node_id: NodeId,
    /// The last Raft log entry applied to the state.
    pub last_applied: LogPosition,
    /// The state's revision: `last_applied.index`.
    pub revision: u64,
    /// The membership in effect at that entry.
    pub membership: wire::Membership,
    /// When the backup was taken, in milliseconds since the Unix epoch (the source node's clock).
    pub created_at_ms: u64,
}

/// A Raft log entry's id: the term and node of the leader that proposed it, and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub term: u64,
    pub leader_node_id: NodeId,
    pub index: u64,
}

/// Why bytes are not a whole, intact backup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Conflux backup: the file does not start with the backup magic")]
    NotABackup,
    #[error("backup format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("the backup's metadata is invalid: {0}")]
    BadMeta(String),
    #[error("the backup is truncated: it ends after {bytes} bytes, inside its {part}")]
    Truncated { bytes: u64, part: &'static str },
    #[error("record {index} (at byte {offset}) is invalid: {reason}")]
    BadRecord { index: u64, offset: u64, reason: &'static str },
    #[error("the backup says it holds {declared} records, but {found} were read")]
    CountMismatch { declared: u64, found: u64 },
    #[error("checksum mismatch: the file says sha256 {expected}, its content hashes to {actual}; the file is corrupt")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("bytes follow the backup's checksum; the file is corrupt or two files were joined")]
    TrailingBytes,
    #[error("the backup is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
}

/// `bytes` as lowercase hex: how checksums (a backup's trailer, a version's content) are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Writes a backup: [`Encoder::new`] (header), [`Encoder::record`] for each key in ascending
/// order, then [`Encoder::finish`]. Each appends to the caller's buffer, so a producer can send
/// the buffer away whenever it is large enough.
pub struct Encoder {
    hasher: Sha256,
    records: u64,
}

impl Encoder {
    /// Appends the header with `meta` to `out`.
    pub fn new(meta: &BackupMeta, out: &mut Vec<u8>) -> Encoder {
        let meta = serde_json::to_vec(meta).expect("backup metadata serializes");
        let mut encoder = Encoder { hasher: Sha256::new(), records: 0 };
        let start = out.len();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        encoder.hasher.update(&out[start..]);
        encoder
    }

    /// Appends one record; keys must come in strictly ascending order.
    pub fn record(&mut self, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value);
        self.hasher.update(&out[start..]);
        self.records += 1;
    }

    /// Appends the end marker, the record count and the checksum.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&END_OF_RECORDS.to_le_bytes());
        out.extend_from_slice(&self.records.to_le_bytes());
        self.hasher.update(&out[start..]);
        out.extend_from_slice(&self.hasher.finalize());
    }
}

/// A backup read whole and found intact.
#[derive(Debug)]
pub struct Backup {
    pub meta: BackupMeta,
    pub records: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// From [`Decoder::collecting`]: the records as a state-machine snapshot payload (the count,
    /// then the records as they are in the file); empty from [`Decoder::verifying`].
    pub payload: Vec<u8>,
}

/// Where the decoder is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    Meta { len: usize },
    Records,
    Count,
    Checksum,
    Done,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Header => "header",
            Part::Meta { .. } => "metadata",
            Part::Records => "records",
            Part::Count => "record count",
            Part::Checksum | Part::Done => "checksum",
        }
    }
}

/// Reads a backup pushed to it in chunks of any size (as they come off a network or a file),
/// checking it as it goes: [`Decoder::feed`] each chunk, then [`Decoder::finish`].
pub struct Decoder {
    /// Bytes received and not yet consumed.
    pending: Vec<u8>,
    /// Bytes consumed so far (offsets in errors).
    consumed: u64,
    received: u64,
    limit: u64,
    part: Part,
    hasher: Sha256,
    meta: Option<BackupMeta>,
    records: u64,
    last_key: Vec<u8>,
    /// `Some` when collecting the snapshot payload.
    payload: Option<Vec<u8>>,
}

impl Decoder {
    /// A decoder that checks the file and keeps only its metadata.
    pub fn verifying() -> Decoder {
        Decoder::new(u64::MAX, None)
    }

    /// A decoder that also collects the records as a snapshot payload, refusing files over
    /// `limit` bytes (`size_hint`: the expected size, to allocate once).
    pub fn collecting(limit: u64, size_hint: Option<u64>) -> Decoder {
        let capacity = size_hint.unwrap_or(0).min(limit).min(1 << 30) as usize;
        let mut payload = Vec::with_capacity(capacity);
        payload.extend_from_slice(&0u64.to_le_bytes());
        Decoder::new(limit, Some(payload))
    }

    fn new(limit: u64, payload: Option<Vec<u8>>) -> Decoder {
        Decoder {
            pending: Vec::new(),
            consumed: 0,
            received: 0,
            limit,
            part: Part::Header,
            hasher: Sha256::new(),
            meta: None,
            records: 0,
            last_key: Vec::new(),
            payload,
        }
    }

    /// The metadata, once the header has been read.
    pub fn meta(&self) -> Option<&BackupMeta> {
        self.meta.as_ref()
    }

    /// Takes the next chunk of the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.part == Part::Done {
            return Err(BackupError::TrailingBytes);
        }
        self.received += chunk.len() as u64;
        if self.received > self.limit {
            return Err(BackupError::TooLarge { limit: self.limit });
        }
        self.pending.extend_from_slice(chunk);
        let pending = std::mem::take(&mut self.pending);
        let mut at = 0;
        let stepped = loop {
            match self.step(&pending[at..]) {
                Ok(Some(used)) => at += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.pending = pending;
        self.pending.drain(..at);
        stepped
    }

    /// Checks that the file ended where a backup ends, and returns it.
    pub fn finish(self) -> Result<Backup, BackupError> {
        if self.part != Part::Done {
            return Err(BackupError::Truncated { bytes: self.received, part: self.part.name() });
        }
        let meta = self.meta.expect("a finished backup has its metadata");
        let mut payload = self.payload.unwrap_or_default();
        if payload.len() >= 8 {
            payload[..8].copy_from_slice(&self.records.to_le_bytes());
        }
        Ok(Backup { meta, records: self.records, bytes: self.received, payload })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl Decoder {
    /// Consumes the next item from the front of `bytes` when it is all there: `Some(its
    /// length)`, or `None` to wait for more bytes.
    fn step(&mut self, bytes: &[u8]) -> Result<Option<usize>, BackupError> {
        let used = match self.part {
            Part::Header => {
                let seen = bytes.len().min(MAGIC.len());
                if bytes[..seen] != MAGIC[..seen] {
                    return Err(BackupError::NotABackup);
                }
                if bytes.len() < 16 {
                    return Ok(None);
                }
                let found = u32_at(bytes, 8);
                if found != FORMAT_VERSION {
                    return Err(BackupError::UnsupportedVersion { found, supported: FORMAT_VERSION });
                }
                let len = u32_at(bytes, 12);
                if len > MAX_META_BYTES {
                    return Err(BackupError::BadMeta(format!("{len} bytes, over the limit of {MAX_META_BYTES}")));
                }
                self.part = Part::Meta { len: len as usize };
                16
            }
            Part::Meta { len } => {
                if bytes.len() < len {
                    return Ok(None);
                }
                let meta: BackupMeta =
                    serde_json::from_slice(&bytes[..len]).map_err(|e| BackupError::BadMeta(e.to_string()))?;
                if meta.revision != meta.last_applied.index {
                    return Err(BackupError::BadMeta(format!(
                        "revision {} is not the last applied index {}",
                        meta.revision, meta.last_applied.index
                    )));
                }
                self.meta = Some(meta);
                self.part = Part::Records;
                len
            }
            Part::Records => match self.record_length(bytes)? {
                None => return Ok(None),
                Some(0) => {
                    self.part = Part::Count;
                    8
                }
                Some(total) => {
                    if let Some(payload) = &mut self.payload {
                        payload.extend_from_slice(&bytes[..total]);
                    }
                    self.records += 1;
                    total
                }
            },
            Part::Count => {
                if bytes.len() < 8 {
                    return Ok(None);
                }
                let declared = u64_at(bytes, 0);
                if declared != self.records {
                    return Err(BackupError::CountMismatch { declared, found: self.records });
                }
                self.part = Part::Checksum;
                8
            }
            Part::Checksum => {
                if bytes.len() < CHECKSUM_BYTES {
                    return Ok(None);
                }
                let actual = self.hasher.clone().finalize();
                if bytes[..CHECKSUM_BYTES] != actual[..] {
                    return Err(BackupError::ChecksumMismatch {
                        expected: hex(&bytes[..CHECKSUM_BYTES]),
                        actual: hex(&actual),
                    });
                }
                self.part = Part::Done;
                self.consumed += CHECKSUM_BYTES as u64;
                return Ok(Some(CHECKSUM_BYTES));
            }
            Part::Done if bytes.is_empty() => return Ok(None),
            Part::Done => return Err(BackupError::TrailingBytes),
        };
        self.hasher.update(&bytes[..used]);
        self.consumed += used as u64;
        Ok(Some(used))
    }

    /// The length of the record at the front of `bytes`, checked: `Some(0)` for the end marker,
    /// `None` while it is not all there.
    fn record_length(&mut self, bytes: &[u8]) -> Result<Option<usize>, BackupError> {
        if bytes.len() < 8 {
            return Ok(None);
        }
        let bad = |reason| BackupError::BadRecord { index: self.records, offset: self.consumed, reason };
        let key_len = u64_at(bytes, 0);
        if key_len == END_OF_RECORDS {
            return Ok(Some(0));
        }
        if key_len == 0 {
            return Err(bad("its key is empty"));
        }
        let key_len = usize::try_from(key_len).ok().filter(|len| (*len as u64) < self.limit);
        let key_len = key_len.ok_or_else(|| bad("its key length is past the size limit"))?;
        let Some(value_at) = key_len.checked_add(16) else { return Err(bad("its key length is past the size limit")) };
        if bytes.len() < value_at {
            return Ok(None);
        }
        let value_len = usize::try_from(u64_at(bytes, value_at - 8)).ok().filter(|len| (*len as u64) < self.limit);
        let total = value_len.and_then(|len| value_at.checked_add(len));
        let total = total.ok_or_else(|| bad("its value length is past the size limit"))?;
        if bytes.len() < total {
            return Ok(None);
        }
        let key = &bytes[8..8 + key_len];
        if key[0] == 0xff {
            return Err(bad("its key is outside the state machine's keys"));
        }
        if key <= self.last_key.as_slice() {
            return Err(bad("keys are not in ascending order"));
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta() -> BackupMeta {
        BackupMeta {
            cluster_id: "c0ffee".into(),
            source_node_id: 7,
            last_applied: LogPosition { term: 3, leader_node_id: 5, index: 42 },
            revision: 42,
            membership: wire::Membership {
                voters: BTreeMap::from([(5, "http://a:7001".into()), (7, "http://b:7001".into())]),
                learners: BTreeMap::new(),
                log_index: 2,
            },
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn records() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = (0..50u32)
            .map(|i| (format!("c\0acme\0k{i:03}").into_bytes(), vec![i as u8; (i * 37 % 300) as usize]))
            .collect();
        records.push((b"t\0acme".to_vec(), vec![9; 10]));
        records
    }

    fn encode(meta: &BackupMeta, records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = Encoder::new(meta, &mut out);
        for (key, value) in records {
            encoder.record(key, value, &mut out);
        }
        encoder.finish(&mut out);
        out
    }

    fn decode(bytes: &[u8], chunk: usize) -> Result<Backup, BackupError> {
        let mut decoder = Decoder::collecting(u64::MAX, None);
        for piece in bytes.chunks(chunk) {
            decoder.feed(piece)?;
        }
        decoder.finish()
    }

    /// The snapshot payload the records stand for: a u64 count, then each key and value as a u64
    /// length and the bytes (bincode's encoding of the state machine's snapshot).
    fn payload(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = (records.len() as u64).to_le_bytes().to_vec();
        for (key, value) in records {
            for bytes in [key, value] {
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    #[test]
    fn a_backup_reads_back_whole_in_chunks_of_any_size() {
        let records = records();
        let bytes = encode(&meta(), &records);
        for chunk in [1, 7, 64, 4096, bytes.len()] {
            let backup = decode(&bytes, chunk).unwrap();
            assert_eq!(backup.meta, meta());
            assert_eq!(backup.records, records.len() as u64);
            assert_eq!(backup.bytes, bytes.len() as u64);
            assert_eq!(backup.payload, payload(&records), "chunks of {chunk}");
        }
        let mut verifying = Decoder::verifying();
        verifying.feed(&bytes).unwrap();
        assert_eq!(verifying.meta(), Some(&meta()));
        assert!(verifying.finish().unwrap().payload.is_empty());
        let empty = decode(&encode(&meta(), &[]), 3).unwrap();
        assert_eq!((empty.records, empty.payload), (0, 0u64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_changed_byte_anywhere_is_found() {
        let bytes = encode(&meta(), &records());
        for at in (0..bytes.len()).step_by(13).chain([bytes.len() - 1]) {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x20;
            assert!(decode(&corrupt, 100).is_err(), "a flipped byte at {at} went unnoticed");
        }
        let mut in_a_value = bytes.clone();
        let value_at = bytes.len() - 32 - 16 - 5;
        in_a_value[value_at] ^= 1;
        assert!(matches!(decode(&in_a_value, 100), Err(BackupError::ChecksumMismatch { .. })));
    }

    #[test]
    fn a_truncated_backup_is_refused_wherever_it_is_cut() {
        let bytes = encode(&meta(), &records());
        for len in 0..bytes.len() {
            match decode(&bytes[..len], 50) {
                Err(BackupError::Truncated { bytes, part }) => {
                    assert_eq!(bytes, len as u64);
                    assert!(!part.is_empty());
                }
                other => panic!("cut at {len}: {other:?}"),
            }
        }
        let error = decode(&bytes[..bytes.len() - 10], 50).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("the backup is truncated: it ends after {} bytes, inside its checksum", bytes.len() - 10)
        );
    }

    #[test]
    fn another_format_version_or_another_file_is_refused() {
        let mut bytes = encode(&meta(), &records());
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode(&bytes, 1000).unwrap_err(), BackupError::UnsupportedVersion { found: 2, supported: 1 });
        assert_eq!(decode(b"{\"not\": \"a backup\"}", 1000).unwrap_err(), BackupError::NotABackup);
        assert_eq!(decode(b"CFX", 1000).unwrap_err(), BackupError::Truncated { bytes: 3, part: "header" });
        assert_eq!(decode(b"CFXz", 1).unwrap_err(), BackupError::NotABackup);
    }

    #[test]
    fn bytes_after_the_checksum_are_refused() {
        let mut bytes = encode(&meta(), &records());
        bytes.push(0);
        assert_eq!(decode(&bytes, 1000).unwrap_err(), BackupError::TrailingBytes);
        let mut twice = encode(&meta(), &records());
        twice.extend(encode(&meta(), &records()));
        assert_eq!(decode(&twice, 333).unwrap_err(), BackupError::TrailingBytes);
    }

    #[test]
    fn records_out_of_order_or_outside_the_state_machine_are_refused() {
        let mut swapped = records();
        swapped.swap(3, 4);
        let error = decode(&encode(&meta(), &swapped), 64).unwrap_err();
        assert!(matches!(error, BackupError::BadRecord { index: 4, reason: "keys are not in ascending order", .. }));
        let mut twice = records();
        twice.insert(1, twice[0].clone());
        assert!(matches!(decode(&encode(&meta(), &twice), 64), Err(BackupError::BadRecord { index: 1, .. })));
        let outside = vec![(vec![0xff, 1], vec![1])];
        assert!(matches!(decode(&encode(&meta(), &outside), 64), Err(BackupError::BadRecord { index: 0, .. })));
        let empty_key = vec![(Vec::new(), vec![1])];
        assert!(matches!(decode(&encode(&meta(), &empty_key), 64), Err(BackupError::BadRecord { index: 0, .. })));
    }

    #[test]
    fn a_backup_over_the_limit_is_refused_before_it_is_read_whole() {
        let bytes = encode(&meta(), &records());
        let mut decoder = Decoder::collecting(1000, Some(bytes.len() as u64));
        let refused = bytes.chunks(100).map(|chunk| decoder.feed(chunk)).find_map(Result::err);
        assert_eq!(refused, Some(BackupError::TooLarge { limit: 1000 }));
        let mut huge_key = encode(&meta(), &[]);
        let records_at = huge_key.len() - 32 - 16;
        huge_key.truncate(records_at);
        huge_key.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
        let mut decoder = Decoder::collecting(1 << 20, None);
        assert!(matches!(decoder.feed(&huge_key), Err(BackupError::BadRecord { index: 0, .. })));
    }

    proptest::proptest! {
        /// Whatever arrives, in whatever chunks: an error or a backup, never a panic; and what
        /// decodes re-encodes to the same bytes (nothing in a file is ignored).
        #[test]
        fn any_bytes_decode_to_an_error_or_to_exactly_themselves(
            cut in 0usize..4000,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            flip in proptest::option::of((0usize..4000, 1u8..=255)),
            chunk in 1usize..97,
        ) {
            let records = records();
            let mut bytes = encode(&meta(), &records);
            bytes.truncate(cut.min(bytes.len()));
            bytes.extend(tail);
            if let Some((at, mask)) = flip {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte ^= mask;
                }
            }
            if let Ok(backup) = decode(&bytes, chunk) {
                let mut pairs = Vec::new();
                let mut at = 8;
                while at < backup.payload.len() {
                    let mut field = || {
                        let len = u64::from_le_bytes(backup.payload[at..at + 8].try_into().unwrap()) as usize;
                        let value = backup.payload[at + 8..at + 8 + len].to_vec();
                        at += 8 + len;
                        value
                    };
                    let key = field();
                    let value = field();
                    pairs.push((key, value));
                }
                proptest::prop_assert_eq!(encode(&backup.meta, &pairs), bytes);
            }
        }
    }

    #[test]
    fn metadata_that_contradicts_itself_is_refused() {
        let mut wrong = meta();
        wrong.revision = 41;
        assert!(matches!(decode(&encode(&wrong, &[]), 10), Err(BackupError::BadMeta(_))));
    }
}
