//! One client's watch: the configs it watches, what it holds of each, and the views it has
//! compared against. [`WatchSession::first`] answers the full difference against what the client
//! holds; [`WatchSession::next`] waits for the hub to wake it and answers what changed. Each
//! config's view is at least the client's fence and never older than one the session already
//! compared, so a client is never handed state older than it has seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::hub::{Availability, Inbox, Refusal, WatchHub};
use super::presence::Who;
use crate::model::release::Labels;
use crate::model::{ConfigKey, ModelError, Namespace};
use crate::service::resolve::{resolve_in, Resolution};
use crate::service::Error as ServiceError;
use crate::store::StoreError;
use crate::wire::{Held, WatchAnswer, WatchChange};

/// What a client asks to watch (already checked for syntax by the caller).
#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub namespace: Namespace,
    /// `None`: every config of the env, including ones created later.
    pub configs: Option<Vec<String>>,
    pub labels: Labels,
    pub client_id: Option<String>,
    pub known: BTreeMap<String, Held>,
    /// The node has applied at least this; views older than it are never used.
    pub since_revision: u64,
    pub inline_max_bytes: u64,
}

/// Why a watch could not go on.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("this node cannot serve watchers now ({0:?}); watch through another node")]
    Unavailable(Availability),
    #[error("tenant {tenant} already has {limit} watchers on this node; retry later or through another node")]
    TooManyWatchers { tenant: String, limit: usize },
    #[error("config {0} does not exist; watch only existing configs, or hold it as version 0 to wait for it")]
    NotFound(ConfigKey),
    #[error("env {0} does not exist; create it (or write a config into it) first")]
    NoEnv(Namespace),
    #[error("env {namespace} has more than {limit} configs; name the configs to watch")]
    TooManyConfigs { namespace: Namespace, limit: usize },
    #[error(transparent)]
    Name(#[from] ModelError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for WatchError {
    fn from(e: StoreError) -> Self {
        WatchError::Service(e.into())
    }
}

impl From<Refusal> for WatchError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unavailable(availability) => WatchError::Unavailable(availability),
            Refusal::TooManyWatchers { tenant, limit } => WatchError::TooManyWatchers { tenant, limit },
        }
    }
}

/// What [`WatchSession::next`] ended with.
#[derive(Debug)]
pub enum Step {
    /// Something differs; `noticed` is when this node applied the earliest change it carries
    /// (when the hub saw it happen).
    Changed { answer: WatchAnswer, noticed: Option<Instant> },
    /// Nothing changed until the deadline.
    Quiet { revision: u64 },
    /// The node stopped serving watchers.
    Unavailable(Availability),
}

/// One watching client. Dropping it unregisters it.
pub struct WatchSession {
    hub: Arc<WatchHub>,
    id: u64,
    who: Who,
    spec: WatchSpec,
    whole_env: bool,
    watched: BTreeSet<String>,
    seen: HashMap<String, u64>,
    high_water: u64,
    inbox: Arc<Inbox>,
    availability: watch::Receiver<Availability>,
}

/// The outcome of comparing one config.
enum Difference {
    Changed(WatchChange, Option<Instant>),
    Deleted,
}

fn differs(resolution: &Resolution, held: Option<&Held>) -> bool {
    let Some(held) = held else { return true };
    let meta = &resolution.body.meta;
    let checksum_differs =
        held.checksum().is_some_and(|c| c.strip_prefix("sha256:").unwrap_or(c) != meta.checksum.as_str());
    held.version() != meta.version || checksum_differs
}

impl WatchSession {
    /// Admits and registers a session. Fails when the node cannot serve, the tenant is at its
    /// quota, or a whole-env watch would cover too many configs.
    pub fn open(hub: Arc<WatchHub>, spec: WatchSpec) -> Result<WatchSession, WatchError> {
        let availability = hub.availability();
        let id = hub.admit(&spec.namespace.tenant)?;
        let mut session = WatchSession {
            who: Who::new(spec.client_id.as_deref(), id),
            inbox: Arc::default(),
            whole_env: spec.configs.is_none(),
            watched: BTreeSet::new(),
            seen: HashMap::new(),
            high_water: spec.since_revision,
            hub,
            id,
            spec,
            availability,
        };
        let names: Vec<String> = match &session.spec.configs {
            Some(names) => names.clone(),
            None => {
                let limit = session.hub.limits.max_configs_per_watch;
                session.hub.watch_env(id, &session.spec.namespace, &session.inbox);
                let listed = session.list_env(limit)?;
                listed.into_iter().chain(session.spec.known.keys().cloned()).collect()
            }
        };
        for name in names {
            session.add(&name)?;
        }
        Ok(session)
    }

