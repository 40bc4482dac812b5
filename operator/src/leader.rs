//! Leader election among operator replicas on a `coordination.k8s.io/v1` Lease, so that only one
//! replica reconciles at a time.
//!
//! The rules are client-go's: a replica holding the Lease renews it (`spec.renewTime`) every
//! [`LeaseConfig::renew_every`]; another replica takes it only after it has watched the Lease
//! stay unchanged (same `resourceVersion`) for a whole [`LeaseConfig::duration`] on its *own*
//! clock, so clock skew between nodes does not matter. Every write is a replace guarded by the
//! `resourceVersion` that was read, so when two replicas race for a free Lease exactly one wins
//! (the other gets 409 Conflict and stays a follower). A leader that cannot renew within
//! [`LeaseConfig::renew_deadline`] (shorter than the duration) gives up before anyone else may
//! take over, and the process exits: Kubernetes restarts it as a follower.
//!
//! Why not a crate: `kube-lease-manager` 0.13 needs kube 5; 0.12 (kube 4) and
//! `kube-leader-election` 0.44 read the wall clock inside, so expiry and handover cannot be
//! tested with an injected clock, and `kube-leader-election` acquires with an unguarded merge
//! patch (two candidates can both believe they won). The decision here is a pure function of the
//! Lease, what this replica observed and `now`, tested on its own and against kube-fake-client.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::api::{Api, PostParams};

/// Which Lease, who this replica is, and the timing of the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (its pod name), written as `spec.holderIdentity`.
    pub identity: String,
    /// How long a Lease left unrenewed stays its holder's.
    pub duration: Duration,
    /// A leader that has not renewed for this long stops leading. Shorter than `duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower retries.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Where this replica stands after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    Leading,
    /// Another replica holds the Lease (its identity, when the Lease names one).
    Following {
        holder: Option<String>,
    },
}

/// What to do with the Lease, decided from what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Renew,
    Take,
    Wait { holder: Option<String> },
}

/// The Lease version this replica last saw change, and when (on its own clock).
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: std::sync::Mutex<Option<Observed>>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Elector {
        Elector { api: Api::namespaced(client, &config.namespace), config, observed: std::sync::Mutex::new(None) }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: creates the Lease if there is none, renews it if this replica holds it, takes
    /// it if it is free or expired, and otherwise waits. A lost race (409) is `Following`.
    pub async fn try_acquire_or_renew(&self, now: Instant) -> Result<Leadership, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let created = self.api.create(&PostParams::default(), &self.lease(None, 0)).await;
            return self.written(created, now);
        };
        let decision = self.decide(&lease, now);
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
        let acquired = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
        let written = match decision {
            Decision::Wait { holder } => return Ok(Leadership::Following { holder }),
            Decision::Renew => self.lease(acquired, transitions),
            Decision::Take => self.lease(None, transitions + 1),
        };
        let written = Lease { metadata: lease.metadata.clone(), ..written };
        let replaced = self.api.replace(&self.config.name, &PostParams::default(), &written).await;
        self.written(replaced, now)
    }

    /// Gives the Lease up (on a clean shutdown), so a follower takes over at once instead of
    /// after the lease duration. Does nothing when another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Tries until this replica leads, every `renew_every`.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew(Instant::now()).await {
                Ok(Leadership::Leading) => return,
                Ok(Leadership::Following { holder }) => {
                    tracing::debug!(lease = %self.config.name, ?holder, "another replica leads")
                }
                Err(error) => tracing::warn!(lease = %self.config.name, %error, "lease not readable"),
            }
            tokio::time::sleep(self.config.renew_every).await;
        }
    }

    /// Renews while this replica leads; returns (with the reason) once it no longer may act: the
    /// Lease was taken, or it could not be renewed within the renew deadline.
    pub async fn keep(&self) -> String {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            let now = Instant::now();
            match self.try_acquire_or_renew(now).await {
                Ok(Leadership::Leading) => renewed = now,
                Ok(Leadership::Following { holder }) => return format!("the lease is now held by {holder:?}"),
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "renewing the lease failed");
                }
            }
            if renew_overdue(renewed, now, self.config.renew_deadline) {
                return format!("the lease was not renewed for {:?}", self.config.renew_deadline);
            }
        }
    }

    fn decide(&self, lease: &Lease, now: Instant) -> Decision {
        let version = lease.metadata.resource_version.clone();
        let mut observed = self.observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let since = match observed.as_ref() {
            Some(seen) if seen.resource_version == version => seen.at,
            _ => {
                *observed = Some(Observed { resource_version: version, at: now });
                now
            }
        };
        decide(lease.spec.as_ref(), &self.config.identity, now.saturating_duration_since(since), self.config.duration)
    }

    fn lease(&self, acquired: Option<MicroTime>, transitions: i32) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX)),
                acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// The outcome of a create or replace: written means leading; 409 means another replica
    /// wrote first.
    fn written(&self, result: Result<Lease, kube::Error>, now: Instant) -> Result<Leadership, kube::Error> {
        match result {
            Ok(lease) => {
                let mut observed = self.observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                *observed = Some(Observed { resource_version: lease.metadata.resource_version, at: now });
                Ok(Leadership::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Leadership::Following { holder: None }),
            Err(error) => Err(error),
        }
    }
}

/// The election rule. `unchanged_for` is how long this replica has seen the Lease unchanged.
fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration, duration: Duration) -> Decision {
    let holder = spec.and_then(|s| s.holder_identity.clone()).filter(|holder| !holder.is_empty());
    match holder {
        Some(holder) if holder == identity => Decision::Renew,
        None => Decision::Take,
        Some(_) if unchanged_for >= duration => Decision::Take,
        Some(holder) => Decision::Wait { holder: Some(holder) },
    }
}

/// Whether a leader last renewed at `renewed` must stop leading at `now`.
fn renew_overdue(renewed: Instant, now: Instant, deadline: Duration) -> bool {
    now.saturating_duration_since(renewed) >= deadline
}

#[cfg(test)]
mod tests;
