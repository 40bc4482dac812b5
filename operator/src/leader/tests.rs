//! The election rule on its own, and two replicas competing for one Lease in kube-fake-client
//! (validated against Kubernetes' Lease schema, like every object in the controller's tests) with an injected clock: acquire, renew, wait,
//! expire, hand over, release, and the `resourceVersion` guard that makes a race have one winner.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, PostParams};

use super::*;
use crate::controller::tests::fake_kubernetes;

const NAMESPACE: &str = "conflux-system";
const LEASE: &str = "conflux-operator";

fn elector(client: &kube::Client, identity: &str) -> Elector {
    Elector::new(client.clone(), LeaseConfig::new(LEASE, NAMESPACE, identity))
}

fn following(holder: &str) -> Leadership {
    Leadership::Following { holder: Some(holder.into()) }
}

async fn lease(client: &kube::Client) -> LeaseSpec {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    api.get(LEASE).await.expect("lease exists").spec.expect("lease has a spec")
}

#[test]
fn a_held_lease_is_taken_only_after_it_stayed_unchanged_for_its_duration() {
    let duration = Duration::from_secs(15);
    let held = |holder: &str| LeaseSpec { holder_identity: Some(holder.into()), ..LeaseSpec::default() };
    let check = |spec: Option<&LeaseSpec>, unchanged: u64| decide(spec, "b", Duration::from_secs(unchanged), duration);
    assert_eq!(check(Some(&held("b")), 0), Decision::Renew);
    assert_eq!(check(Some(&held("b")), 100), Decision::Renew, "its own lease is renewed, never waited for");
    assert_eq!(check(Some(&held("a")), 0), Decision::Wait { holder: Some("a".into()) });
    assert_eq!(check(Some(&held("a")), 14), Decision::Wait { holder: Some("a".into()) });
    assert_eq!(check(Some(&held("a")), 15), Decision::Take);
    assert_eq!(check(Some(&held("")), 0), Decision::Take, "a released lease is free at once");
    assert_eq!(check(Some(&LeaseSpec::default()), 0), Decision::Take);
    assert_eq!(check(None, 0), Decision::Take);
}

#[test]
fn a_leader_stops_once_it_could_not_renew_within_the_deadline() {
    let renewed = Instant::now();
    let deadline = Duration::from_secs(10);
    assert!(!renew_overdue(renewed, renewed + Duration::from_secs(9), deadline));
    assert!(renew_overdue(renewed, renewed + deadline, deadline));
    let config = LeaseConfig::new(LEASE, NAMESPACE, "a");
    assert!(config.renew_deadline < config.duration, "a leader gives up before a follower may take over");
    assert!(config.renew_every < config.renew_deadline);
}

#[tokio::test]
async fn the_first_replica_leads_and_the_second_follows_while_the_leader_renews() {
    let client = fake_kubernetes().await;
    let (a, b) = (elector(&client, "operator-a"), elector(&client, "operator-b"));
    let t0 = Instant::now();
    assert_eq!(a.try_acquire_or_renew(t0).await.expect("a"), Leadership::Leading);
    assert_eq!(b.try_acquire_or_renew(t0).await.expect("b"), following("operator-a"));
    let first = lease(&client).await;
    assert_eq!(first.holder_identity.as_deref(), Some("operator-a"));
    assert_eq!(first.lease_duration_seconds, Some(15));
    assert_eq!(first.lease_transitions, Some(0));

    // The leader renews every few seconds; the follower, however long it waits, never takes over.
    for step in 1..=20 {
        let now = t0 + Duration::from_secs(5 * step);
        assert_eq!(a.try_acquire_or_renew(now).await.expect("a renews"), Leadership::Leading);
        assert_eq!(b.try_acquire_or_renew(now + Duration::from_secs(4)).await.expect("b"), following("operator-a"));
    }
    let renewed = lease(&client).await;
    assert_eq!(renewed.holder_identity.as_deref(), Some("operator-a"));
    assert_eq!(renewed.acquire_time, first.acquire_time, "renewing keeps the acquire time");
    assert_eq!(renewed.lease_transitions, Some(0));
}