    /// The env's configs, refusing an env with more than `limit`.
    fn list_env(&self, limit: usize) -> Result<Vec<String>, WatchError> {
        let page = self.hub.list_configs(&self.spec.namespace, limit + 1)?;
        if page.len() > limit {
            return Err(WatchError::TooManyConfigs { namespace: self.spec.namespace.clone(), limit });
        }
        Ok(page)
    }

    /// Starts watching config `name` (no-op if watched already).
    fn add(&mut self, name: &str) -> Result<bool, WatchError> {
        if self.watched.contains(name) {
            return Ok(false);
        }
        let limit = self.hub.limits.max_configs_per_watch;
        if self.watched.len() >= limit {
            return Err(WatchError::TooManyConfigs { namespace: self.spec.namespace.clone(), limit });
        }
        let key = ConfigKey::in_namespace(&self.spec.namespace, name)?;
        self.hub.watch_key(self.id, &key, &self.inbox);
        let held = self.spec.known.get(name).map_or(0, Held::version);
        self.hub.presence.join(&key, &self.who, &self.spec.labels, held);
        self.watched.insert(name.to_string());
        Ok(true)
    }

    fn key(&self, name: &str) -> Result<ConfigKey, WatchError> {
        Ok(ConfigKey::in_namespace(&self.spec.namespace, name)?)
    }

    /// Compares one config's newest view with what the client holds.
    fn compare(&mut self, name: &str) -> Result<Option<Difference>, WatchError> {
        let key = self.key(name)?;
        let at_least = self.seen.get(name).copied().unwrap_or(self.spec.since_revision);
        let seen = self.hub.view(&key, at_least)?;
        self.seen.insert(name.to_string(), seen.view.revision);
        self.high_water = self.high_water.max(seen.view.revision);
        let held = self.spec.known.get(name);
        let resolution = resolve_in(&seen.view, &key, &self.spec.labels, self.spec.client_id.as_deref())?;
        Ok(match resolution {
            Some(resolution) if differs(&resolution, held) => {
                Some(Difference::Changed(self.change(name, &resolution), seen.noticed))
            }
            Some(_) => None,
            None if held.is_some_and(|h| h.version() > 0) => Some(Difference::Deleted),
            None => None,
        })
    }

    fn change(&self, name: &str, resolution: &Resolution) -> WatchChange {
        let meta = &resolution.body.meta;
        let content = (meta.size <= self.spec.inline_max_bytes)
            .then(|| String::from_utf8_lossy(&resolution.body.content).into_owned());
        WatchChange {
            config: name.to_string(),
            format: meta.format.name().to_string(),
            version: meta.version,
            checksum: format!("sha256:{}", meta.checksum),
            size: meta.size,
            release: resolution.release,
            content,
        }
    }

    /// The revision an answer carries: nothing older than any view compared or this node's
    /// applied revision.
    pub fn revision(&self) -> u64 {
        self.high_water.max(self.hub.applied())
    }

