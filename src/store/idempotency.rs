//! `Idempotency-Key`: a change that carries a key this actor already used within [`KEEP_MS`] is
//! not applied again; it answers what the first one answered (or, if the key came with a different
//! change, `IdempotencyKeyReused`). Only successes are remembered: a refusal changed nothing, so
//! applying its retry is harmless and may succeed. Keys expire by the entries' leader time, a
//! bounded number per entry, so every replica keeps and drops exactly the same ones.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::apply::EntryApplier;
use super::{encode, keys, StoreError};
use crate::command::{Command, CommandResponse};

/// How long an answer is kept for retries.
pub const KEEP_MS: u64 = 24 * 3600 * 1000;
/// At most this many expired keys are dropped per log entry, so expiry never makes one apply slow.
const EXPIRE_PER_ENTRY: usize = 64;

/// What the first change with a key answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    /// sha256 of the change, so a key reused for a different change is told apart.
    fingerprint: [u8; 32],
    response: CommandResponse,
    time_ms: u64,
}

fn is_success(response: &CommandResponse) -> bool {
    matches!(
        response,
        CommandResponse::Put { .. }
            | CommandResponse::Done { .. }
            | CommandResponse::Written { .. }
            | CommandResponse::Deleted { .. }
            | CommandResponse::Released { .. }
    )
}

impl EntryApplier<'_, '_> {
    pub(super) fn apply_once(&mut self, key: &str, command: Command) -> Result<CommandResponse, StoreError> {
        let fingerprint: [u8; 32] = Sha256::digest(encode(&command.change)).into();
        let actor = command.origin.actor.clone();
        let stored = keys::idempotency(&actor, key);
        if let Some(first) = self.overlay.get::<Answer>("idempotency answer", &stored)? {
            if first.time_ms.saturating_add(KEEP_MS) > self.time_ms {
                return Ok(if first.fingerprint == fingerprint {
                    first.response
                } else {
                    CommandResponse::IdempotencyKeyReused
                });
            }
        }
        let response = self.apply_change(command)?;
        if is_success(&response) {
            let answer = Answer { fingerprint, response: response.clone(), time_ms: self.time_ms };
            self.overlay.put(stored, &answer);
            self.overlay.put(keys::idempotency_by_time(self.time_ms, &actor, key), &());
        }
        Ok(response)
    }

    /// Drops up to [`EXPIRE_PER_ENTRY`] answers older than [`KEEP_MS`] at this entry's time.
    pub(super) fn expire_idempotency_keys(&mut self) -> Result<(), StoreError> {
        let prefix = keys::idempotency_by_time_prefix();
        let cutoff = self.time_ms.saturating_sub(KEEP_MS);
        let db = self.overlay.db();
        let mut expired = Vec::new();
        for item in db.prefix_iterator_cf(self.overlay.data(), &prefix).take(EXPIRE_PER_ENTRY) {
            let (index_key, _) = item?;
            let Some(rest) = index_key.strip_prefix(prefix.as_slice()) else { break };
            let Some((time, names)) = rest.split_first_chunk::<8>() else { break };
            if u64::from_be_bytes(*time) >= cutoff {
                break;
            }
            let mut parts = names.strip_prefix(b"\0").unwrap_or(names).splitn(2, |b| *b == 0);
            let (actor, key) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let answer = keys::idempotency(&String::from_utf8_lossy(actor), &String::from_utf8_lossy(key));
            expired.push((index_key.to_vec(), answer));
        }
        for (index_key, answer) in expired {
            // A newer answer under the same key (used again after expiry) has its own index entry.
            let newer = self.overlay.get::<Answer>("idempotency answer", &answer)?.is_some_and(|a| a.time_ms >= cutoff);
            if !newer {
                self.overlay.delete(answer);
            }
            self.overlay.delete(index_key);
        }
        Ok(())
    }
}
