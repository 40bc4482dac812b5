//! Lease reads (`--read-policy lease`) on a real 3-node cluster: the leader answers linearizable
//! reads from its lease, and a leader cut off from both followers can never serve a stale read,
//! even when both followers are killed and restarted at once (which makes openraft forget the
//! lease they were honouring): restarted nodes neither vote nor campaign for one lease after they
//! start, so the isolated leader's lease runs out before anyone else can lead.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use conflux::client::PutOptions;
use harness::{eventually, NodeOptions, TestCluster};

/// The harness's `--election-timeout-max-ms`: openraft's leader lease.
const LEASE: Duration = Duration::from_millis(1600);
const KEY: [&str; 4] = ["lease", "app", "prod", "k"];

fn lease_reads() -> NodeOptions {
    NodeOptions { extra_args: ["--read-policy", "lease"].map(String::from).to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_lease_leader_stops_reading_before_restarted_followers_can_elect_another() {
    let mut cluster = TestCluster::start(3, lease_reads()).await;
    let old_leader = cluster.leader().await;
    let old_client = cluster.nodes[old_leader].client();
    old_client.put(KEY, b"before".to_vec(), PutOptions::default()).await.unwrap();

    cluster.partition(&[old_leader]);
    let cut_off = Instant::now();
    // Within its lease the cut-off leader still answers a linearizable read, with no round trip
    // (under read-index it could not: see cluster_partition.rs).
    let read = old_client.get(KEY, false).await.expect("a lease read right after the partition");
    assert_eq!(read.unwrap().content, b"before");
    assert!(cut_off.elapsed() < LEASE, "the lease read took {:?}", cut_off.elapsed());

    let followers: Vec<usize> = (0..3).filter(|i| *i != old_leader).collect();
    let restarted = Instant::now();
    for &i in &followers {
        cluster.kill(i);
    }
    for &i in &followers {
        cluster.restart(i).await;
    }
    let new_client = cluster.nodes[followers[0]].client();
    let written = eventually("the restarted followers elect a leader", Duration::from_secs(30), || async {
        new_client.put(KEY, b"after".to_vec(), PutOptions::default()).await.ok()
    })
    .await;
    let elected_after = restarted.elapsed();
    assert!(written.version >= 2);
    assert!(
        elected_after >= LEASE,
        "restarted followers acknowledged a write {elected_after:?} after they started, inside one lease ({LEASE:?})"
    );

    // The old leader's lease ran out before that write: it must not answer the old content now.
    match old_client.get(KEY, false).await {
        Ok(stale) => panic!("the cut-off leader served a linearizable read after a new leader wrote: {stale:?}"),
        Err(refused) => assert!(
            matches!(refused.code(), Some("timeout" | "quorum_unavailable" | "no_leader" | "leader_unreachable")),
            "unexpected refusal: {refused}"
        ),
    }

    cluster.heal();
    let leader = cluster.leader().await;
    let read = cluster.nodes[leader].client().get(KEY, false).await.unwrap().unwrap();
    assert_eq!(read.content, b"after");
}
