//! Write unavailability during a rolling restart, Conflux against etcd, 3 members each, on the
//! same machine in the same run.
//!
//! Starts 3 real `conflux serve` processes and 3 `etcd` members on loopback. Clients write
//! 128-byte values without pause, each through one member; a client whose request fails (refused,
//! 5xx, or no answer within 2 s) counts a failure and moves to the next member, as a real client
//! with a list of endpoints does. Meanwhile every member in turn is stopped with SIGTERM (what the
//! kubelet sends), started again on its data, and waited for until ready (`/readyz`; etcd
//! `/health`), like a StatefulSet's rolling update. The leader is restarted like any other member.
//!
//! It prints, per system: the longest time no write was acknowledged anywhere (the write
//! unavailability a rolling restart causes), the total of all such gaps over 100 ms, failed
//! requests, and writes/s over the whole roll.
//!
//! A stopped member stays down for `BENCH_DOWN_MS` (default 3000) before it starts again: in
//! Kubernetes a restarted pod is gone for seconds (termination, scheduling, volume attach,
//! container start). With no time down, a restarted openraft 0.9 leader resumes its own term at
//! once, which hides what a real rolling update costs. etcd transfers leadership before it stops
//! (etcd's `Stop`); Conflux on openraft 0.9 cannot yet (issue 10), so its leader's restart costs an
//! election.
//!
//! Run: `scripts/bench.sh`, or `. scripts/env.sh && cargo bench --bench rolling_restart`.
//! `BENCH_CLIENTS` sets the number of writing clients (default 16), `BENCH_ROUNDS` how many
//! rolling restarts each system gets (default 2), `BENCH_DOWN_MS` the time each member is down.

#[path = "support/cluster.rs"]
#[allow(dead_code)] // the clusters, not the load driver
mod cluster;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::cluster::{env_list, etcd_put, start_conflux, start_etcd, Cluster};

const MEMBERS: usize = 3;
/// A client gives up on a request after this long, and tries the next member.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Gaps between acknowledged writes shorter than this are ordinary latency, not unavailability.
const GAP_FLOOR: Duration = Duration::from_millis(100);

#[derive(Clone, Copy)]
enum System {
    Conflux,
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Conflux => "Conflux",
            System::Etcd => "etcd",
        }
    }

    fn write(self, http: &reqwest::Client, url: &str, client: usize, i: u64) -> reqwest::RequestBuilder {
        let value = format!("{client:04}-{i:012}-{}", "v".repeat(128 - 18));
        match self {
            System::Conflux => http.put(format!("{url}/api/v1/configs/bench/app/prod/roll{client}")).body(value),
            System::Etcd => etcd_put(http, url, &format!("roll/{client}"), &value),
        }
    }
}

/// What the clients saw over one roll.
struct Observed {
    /// When each acknowledged write was answered, since the start, sorted.
    acknowledged: Vec<Duration>,
    failed: u64,
    elapsed: Duration,
}

impl Observed {
    /// Gaps between consecutive acknowledgements (and from the start and to the end) that are
    /// longer than [`GAP_FLOOR`].
    fn gaps(&self) -> Vec<Duration> {
        let mut edges = vec![Duration::ZERO];
        edges.extend(&self.acknowledged);
        edges.push(self.elapsed);
        edges.windows(2).map(|w| w[1] - w[0]).filter(|gap| *gap > GAP_FLOOR).collect()
    }
}

/// Writing clients, each starting on member `client mod 3`, until `stop`.
async fn write_until(system: System, urls: Vec<String>, clients: usize, stop: Arc<AtomicBool>) -> Observed {
    let http = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).tcp_nodelay(true).build().unwrap();
    let started = Instant::now();
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (http, urls, stop, failed) = (http.clone(), urls.clone(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let (mut member, mut acknowledged, mut i) = (client % urls.len(), Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let answer = system.write(&http, &urls[member], client, i).send().await;
                    match answer {
                        Ok(response) if response.status().is_success() => acknowledged.push(started.elapsed()),
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            member = (member + 1) % urls.len();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("writing client"));
    }
    acknowledged.sort();
    Observed { acknowledged, failed: failed.load(Ordering::Relaxed), elapsed: started.elapsed() }
}

/// Restarts every member in turn (the last first, as a StatefulSet does) under write load.
async fn roll(system: System, cluster: &mut Cluster, clients: usize, down: Duration) -> Observed {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_until(system, cluster.urls.clone(), clients, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for member in (0..MEMBERS).rev() {
        cluster.restart_gracefully(member, down).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("write load")
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only on bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let clients = env_list("BENCH_CLIENTS", "16")[0];
    let rounds = env_list("BENCH_ROUNDS", "2")[0];
    let down = Duration::from_millis(env_list("BENCH_DOWN_MS", "3000")[0] as u64);
    println!(
        "Rolling restart of {MEMBERS} members under {clients} writing clients ({rounds} rolls each, {} ms down per member)\n",
        down.as_millis()
    );
    println!("| system | roll | longest write gap ms | gaps > 100 ms, total ms | failed requests | writes/s |");
    println!("|---|---|---|---|---|---|");
    let mut longest = [Duration::ZERO; 2];
    for (s, system) in [System::Etcd, System::Conflux].into_iter().enumerate() {
        let dir = TempDir::new().unwrap();
        let mut cluster = match system {
            System::Conflux => start_conflux(MEMBERS, dir.path()).await,
            System::Etcd => start_etcd(MEMBERS, dir.path()).await,
        };
        for round in 1..=rounds {
            let observed = roll(system, &mut cluster, clients, down).await;
            let gaps = observed.gaps();
            let worst = gaps.iter().copied().max().unwrap_or_default();
            longest[s] = longest[s].max(worst);
            let rate = observed.acknowledged.len() as f64 / observed.elapsed.as_secs_f64();
            println!(
                "| {} | {round} | {:.0} | {:.0} | {} | {rate:.0} |",
                system.name(),
                ms(worst),
                ms(gaps.iter().sum()),
                observed.failed
            );
        }
    }
    println!(
        "\nLongest write gap over all rolls: Conflux {:.0} ms, etcd {:.0} ms (Conflux/etcd {:.2})",
        ms(longest[1]),
        ms(longest[0]),
        longest[1].as_secs_f64() / longest[0].as_secs_f64().max(1e-3)
    );
}
