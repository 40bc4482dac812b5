//! Fuzz target `peer_raft`: the Raft RPCs peers exchange over the peer listener, decoded as
//! `network::server` decodes their bodies (bincode of openraft's request types over our
//! `TypeConfig`) and as `network::client` decodes the replies; then what the server checks of
//! them (the commands inside appended entries, the snapshot chunk against `SnapshotReceipt`).
//!
//! The first byte selects the decoder; the rest is the body.

#![no_main]

use conflux::command::Command;
use conflux::network::server::SnapshotReceipt;
use conflux::store::state_machine::SnapshotPayload;
use conflux::types::typ;
use libfuzzer_sys::fuzz_target;
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `--max-body-bytes` default: what forwarded commands are held to.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A small `--max-snapshot-bytes`, so chunk sequences reach it.
const SNAPSHOT_LIMIT: u64 = 1 << 20;

/// Decodes `body` as the peer route does; a decoded value must encode again (replies and the
/// log store encode what they decoded, and `store::encode` expects that to succeed).
fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let value: T = bincode::deserialize(body).ok()?;
    bincode::serialize(&value).expect("a decoded value encodes");
    Some(value)
}

/// What a node does with the commands of an entry it holds: they are applied, sized and scoped.
fn look_at(command: &Command) {
    let _ = command.check(MAX_BODY_BYTES);
    let _ = command.size_hint();
    let _ = command.change.scope();
}

/// A sequence of chunks (id, offset, length, done) from raw bytes, checked and recorded as the
/// snapshot route does: whatever was accepted is contiguous from 0 and within the limit.
fn chunk_sequence(mut bytes: &[u8]) {
    let mut receipt = SnapshotReceipt::default();
    // Our model of what was received: (snapshot id, bytes received contiguously from 0).
    let mut model: Option<(String, u64)> = None;
    while bytes.len() >= 14 {
        let (chunk, rest) = bytes.split_at(14);
        bytes = rest;
        let id = format!("s{}", chunk[0] % 3);
        let offset = u64::from_le_bytes(chunk[1..9].try_into().unwrap()) >> (chunk[13] % 64);
        let len = u32::from_le_bytes(chunk[9..13].try_into().unwrap()) as usize % (2 * SNAPSHOT_LIMIT as usize);
        let done = chunk[13] & 0x80 != 0;
        if receipt.check(&id, offset, len, SNAPSHOT_LIMIT).is_err() {
            continue;
        }
        let end = offset + len as u64;
        assert!(end <= SNAPSHOT_LIMIT, "an accepted chunk passes the limit");
        match &model {
            Some((receiving, received)) if *receiving == id => assert!(offset <= *received, "a gap was accepted"),
            _ => assert_eq!(offset, 0, "a new snapshot must start at 0"),
        }
        receipt.accepted(&id, offset, len, done);
        model = match model.take() {
            _ if done => None,
            Some((receiving, received)) if receiving == id => Some((receiving, received.max(end))),
            _ => Some((id, end)),
        };
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 7 {
        0 => {
            if let Some(request) = decode::<typ::AppendEntriesRequest>(body) {
                for entry in &request.entries {
                    if let EntryPayload::Normal(batch) = &entry.payload {
                        batch.commands.iter().for_each(look_at);
                    }
                }
            }
        }
        1 => {
            decode::<typ::VoteRequest>(body);
            decode::<typ::TransferLeaderRequest>(body);
        }
        2 => {
            if let Some(request) = decode::<typ::InstallSnapshotRequest>(body) {
                let receipt = SnapshotReceipt::default();
                let accepted = receipt
                    .check(&request.meta.snapshot_id, request.offset, request.data.len(), SNAPSHOT_LIMIT)
                    .is_ok();
                // A single accepted last chunk is the whole snapshot: install decodes it.
                if accepted && request.done {
                    let _ = conflux::store::decode::<SnapshotPayload>("snapshot payload", &request.data);
                }
            }
        }
        3 => {
            decode::<Result<typ::AppendEntriesResponse, typ::RaftError>>(body);
        }
        4 => {
            decode::<Result<typ::VoteResponse, typ::RaftError>>(body);
            decode::<Result<typ::TransferLeaderResponse, openraft::error::Fatal<conflux::types::TypeConfig>>>(body);
        }
        5 => {
            decode::<Result<typ::InstallSnapshotResponse, typ::RaftError<typ::InstallSnapshotError>>>(body);
        }
        _ => chunk_sequence(body),
    }
});
