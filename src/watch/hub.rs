//! The node's watch index: which sessions watch which configs (and which watch a whole env),
//! the latest view of each watched config, the per-tenant watcher count, and whether the node can
//! serve watchers at all. Two tasks keep it current: one follows the store's applied feed and
//! wakes exactly the sessions whose configs an apply touched (reading each touched config once,
//! however many sessions watch it); one follows Raft's metrics for the leader and the applied
//! revision.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};

use super::presence::Presence;
use crate::command::Scope;
use crate::metrics;
use crate::model::{ConfigKey, Namespace};
use crate::store::feed::{Applied, Touched};
use crate::store::{ConfigView, Store, StoreError};
use crate::types::{typ, NodeId};

/// How often a leader confirms with a quorum that it still leads, and how long it waits.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(1);

/// Whether this node still leads: a quorum answered a heartbeat round within [`LEADERSHIP_CHECK`].
async fn confirm_leadership(raft: &typ::Raft) -> bool {
    matches!(
        tokio::time::timeout(LEADERSHIP_CHECK, raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex)).await,
        Ok(Ok(_))
    )
}

/// Bounds on what watchers may hold on one node.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    /// Open watch sessions per tenant on this node; more are refused with 429.
    pub max_watchers_per_tenant: usize,
    /// Configs one session may watch.
    pub max_configs_per_watch: usize,
    /// How long the node may know no leader before it sends its watchers elsewhere.
    pub leaderless_grace: Duration,
}

/// Whether this node serves watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Serving,
    /// No leader known for longer than the grace period: this node's state may be stale.
    NoLeader,
    ShuttingDown,
}

/// The names of a session's configs that may have changed since it last looked.
#[derive(Debug, Default)]
pub struct Pending {
    pub names: BTreeSet<String>,
    /// The whole state was replaced (a snapshot install): look at the env again.
    pub rescan: bool,
}

/// Where the hub leaves a session's wake-ups.
#[derive(Debug, Default)]
pub struct Inbox {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Inbox {
    fn push(&self, name: Option<&str>) {
        {
            let mut pending = lock(&self.pending);
            match name {
                Some(name) => {
                    pending.names.insert(name.to_string());
                }
                None => pending.rescan = true,
            }
        }
        self.notify.notify_one();
    }

    /// What arrived since the last call.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *lock(&self.pending))
    }

    /// Waits for the next push (returns at once if one arrived since the last wait).
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// The newest view of a config the hub knows, and when the apply that produced it was noticed
/// (`None` when a session read it itself).
#[derive(Debug, Clone)]
pub struct Seen {
    pub view: Arc<ConfigView>,
    pub noticed: Option<Instant>,
}

#[derive(Default)]
struct KeyEntry {
    latest: Option<Seen>,
    waiters: HashMap<u64, Arc<Inbox>>,
}

#[derive(Default)]
struct Index {
    keys: BTreeMap<ConfigKey, KeyEntry>,
    envs: HashMap<Namespace, HashMap<u64, Arc<Inbox>>>,
    tenants: HashMap<String, usize>,
}

/// Why a session could not be admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unavailable(Availability),
    TooManyWatchers { tenant: String, limit: usize },
}