    /// Compares `names`, records what the client is handed, and answers if anything differs.
    fn answer_for(&mut self, names: Vec<String>) -> Result<Option<(WatchAnswer, Option<Instant>)>, WatchError> {
        let mut changes = Vec::new();
        let mut deleted = Vec::new();
        let mut noticed: Option<Instant> = None;
        for name in names {
            match self.compare(&name)? {
                Some(Difference::Changed(change, at)) => {
                    noticed = match (noticed, at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    changes.push(change);
                }
                Some(Difference::Deleted) => deleted.push(name),
                None => {}
            }
        }
        if changes.is_empty() && deleted.is_empty() {
            return Ok(None);
        }
        for change in &changes {
            self.hub.presence.hold(&self.key(&change.config)?, &self.who, change.version);
            let held = Held::Exact { version: change.version, checksum: Some(change.checksum.clone()) };
            self.spec.known.insert(change.config.clone(), held);
        }
        for name in &deleted {
            self.hub.presence.hold(&self.key(name)?, &self.who, 0);
            self.spec.known.insert(name.clone(), Held::Version(0));
        }
        Ok(Some((WatchAnswer { revision: self.revision(), changes, deleted }, noticed)))
    }

    /// The full difference between what the client holds and what it resolves now, if any. A
    /// config the client named that does not exist, and that it does not hold, is an error.
    pub fn first(&mut self) -> Result<Option<WatchAnswer>, WatchError> {
        if self.whole_env && !self.hub.env_exists(&self.spec.namespace)? {
            return Err(WatchError::NoEnv(self.spec.namespace.clone()));
        }
        if let Some(names) = &self.spec.configs {
            for name in names.clone() {
                if self.spec.known.contains_key(&name) {
                    continue;
                }
                let key = self.key(&name)?;
                let seen = self.hub.view(&key, self.spec.since_revision)?;
                if seen.view.release.is_none() {
                    return Err(WatchError::NotFound(key));
                }
            }
        }
        let names = self.watched.iter().cloned().collect();
        Ok(self.answer_for(names)?.map(|(answer, _)| answer))
    }

    /// Waits until something the client watches differs from what it holds, `deadline` passes,
    /// or the node stops serving watchers.
    pub async fn next(&mut self, deadline: Instant) -> Result<Step, WatchError> {
        loop {
            let pending = self.inbox.take();
            let mut names: Vec<String> = pending.names.into_iter().collect();
            if self.whole_env {
                if pending.rescan {
                    let limit = self.hub.limits.max_configs_per_watch;
                    names.extend(self.list_env(limit)?);
                }
                for name in &names {
                    self.add(name)?;
                }
            }
            names.retain(|name| self.watched.contains(name));
            if let Some((answer, noticed)) = self.answer_for(names)? {
                return Ok(Step::Changed { answer, noticed });
            }
            let inbox = self.inbox.clone();
            let mut availability = self.availability.clone();
            tokio::select! {
                _ = inbox.wait() => {}
                _ = tokio::time::sleep_until(deadline.into()) => return Ok(Step::Quiet { revision: self.revision() }),
                stopped = availability.wait_for(|a| *a != Availability::Serving) => {
                    let availability = stopped.map_or(Availability::ShuttingDown, |a| *a);
                    return Ok(Step::Unavailable(availability));
                }
            }
        }
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        let keys: Vec<ConfigKey> =
            self.watched.iter().filter_map(|name| ConfigKey::in_namespace(&self.spec.namespace, name).ok()).collect();
        for key in &keys {
            self.hub.presence.leave(key, &self.who);
        }
        let env = self.whole_env.then_some(&self.spec.namespace);
        self.hub.leave(self.id, &self.spec.namespace.tenant, &keys, env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::VersionMeta;
    use crate::model::Format;
    use crate::store::VersionBody;

    fn resolution(version: u64, checksum: &str) -> Resolution {
        let meta = VersionMeta {
            version,
            format: Format::Text,
            author: "a".into(),
            message: String::new(),
            created_ms: 0,
            size: 1,
            checksum: checksum.into(),
            revision: 1,
        };
        let rule = crate::model::release::Rule { labels: Labels::new(), version, priority: 0, percent: None };
        Resolution { body: Arc::new(VersionBody { meta, content: b"x".to_vec() }), release: 1, rule_index: 0, rule }
    }

    #[test]
    fn a_client_differs_when_it_holds_nothing_another_version_or_another_checksum() {
        let current = resolution(3, "abc");
        assert!(differs(&current, None));
        assert!(differs(&current, Some(&Held::Version(2))));
        assert!(!differs(&current, Some(&Held::Version(3))));
        let exact = |checksum: &str| Held::Exact { version: 3, checksum: Some(checksum.into()) };
        assert!(!differs(&current, Some(&exact("sha256:abc"))));
        assert!(!differs(&current, Some(&exact("abc"))));
        assert!(differs(&current, Some(&exact("sha256:def"))), "a recreated config numbered like the old one");
    }
}
