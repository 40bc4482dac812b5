//! Write throughput and latency of Conflux against etcd, on the same machine in the same run.
//!
//! Starts 1, 3 and 5 real `conflux serve` processes and the same number of `etcd` members on
//! loopback, drives each with 1 and 64 concurrent HTTP clients writing 128-byte values for a
//! fixed time, and prints writes/s and p50/p99 latency for both plus Conflux/etcd ratios; then
//! the CPU time (user + system, from `/proc`) the members spent per write in the same runs: on
//! this 2-core machine three members and the client share the cores, so throughput follows it.
//! Conflux writes go through `PUT /api/v1/configs/...`; etcd writes through its JSON gateway
//! (`POST /v3/kv/put`), each to the current leader.
//!
//! Run: `scripts/bench.sh` (installs etcd if missing). `BENCH_SECONDS` sets the time per cell
//! (default 5), `BENCH_SIZES` the cluster sizes (default `1,3,5`), `BENCH_CLIENTS` the client
//! counts (default `1,64`).

#[path = "support/cluster.rs"]
mod cluster;

use std::path::PathBuf;

use tempfile::TempDir;

use crate::cluster::{env_list, etcd_put, start_conflux, start_etcd, Cluster, CpuPerRequest, Load, Measured};

/// Distinct keys each client cycles through.
const KEYS_PER_CLIENT: u64 = 1000;

/// Lets tenant `bench` hold every key `clients` clients write (its default quota is 10,000 configs).
async fn allow_keys_of(leader: &str, clients: usize) {
    let body = format!("{{\"quotas\":{{\"max_configs\":{}}}}}", clients as u64 * KEYS_PER_CLIENT);
    let request = reqwest::Client::new().put(format!("{leader}/api/v1/tenants/bench")).body(body);
    let response = request.send().await.expect("raising the config quota");
    assert!(response.status().is_success(), "raising the config quota: {}", response.status());
}

#[derive(Clone, Copy)]
enum Target {
    Conflux,
    Etcd,
}

/// `clients` clients writing 128-byte values to keys `k<client>-<n mod KEYS_PER_CLIENT>` at the
/// leader of `cluster`, and the CPU time spent per write.
async fn measure_writes(target: Target, cluster: &Cluster, clients: usize, seconds: u64) -> (Measured, CpuPerRequest) {
    let (url, value) = (cluster.leader().to_string(), "v".repeat(128));
    let request = move |http: &reqwest::Client, worker: usize, i: u64| {
        let key = format!("k{worker}-{}", i % KEYS_PER_CLIENT);
        match target {
            Target::Conflux => http.put(format!("{url}/api/v1/configs/bench/app/env/{key}")).body(value.clone()),
            Target::Etcd => etcd_put(http, &url, &key, &value),
        }
    };
    Load { clients, expect: reqwest::StatusCode::is_success, request }.measure_cpu_of(Some(cluster), seconds).await
}

/// CPU table cells: the leader's µs per write, all members' together, the clients'.
fn cpu_cells(cpu: &CpuPerRequest) -> String {
    format!("{:.0} | {:.0} | {:.0}", cpu.members[0], cpu.members.iter().sum::<f64>(), cpu.client)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only on bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_list("BENCH_SECONDS", "5")[0] as u64;
    let sizes = env_list("BENCH_SIZES", "1,3,5");
    let client_counts = env_list("BENCH_CLIENTS", "1,64");
    println!("| nodes | clients | conflux w/s | conflux p50 ms | conflux p99 ms | etcd w/s | etcd p50 ms | etcd p99 ms | w/s ratio | p99 ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut cpu_rows = Vec::new();
    for size in sizes {
        let root: PathBuf = TempDir::new().unwrap().keep();
        let conflux = start_conflux(size, &root).await;
        let etcd = start_etcd(size, &root).await;
        allow_keys_of(conflux.leader(), client_counts.iter().copied().max().unwrap_or(1)).await;
        for &clients in &client_counts {
            let (c, c_cpu) = measure_writes(Target::Conflux, &conflux, clients, seconds).await;
            let (e, e_cpu) = measure_writes(Target::Etcd, &etcd, clients, seconds).await;
            println!("| {size} | {clients} | {} | {} | {} |", c.cells(), e.cells(), c.ratios(&e));
            let ratio = c_cpu.members.iter().sum::<f64>() / e_cpu.members.iter().sum::<f64>();
            cpu_rows.push(format!(
                "| {size} | {clients} | {} | {} | {ratio:.2} |",
                cpu_cells(&c_cpu),
                cpu_cells(&e_cpu)
            ));
        }
        drop(conflux);
        drop(etcd);
        let _ = std::fs::remove_dir_all(&root);
    }
    println!();
    println!("CPU time per write (user + system, µs), the same runs:");
    println!();
    println!("| nodes | clients | conflux leader | conflux all members | clients | etcd leader | etcd all members | clients | all-members ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in cpu_rows {
        println!("{row}");
    }
}