/// The watch index of one node. See the module doc.
pub struct WatchHub {
    store: Store,
    pub limits: WatchLimits,
    pub presence: Presence,
    index: Mutex<Index>,
    availability: watch::Sender<Availability>,
    applied: AtomicU64,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchHub {
    /// Starts following `store`'s applies and `raft`'s metrics until `stopped` turns true.
    pub fn start(
        store: Store,
        raft: &typ::Raft,
        node_id: NodeId,
        limits: WatchLimits,
        stopped: watch::Receiver<bool>,
    ) -> Arc<WatchHub> {
        let applies = store.subscribe_applied();
        let hub = Arc::new(WatchHub {
            store,
            limits,
            presence: Presence::new(node_id),
            index: Mutex::default(),
            availability: watch::channel(Availability::Serving).0,
            applied: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(hub.clone().follow_applies(applies, stopped.clone()));
        tokio::spawn(hub.clone().follow_raft(raft.clone(), stopped));
        hub
    }

    pub fn availability(&self) -> watch::Receiver<Availability> {
        self.availability.subscribe()
    }

    /// The highest revision this node is known to have applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Admits one more session of `tenant`, or says why not. The caller must [`Self::leave`].
    pub fn admit(&self, tenant: &str) -> Result<u64, Refusal> {
        let availability = *self.availability.borrow();
        if availability != Availability::Serving {
            return Err(Refusal::Unavailable(availability));
        }
        let mut index = lock(&self.index);
        let count = index.tenants.entry(tenant.to_string()).or_default();
        if *count >= self.limits.max_watchers_per_tenant {
            return Err(Refusal::TooManyWatchers {
                tenant: tenant.to_string(),
                limit: self.limits.max_watchers_per_tenant,
            });
        }
        *count += 1;
        metrics::global().watchers.inc();
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Wakes `inbox` whenever `key` may resolve differently.
    pub fn watch_key(&self, session: u64, key: &ConfigKey, inbox: &Arc<Inbox>) {
        lock(&self.index).keys.entry(key.clone()).or_default().waiters.insert(session, inbox.clone());
    }

    /// Tells `inbox` about every config of `namespace` written from now on (new ones included).
    pub fn watch_env(&self, session: u64, namespace: &Namespace, inbox: &Arc<Inbox>) {
        lock(&self.index).envs.entry(namespace.clone()).or_default().insert(session, inbox.clone());
    }

    /// Forgets a session admitted for `tenant` and everything it watched.
    pub fn leave<'a>(
        &self,
        session: u64,
        tenant: &str,
        keys: impl IntoIterator<Item = &'a ConfigKey>,
        env: Option<&Namespace>,
    ) {
        let mut index = lock(&self.index);
        for key in keys {
            if let Some(entry) = index.keys.get_mut(key) {
                entry.waiters.remove(&session);
                if entry.waiters.is_empty() {
                    index.keys.remove(key);
                }
            }
        }
        if let Some(namespace) = env {
            if let Some(waiters) = index.envs.get_mut(namespace) {
                waiters.remove(&session);
                if waiters.is_empty() {
                    index.envs.remove(namespace);
                }
            }
        }
        if let Some(count) = index.tenants.get_mut(tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                index.tenants.remove(tenant);
            }
        }
        metrics::global().watchers.dec();
    }

    /// The newest view of `key` at revision `at_least` or later: the hub's own when it is new
    /// enough, else read now (and kept, if the key is watched and the read is newer).
    pub fn view(&self, key: &ConfigKey, at_least: u64) -> Result<Seen, StoreError> {
        if let Some(seen) = self.latest(key).filter(|s| s.view.revision >= at_least) {
            return Ok(seen);
        }
        let read = Seen { view: Arc::new(self.store.config_view(key)?), noticed: None };
        Ok(self.keep_newer(key, read, false).0)
    }

    /// The first `limit` live configs of `namespace`, by name.
    pub fn list_configs(&self, namespace: &Namespace, limit: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.store.list_configs(namespace, None, limit)?.items.into_iter().map(|(name, _)| name).collect())
    }

    pub fn env_exists(&self, namespace: &Namespace) -> Result<bool, StoreError> {
        Ok(self.store.env(namespace)?.is_some())
    }

    fn latest(&self, key: &ConfigKey) -> Option<Seen> {
        lock(&self.index).keys.get(key).and_then(|entry| entry.latest.clone())
    }

    /// Keeps `read` as `key`'s latest view unless a newer one is there; answers the newest and,
    /// when `wake`, the inboxes to wake.
    fn keep_newer(&self, key: &ConfigKey, read: Seen, wake: bool) -> (Seen, Vec<Arc<Inbox>>) {
        let mut index = lock(&self.index);
        let Some(entry) = index.keys.get_mut(key) else { return (read, Vec::new()) };
        let newest = match &entry.latest {
            Some(latest) if latest.view.revision > read.view.revision => latest.clone(),
            _ => {
                entry.latest = Some(read.clone());
                read
            }
        };
        let inboxes = if wake { entry.waiters.values().cloned().collect() } else { Vec::new() };
        (newest, inboxes)
    }

    /// Reads each watched config an apply touched and wakes its sessions; tells whole-env
    /// sessions about configs written in their env.
    fn on_applied(&self, applies: &[Applied]) {
        let noticed = applies.iter().map(|a| a.at).min();
        let (keys, env_wakes) = {
            let index = lock(&self.index);
            let mut keys = BTreeSet::new();
            let mut env_wakes: Vec<(Arc<Inbox>, Option<String>)> = Vec::new();
            for applied in applies {
                match &applied.touched {
                    Touched::Everything => {
                        keys.extend(index.keys.keys().cloned());
                        env_wakes.extend(index.envs.values().flat_map(|w| w.values().map(|i| (i.clone(), None))));
                    }
                    Touched::Scopes(scopes) => {
                        for scope in scopes {
                            let first = scope.first_key();
                            let within = index.keys.range(first..).take_while(|(key, _)| scope.contains(key));
                            keys.extend(within.map(|(key, _)| key.clone()));
                            if let Scope::Config(key) = scope {
                                if let Some(waiters) = index.envs.get(&key.namespace()) {
                                    env_wakes.extend(waiters.values().map(|i| (i.clone(), Some(key.name.clone()))));
                                }
                            }
                        }
                    }
                }
            }
            (keys, env_wakes)
        };
        for key in keys {
            let view = match self.store.config_view(&key) {
                Ok(view) => view,
                Err(e) => {
                    tracing::error!(error = %e, %key, "reading a watched config");
                    continue;
                }
            };
            let (_, inboxes) = self.keep_newer(&key, Seen { view: Arc::new(view), noticed }, true);
            for inbox in inboxes {
                inbox.push(Some(&key.name));
            }
        }
        for (inbox, name) in env_wakes {
            inbox.push(name.as_deref());
        }
    }

    async fn follow_applies(
        self: Arc<Self>,
        mut applies: mpsc::UnboundedReceiver<Applied>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                first = applies.recv() => {
                    let Some(first) = first else { return };
                    let mut batch = vec![first];
                    while let Ok(more) = applies.try_recv() {
                        batch.push(more);
                    }
                    self.on_applied(&batch);
                }
                _ = sweep.tick() => self.presence.sweep(),
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }

    /// Tracks the applied revision and the leader. A node that knows no leader for
    /// `leaderless_grace` stops serving watchers (its state may be stale); so does a leader that
    /// has not confirmed its leadership with a quorum for that long (a leader partitioned away
    /// keeps believing it leads). It stops for good on shutdown.
    async fn follow_raft(self: Arc<Self>, raft: typ::Raft, mut stopped: watch::Receiver<bool>) {
        let mut metrics = raft.metrics();
        let me = metrics.borrow_watched().id;
        let mut leaderless_since: Option<Instant> = Some(Instant::now());
        let mut confirmed_at = Instant::now();
        let mut was_leader = false;
        let mut tick = tokio::time::interval(LEADERSHIP_CHECK);
        loop {
            let (leader, applied) = {
                let m = metrics.borrow_and_update();
                (m.current_leader, m.last_applied.map_or(0, |l| l.index))
            };
            self.applied.fetch_max(applied, Ordering::Relaxed);
            let leads = leader == Some(me);
            if leads && !was_leader {
                confirmed_at = Instant::now();
            }
            was_leader = leads;
            let has_leader = match leader {
                Some(_) if leads => confirmed_at.elapsed() < self.limits.leaderless_grace,
                Some(_) => true,
                None => false,
            };
            let since = if has_leader { None } else { Some(*leaderless_since.get_or_insert_with(Instant::now)) };
            leaderless_since = since;
            let serving = since.is_none_or(|at| at.elapsed() < self.limits.leaderless_grace);
            self.availability.send_if_modified(|current| {
                let next = if serving { Availability::Serving } else { Availability::NoLeader };
                std::mem::replace(current, next) != next
            });
            let ticked = tokio::select! {
                changed = metrics.changed() => if changed.is_err() { break } else { false },
                _ = tick.tick() => true,
                _ = stopped.wait_for(|s| *s) => break,
            };
            if ticked && leads && confirm_leadership(&raft).await {
                confirmed_at = Instant::now();
            }
        }
        self.availability.send_replace(Availability::ShuttingDown);
    }
}