#[tokio::test]
async fn a_leader_that_stops_renewing_is_replaced_after_the_lease_duration_and_then_knows_it() {
    let client = fake_kubernetes().await;
    let (a, b) = (elector(&client, "operator-a"), elector(&client, "operator-b"));
    let t0 = Instant::now();
    assert_eq!(a.try_acquire_or_renew(t0).await.expect("a"), Leadership::Leading);
    // b first sees the lease at t0 + 1 s; a stops renewing (it hangs or its node is partitioned).
    let seen = t0 + Duration::from_secs(1);
    assert_eq!(b.try_acquire_or_renew(seen).await.expect("b"), following("operator-a"));
    let almost = seen + Duration::from_secs(14);
    assert_eq!(b.try_acquire_or_renew(almost).await.expect("b"), following("operator-a"));
    let expired = seen + Duration::from_secs(15);
    assert_eq!(b.try_acquire_or_renew(expired).await.expect("b"), Leadership::Leading);

    let handed_over = lease(&client).await;
    assert_eq!(handed_over.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(handed_over.lease_transitions, Some(1));
    // The old leader's next renewal finds the lease taken: it must stop reconciling.
    assert_eq!(a.try_acquire_or_renew(expired).await.expect("a"), following("operator-b"));
    assert_eq!(lease(&client).await.holder_identity.as_deref(), Some("operator-b"), "a did not take it back");
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_release_never_frees_another_replicas_lease() {
    let client = fake_kubernetes().await;
    let (a, b) = (elector(&client, "operator-a"), elector(&client, "operator-b"));
    let t0 = Instant::now();
    assert_eq!(a.try_acquire_or_renew(t0).await.expect("a"), Leadership::Leading);
    b.release().await.expect("b's release is a no-op");
    assert_eq!(lease(&client).await.holder_identity.as_deref(), Some("operator-a"));
    a.release().await.expect("a releases");
    assert_eq!(b.try_acquire_or_renew(t0).await.expect("b"), Leadership::Leading);
    assert_eq!(lease(&client).await.holder_identity.as_deref(), Some("operator-b"));
}

#[tokio::test]
async fn of_two_replicas_writing_the_same_lease_version_only_the_first_wins() {
    let client = fake_kubernetes().await;
    let (a, b) = (elector(&client, "operator-a"), elector(&client, "operator-b"));
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let t0 = Instant::now();
    assert_eq!(a.try_acquire_or_renew(t0).await.expect("a"), Leadership::Leading);
    a.release().await.expect("a releases");
    // Both read the free lease at the same version and both decide to take it.
    let read = api.get(LEASE).await.expect("lease");
    let take = |who: &Elector| Lease { metadata: read.metadata.clone(), ..who.lease(None, 1) };
    let first = api.replace(LEASE, &PostParams::default(), &take(&b)).await;
    assert_eq!(b.written(first, t0).expect("b"), Leadership::Leading);
    let second = api.replace(LEASE, &PostParams::default(), &take(&a)).await;
    assert_eq!(a.written(second, t0).expect("a"), Leadership::Following { holder: None }, "409: a lost the race");
    assert_eq!(lease(&client).await.holder_identity.as_deref(), Some("operator-b"));
}

#[tokio::test]
async fn the_leader_loop_returns_once_another_replica_holds_the_lease() {
    let client = fake_kubernetes().await;
    let fast = |identity: &str| LeaseConfig {
        duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        renew_every: Duration::from_millis(50),
        ..LeaseConfig::new(LEASE, NAMESPACE, identity)
    };
    let a = Elector::new(client.clone(), fast("operator-a"));
    let b = Elector::new(client.clone(), fast("operator-b"));
    tokio::time::timeout(Duration::from_secs(5), a.acquire()).await.expect("a leads at once");
    let keeping = tokio::spawn(async move { a.keep().await });
    // While a renews, b follows (within less than one lease duration, whatever the scheduling).
    for _ in 0..10 {
        assert!(matches!(b.try_acquire_or_renew(Instant::now()).await.expect("b"), Leadership::Following { .. }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!keeping.is_finished(), "a still leads");
    // The Lease is handed to b behind a's back (as if a had been partitioned): a must stop.
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let mut lease = api.get(LEASE).await.expect("lease");
    lease.spec.as_mut().expect("spec").holder_identity = Some("operator-b".into());
    api.replace(LEASE, &PostParams::default(), &lease).await.expect("handed over");
    let reason = tokio::time::timeout(Duration::from_secs(5), keeping).await.expect("a stops").expect("task");
    assert!(reason.contains("operator-b"), "{reason}");
}
