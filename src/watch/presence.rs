//! Who watches what on this node, for `GET …/configs/{c}/clients`: per config, each client (by
//! client id; clients without one by session) with its labels, the version it holds, since when
//! it watches and whether a request of it is open now. A long-poll client is between requests for
//! a moment after each answer, so a client that left stays listed for [`LINGER`]. Pages from
//! several nodes merge in one order: (client, node).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::model::release::Labels;
use crate::model::ConfigKey;
use crate::types::NodeId;
use crate::wire::ConfigWatcher;

/// How long a client that closed its last watch request stays listed.
pub const LINGER: Duration = Duration::from_secs(15);

/// How a session appears in the listing: its client id, or `~<session>` without one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Who(String);

impl Who {
    pub fn new(client_id: Option<&str>, session: u64) -> Who {
        Who(client_id.map_or_else(|| format!("~{session}"), str::to_string))
    }

    fn is_anonymous(&self) -> bool {
        self.0.starts_with('~')
    }
}

struct Entry {
    labels: Labels,
    version: u64,
    since_ms: u64,
    open: u32,
    last_seen: Instant,
}

/// One node's answer for one page: its watchers after the cursor (at most the limit), and counts
/// over all of its watchers of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresencePage {
    pub watchers: Vec<Listed>,
    pub versions: BTreeMap<u64, u64>,
    pub total: u64,
}

/// A watcher and its place in the listing's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub position: Cursor,
    pub watcher: ConfigWatcher,
}

/// Where a page starts: after this (client, node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub client: String,
    pub node: NodeId,
}

impl Cursor {
    /// `client@node`, as `next_cursor` carries it.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (client, node) = text.rsplit_once('@')?;
        Some(Cursor { client: client.to_string(), node: node.parse().ok()? })
    }

    pub fn text(&self) -> String {
        format!("{}@{}", self.client, self.node)
    }
}

/// The watchers of this node.
pub struct Presence {
    node: NodeId,
    entries: Mutex<HashMap<ConfigKey, BTreeMap<Who, Entry>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Presence {
    pub fn new(node: NodeId) -> Presence {
        Presence { node, entries: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ConfigKey, BTreeMap<Who, Entry>>) -> T) -> T {
        f(&mut self.entries.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A request of `who` watching `key` opened, holding `version`.
    pub fn join(&self, key: &ConfigKey, who: &Who, labels: &Labels, version: u64) {
        self.with(|entries| {
            let entry = entries.entry(key.clone()).or_default().entry(who.clone()).or_insert_with(|| Entry {
                labels: Labels::new(),
                version,
                since_ms: now_ms(),
                open: 0,
                last_seen: Instant::now(),
            });
            entry.labels = labels.clone();
            entry.version = version;
            entry.open += 1;
            entry.last_seen = Instant::now();
        })
    }

    /// `who` was handed `version` of `key`.
    pub fn hold(&self, key: &ConfigKey, who: &Who, version: u64) {
        self.with(|entries| {
            if let Some(entry) = entries.get_mut(key).and_then(|e| e.get_mut(who)) {
                entry.version = version;
            }
        })
    }

    /// A request of `who` watching `key` closed.
    pub fn leave(&self, key: &ConfigKey, who: &Who) {
        self.with(|entries| {
            let Some(clients) = entries.get_mut(key) else { return };
            if let Some(entry) = clients.get_mut(who) {
                entry.open = entry.open.saturating_sub(1);
                entry.last_seen = Instant::now();
                if entry.open == 0 && who.is_anonymous() {
                    clients.remove(who);
                }
            }
            if clients.is_empty() {
                entries.remove(key);
            }
        })
    }

    /// Drops clients that left more than [`LINGER`] ago.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.with(|entries| {
            entries.retain(|_, clients| {
                clients.retain(|_, e| e.open > 0 || now.duration_since(e.last_seen) < LINGER);
                !clients.is_empty()
            })
        })
    }

    /// This node's watchers of `key` after `after`, at most `limit`, and counts over all of them.
    pub fn page(&self, key: &ConfigKey, after: Option<&Cursor>, limit: usize) -> PresencePage {
        self.sweep();
        self.with(|entries| {
            let mut page = PresencePage::default();
            for (who, entry) in entries.get(key).into_iter().flatten() {
                *page.versions.entry(entry.version).or_default() += 1;
                page.total += 1;
                let watcher = ConfigWatcher {
                    client_id: (!who.is_anonymous()).then(|| who.0.clone()),
                    labels: entry.labels.clone(),
                    version: entry.version,
                    node: self.node,
                    since_ms: entry.since_ms,
                    connected: entry.open > 0,
                };
                let position = Cursor { client: who.0.clone(), node: self.node };
                if after.is_none_or(|a| position > *a) {
                    page.watchers.push(Listed { position, watcher });
                }
            }
            // Who orders like the cursor's client, and the node is the same for all.
            page.watchers.truncate(limit);
            page
        })
    }
}

