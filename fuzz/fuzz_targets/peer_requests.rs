//! Fuzz target `peer_requests`: Conflux's own peer bodies, decoded as `network::server` decodes
//! them and checked as it checks them: a forwarded write (`Command`, then `Command::check`), a
//! log entry's `CommandBatch`, a forwarded membership change (`MembershipChange::check`), the join
//! call (`JoinCluster`, then `check_cluster_id`), a watchers query (answered from a real
//! `Presence`); and the replies a node decodes from peers (write and membership outcomes, read
//! index, watcher pages merged by `presence::merge`).
//!
//! The first byte selects the decoder; the rest is the body.

#![no_main]

use axum::http::HeaderValue;
use conflux::command::{Command, CommandBatch, CommandResponse};
use conflux::model::ConfigKey;
use conflux::network::identity::check_cluster_id;
use conflux::service::membership::{JoinCluster, MembershipChange, MembershipOutcome};
use conflux::service::watchers::WatchersQuery;
use conflux::service::Error;
use conflux::watch::presence::{self, Presence, PresencePage, Who};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

const MAX_BODY_BYTES: usize = 1024 * 1024;

fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let value: T = bincode::deserialize(body).ok()?;
    bincode::serialize(&value).expect("a decoded value encodes");
    Some(value)
}

/// What the forwarded-write route and the write batcher do with a command.
fn check(command: &Command) {
    if command.check(MAX_BODY_BYTES).is_ok() {
        let _ = command.size_hint();
        let _ = command.change.scope();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 9 {
        0 => {
            if let Some(command) = decode::<Command>(body) {
                check(&command);
            }
        }
        1 => {
            if let Some(batch) = decode::<CommandBatch>(body) {
                batch.commands.iter().for_each(check);
            }
        }
        2 => {
            if let Some(change) = decode::<MembershipChange>(body) {
                let _ = change.check();
            }
        }
        3 => {
            if let Some(join) = decode::<JoinCluster>(body) {
                if check_cluster_id(&join.cluster_id).is_ok() {
                    // It is sent in a header of every later peer call.
                    assert!(HeaderValue::from_str(&join.cluster_id).is_ok(), "an accepted cluster id fits a header");
                }
            }
        }
        4 => {
            if let Some(query) = decode::<WatchersQuery>(body) {
                let presence = Presence::new(1);
                let key = ConfigKey::new("t", "a", "e", "c").expect("a valid key");
                presence.join(&key, &Who::new(Some("pod-1"), 1), &Default::default(), 3);
                presence.join(&key, &Who::new(None, 2), &Default::default(), 4);
                let page = presence.page(&query.key, query.after.as_ref(), query.limit);
                assert!(page.watchers.len() <= query.limit);
            }
        }
        5 => {
            decode::<Result<CommandResponse, Error>>(body);
        }
        6 => {
            decode::<Result<MembershipOutcome, Error>>(body);
        }
        7 => {
            decode::<Result<u64, Error>>(body);
        }
        _ => {
            // The pages of every member, as `cluster_watchers` merges them.
            if let Some((limit, pages)) = decode::<(u16, Vec<PresencePage>)>(body) {
                let (merged, next) = presence::merge(pages, usize::from(limit));
                assert!(merged.watchers.len() <= usize::from(limit));
                assert!(next.is_none() || merged.watchers.len() == usize::from(limit));
            }
        }
    }
});
