//! Write throughput and latency of Conflux against etcd, on the same machine in the same run.
//!
//! Starts 1, 3 and 5 real `conflux serve` processes and the same number of `etcd` members on
//! loopback, drives each with 1 and 64 concurrent HTTP clients writing 128-byte values for a
//! fixed time, and prints writes/s and p50/p99 latency for both plus Conflux/etcd ratios.
//! Conflux writes go through `PUT /api/v1/configs/...`; etcd writes through its JSON gateway
//! (`POST /v3/kv/put`), each to the current leader.
//!
//! Run: `scripts/bench.sh` (installs etcd if missing). `BENCH_SECONDS` sets the time per cell
//! (default 5), `BENCH_SIZES` the cluster sizes (default `1,3,5`), `BENCH_CLIENTS` the client
//! counts (default `1,64`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conflux::client::Client;
use tempfile::TempDir;

const TOKEN: &str = "benchmark-cluster-token-0123456789";

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().parse().unwrap()).collect()
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a Conflux cluster; returns the processes and the leader's client URL.
async fn start_conflux(size: usize, root: &Path) -> (Processes, String) {
    let mut processes = Processes(Vec::new());
    let mut nodes = Vec::new();
    for i in 0..size {
        let dir = root.join(format!("conflux{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (client, peer) = (free_port(), free_port());
        processes.0.push(
            Command::new(env!("CARGO_BIN_EXE_conflux"))
                .args(["serve", "--join", "--data-dir"])
                .arg(&dir)
                .args(["--listen", &format!("127.0.0.1:{client}"), "--peer-listen", &format!("127.0.0.1:{peer}")])
                .env("CONFLUX_CLUSTER_TOKEN", TOKEN)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting conflux"),
        );
        nodes.push((format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}")));
    }
    let admins: Vec<Client> = nodes.iter().map(|(_, p)| Client::new(p, Some(TOKEN.into()))).collect();
    let mut ids = Vec::new();
    for admin in &admins {
        ids.push(wait_for("conflux node", || async { admin.status().await.ok().map(|s| s.node_id) }).await);
    }
    admins[0].init().await.unwrap();
    for i in 1..size {
        admins[0].add_learner(ids[i], &nodes[i].1, Some(Duration::from_secs(30))).await.unwrap();
    }
    if size > 1 {
        admins[0].set_voters(ids.clone()).await.unwrap();
    }
    (processes, nodes[0].0.clone())
}

/// Starts an etcd cluster; returns the processes and the leader's client URL.
async fn start_etcd(size: usize, root: &Path) -> (Processes, String) {
    let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
    let mut processes = Processes(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        processes.0.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(root.join(format!("etcd{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting etcd (scripts/setup.sh --bench installs it)"),
        );
    }
    let http = reqwest::Client::new();
    let urls: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
    let leader = wait_for("etcd leader", || async {
        for url in &urls {
            let status: serde_json::Value =
                http.post(format!("{url}/v3/maintenance/status")).body("{}").send().await.ok()?.json().await.ok()?;
            let leader = status["leader"].as_str()?;
            if status["header"]["member_id"].as_str() == Some(leader) {
                return Some(url.clone());
            }
        }
        None
    })
    .await;
    (processes, leader)
}

#[derive(Clone, Copy)]
enum Target {
    Conflux,
    Etcd,
}

struct Measured {
    writes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn drive(target: Target, url: &str, clients: usize, seconds: u64) -> Measured {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).tcp_nodelay(true).build().unwrap();
    let value = "v".repeat(128);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let url = Arc::new(url.to_string());
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (http, url, value) = (http.clone(), url.clone(), value.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("k{worker}-{}", i % 1000);
                    let request = match target {
                        Target::Conflux => {
                            http.put(format!("{url}/api/v1/configs/bench/app/env/{key}")).body(value.clone())
                        }
                        Target::Etcd => {
                            let b64 = |s: &str| base64_encode(s.as_bytes());
                            let body = format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", b64(&key), b64(&value));
                            http.post(format!("{url}/v3/kv/put")).body(body)
                        }
                    };
                    let started = Instant::now();
                    let response = request.send().await.expect("request");
                    assert!(response.status().is_success(), "write failed: {}", response.status());
                    response.bytes().await.expect("body");
                    latencies.push(started.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    Measured { writes_per_second: all.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99) }
}

fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    for size in sizes {
        let root: PathBuf = TempDir::new().unwrap().keep();
        let (conflux_processes, conflux_url) = start_conflux(size, &root).await;
        let (etcd_processes, etcd_url) = start_etcd(size, &root).await;
        for &clients in &client_counts {
            drive(Target::Conflux, &conflux_url, clients, 1).await; // warm-up
            let c = drive(Target::Conflux, &conflux_url, clients, seconds).await;
            drive(Target::Etcd, &etcd_url, clients, 1).await;
            let e = drive(Target::Etcd, &etcd_url, clients, seconds).await;
            println!(
                "| {size} | {clients} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                c.writes_per_second,
                c.p50_ms,
                c.p99_ms,
                e.writes_per_second,
                e.p50_ms,
                e.p99_ms,
                c.writes_per_second / e.writes_per_second,
                c.p99_ms / e.p99_ms
            );
        }
        drop(conflux_processes);
        drop(etcd_processes);
        let _ = std::fs::remove_dir_all(&root);
    }
}