/// Merges the pages of several nodes: the first `limit` watchers in (client, node) order, the
/// cursor after them if more remain, and the counts summed.
pub fn merge(pages: Vec<PresencePage>, limit: usize) -> (PresencePage, Option<Cursor>) {
    let mut merged = PresencePage::default();
    // The counts of other nodes' pages come from their replies: summed saturating, never trusted
    // not to overflow.
    for page in pages {
        merged.total = merged.total.saturating_add(page.total);
        for (version, count) in page.versions {
            let sum = merged.versions.entry(version).or_default();
            *sum = sum.saturating_add(count);
        }
        merged.watchers.extend(page.watchers);
    }
    merged.watchers.sort_by(|a, b| a.position.cmp(&b.position));
    let more = merged.watchers.len() > limit;
    merged.watchers.truncate(limit);
    let next = if more { merged.watchers.last().map(|w| w.position.clone()) } else { None };
    (merged, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConfigKey {
        ConfigKey::new("t", "a", "e", "c").unwrap()
    }

    #[test]
    fn merging_pages_whose_counts_overflow_saturates() {
        let huge = PresencePage { watchers: Vec::new(), versions: [(3, u64::MAX)].into(), total: u64::MAX };
        let (merged, next) = merge(vec![huge.clone(), huge], 10);
        assert_eq!(merged.total, u64::MAX);
        assert_eq!(merged.versions[&3], u64::MAX);
        assert_eq!(next, None);
    }

    #[test]
    fn a_client_is_listed_while_open_and_lingers_only_when_named() {
        let presence = Presence::new(7);
        let labels: Labels = [("zone".to_string(), "a".to_string())].into();
        let named = Who::new(Some("pod-1"), 1);
        let anonymous = Who::new(None, 2);
        presence.join(&key(), &named, &labels, 3);
        presence.join(&key(), &anonymous, &Labels::new(), 0);
        presence.hold(&key(), &named, 4);
        let page = presence.page(&key(), None, 10);
        assert_eq!(page.total, 2);
        assert_eq!(page.versions, [(0, 1), (4, 1)].into());
        let first = &page.watchers[1].watcher;
        assert_eq!((first.client_id.as_deref(), first.version, first.node, first.connected), (None, 0, 7, true));
        presence.leave(&key(), &named);
        presence.leave(&key(), &anonymous);
        let page = presence.page(&key(), None, 10);
        assert_eq!(page.total, 1, "the named client lingers, the anonymous one is gone");
        assert!(!page.watchers[0].watcher.connected);
        assert_eq!(page.watchers[0].watcher.labels, labels);
    }

    #[test]
    fn pages_of_several_nodes_merge_in_client_then_node_order_with_a_cursor() {
        let nodes: Vec<Presence> = (1..=3).map(Presence::new).collect();
        for (n, presence) in nodes.iter().enumerate() {
            for c in 0..4 {
                presence.join(&key(), &Who::new(Some(&format!("c{c}")), 0), &Labels::new(), n as u64 + 1);
            }
        }
        let mut seen = Vec::new();
        let mut cursor: Option<Cursor> = None;
        loop {
            let pages = nodes.iter().map(|p| p.page(&key(), cursor.as_ref(), 5)).collect();
            let (page, next) = merge(pages, 5);
            assert_eq!(page.total, 12);
            assert_eq!(page.versions, [(1, 4), (2, 4), (3, 4)].into());
            seen.extend(page.watchers.iter().map(|w| (w.watcher.client_id.clone().unwrap(), w.watcher.node)));
            match next {
                Some(next) => cursor = Some(Cursor::parse(&next.text()).unwrap()),
                None => break,
            }
        }
        let expected: Vec<_> = (0..4).flat_map(|c| (1..=3).map(move |n| (format!("c{c}"), n))).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn cursors_round_trip_even_when_the_client_id_has_an_at_sign() {
        let cursor = Cursor { client: "svc@zone".into(), node: 42 };
        assert_eq!(Cursor::parse(&cursor.text()), Some(cursor));
        assert_eq!(Cursor::parse("no-node"), None);
    }
}
