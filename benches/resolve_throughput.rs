//! Resolve and versioned-write throughput and latency of Conflux against etcd, 3 nodes each, on
//! the same machine in the same run.
//!
//! Starts 3 real `conflux serve` processes and 3 `etcd` members on loopback and prints two tables.
//! - Resolve: 16 JSON configs, each with 2 versions and a gray release (`canary=true` → v2, 10 %
//!   of clients → v2, everyone else v1), resolved with
//!   `GET /api/v1/resolve/bench/app/prod/cfg<i>?labels=zone=eu&client_id=c<n>` by clients spread
//!   over all nodes: linearizable (read index), `consistency=serializable`, and serializable with
//!   `If-None-Match` (304 Not Modified); against etcd JSON-gateway range reads (`POST /v3/kv/range`)
//!   spread over the members, linearizable and `serializable` (the 304 row is compared with the
//!   serializable one).
//! - Versioned write: each client writes new 128-byte versions of its own JSON config (64 configs)
//!   on the leader, through `PUT /api/v1/configs/...` (`Content-Type: application/json`) and through
//!   `POST .../versions` (JSON body); against etcd `POST /v3/kv/put` on its leader, next to the
//!   plain text `PUT` (no Content-Type) that `write_throughput` measures. The versioned write must
//!   stay within 20 % of the plain one at 64 clients; the last column and line say whether it does.
//!
//! - Resolve under lease reads: a second Conflux cluster whose nodes run `--read-policy lease`,
//!   linearizable resolves against etcd's linearizable range reads.
//!
//! Run: `scripts/bench.sh` (runs both benches), or `. scripts/env.sh && cargo bench --bench
//! resolve_throughput`. `BENCH_SECONDS` sets the time per cell (default 5), `BENCH_CLIENTS` the
//! client counts (default `64`).

#[path = "support/cluster.rs"]
mod cluster;

use std::path::PathBuf;

use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::{RequestBuilder, StatusCode};
use tempfile::TempDir;

use crate::cluster::{
    base64_encode, env_list, etcd_put, start_conflux, start_conflux_with, start_etcd, Cluster, Load, Measured,
};

const NODES: usize = 3;
/// The env every config lives in, and the etcd key prefix.
const ENV: &str = "bench/app/prod";
const RESOLVED_CONFIGS: u64 = 16;
const WRITTEN_CONFIGS: usize = 64;
const GRAY_RELEASE: &str = r#"{"rules":[{"labels":{"canary":"true"},"version":2,"priority":10},{"version":2,"priority":5,"percent":10},{"version":1,"priority":0}]}"#;
/// The versioned write may lose at most this much throughput against the plain write.
const MIN_VERSIONED_TO_PLAIN: f64 = 0.8;

/// A 128-byte JSON object.
fn json_value(name: &str, version: u64) -> String {
    let head = format!("{{\"name\":\"{name}\",\"version\":{version},\"pad\":\"");
    format!("{head}{}\"}}", "x".repeat(128 - head.len() - 2))
}

async fn send_ok(request: RequestBuilder) -> reqwest::Response {
    let response = request.send().await.expect("setup request");
    let status = response.status();
    assert!(status.is_success(), "setup request failed: {status}: {}", response.text().await.unwrap_or_default());
    response
}

/// Writes versions 1 and 2 of every resolved config, gives each the gray release, and puts the
/// same keys into etcd.
async fn set_up_reads(http: &reqwest::Client, conflux: &Cluster, etcd: &Cluster) {
    for c in 0..RESOLVED_CONFIGS {
        let url = format!("{}/api/v1/configs/{ENV}/cfg{c}", conflux.leader());
        for version in 1..=2 {
            let content = json_value(&format!("cfg{c}"), version);
            send_ok(http.put(&url).header(CONTENT_TYPE, "application/json").body(content)).await;
        }
        let release = http.put(format!("{url}/release")).header(IF_MATCH, "\"r1\"");
        send_ok(release.header(CONTENT_TYPE, "application/json").body(GRAY_RELEASE)).await;
        send_ok(etcd_put(http, etcd.leader(), &format!("{ENV}/cfg{c}"), &json_value(&format!("cfg{c}"), 2))).await;
    }
}

#[derive(Clone, Copy)]
enum Consistency {
    Linearizable,
    Serializable,
}

impl Consistency {
    fn name(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Serializable => "serializable",
        }
    }
}

/// The resolve URL client `worker` sends its `i`-th request to: its node, the next config.
fn resolve_url(urls: &[String], consistency: Consistency, worker: usize, i: u64) -> String {
    let node = &urls[worker % urls.len()];
    let query = match consistency {
        Consistency::Linearizable => "",
        Consistency::Serializable => "&consistency=serializable",
    };
    format!("{node}/api/v1/resolve/{ENV}/cfg{}?labels=zone=eu&client_id=c{worker}{query}", i % RESOLVED_CONFIGS)
}

/// The ETag each client receives for each config, `[client][config]`, from a first resolve.
async fn first_etags(http: &reqwest::Client, urls: &[String], clients: usize) -> Vec<Vec<String>> {
    let mut etags = Vec::new();
    for worker in 0..clients {
        let mut of_client = Vec::new();
        for c in 0..RESOLVED_CONFIGS {
            let response = send_ok(http.get(resolve_url(urls, Consistency::Linearizable, worker, c))).await;
            of_client.push(response.headers()[ETAG].to_str().unwrap().to_string());
        }
        etags.push(of_client);
    }
    etags
}

/// Resolves; with `etags`, every request carries the client's `If-None-Match` and must be a 304.
async fn measure_resolve(
    conflux: &Cluster,
    consistency: Consistency,
    etags: Option<Vec<Vec<String>>>,
    clients: usize,
    seconds: u64,
) -> Measured {
    let urls = conflux.urls.clone();
    let expect: fn(&StatusCode) -> bool =
        if etags.is_some() { |status| *status == StatusCode::NOT_MODIFIED } else { StatusCode::is_success };
    let request = move |http: &reqwest::Client, worker: usize, i: u64| {
        let request = http.get(resolve_url(&urls, consistency, worker, i));
        match &etags {
            Some(etags) => request.header(IF_NONE_MATCH, &etags[worker][(i % RESOLVED_CONFIGS) as usize]),
            None => request,
        }
    };
    Load { clients, expect, request }.measure(seconds).await
}

/// etcd range reads of the resolved configs' keys, clients spread over the members.
async fn measure_range(etcd: &Cluster, consistency: Consistency, clients: usize, seconds: u64) -> Measured {
    let urls = etcd.urls.clone();
    let keys: Vec<String> = (0..RESOLVED_CONFIGS).map(|c| base64_encode(format!("{ENV}/cfg{c}").as_bytes())).collect();
    let serializable = match consistency {
        Consistency::Linearizable => "",
        Consistency::Serializable => ",\"serializable\":true",
    };
    let request = move |http: &reqwest::Client, worker: usize, i: u64| {
        let body = format!("{{\"key\":\"{}\"{serializable}}}", keys[(i % RESOLVED_CONFIGS) as usize]);
        http.post(format!("{}/v3/kv/range", urls[worker % urls.len()])).body(body)
    };
    Load { clients, expect: StatusCode::is_success, request }.measure(seconds).await
}

#[derive(Clone, Copy)]
enum Write {
    /// `PUT` with no Content-Type: text, as `write_throughput` writes.
    PlainPut,
    JsonPut,
    JsonPostVersion,
    EtcdPut,
}

impl Write {
    fn name(self) -> &'static str {
        match self {
            Write::PlainPut => "PUT text (plain)",
            Write::JsonPut => "PUT json",
            Write::JsonPostVersion => "POST versions json",
            Write::EtcdPut => "etcd put",
        }
    }
}

/// Client `n` writes new versions of config `n mod 64` (etcd: the same key) on the leader.
async fn measure_write(write: Write, leader: &str, clients: usize, seconds: u64) -> Measured {
    let (leader, plain) = (leader.to_string(), "v".repeat(128));
    let request = move |http: &reqwest::Client, worker: usize, i: u64| {
        let config = worker % WRITTEN_CONFIGS;
        let url = format!("{leader}/api/v1/configs/{ENV}");
        match write {
            Write::PlainPut => http.put(format!("{url}/t{config}")).body(plain.clone()),
            Write::JsonPut => http
                .put(format!("{url}/w{config}"))
                .header(CONTENT_TYPE, "application/json")
                .body(json_value(&format!("w{config}"), i)),
            Write::JsonPostVersion => {
                let body = serde_json::json!({"content": json_value(&format!("w{config}"), i), "message": "bench"});
                http.post(format!("{url}/w{config}/versions")).json(&body)
            }
            Write::EtcdPut => etcd_put(http, &leader, &format!("{ENV}/w{config}"), &json_value("w", i)),
        }
    };
    Load { clients, expect: StatusCode::is_success, request }.measure(seconds).await
}

fn row(clients: usize, conflux_name: &str, c: &Measured, etcd_name: &str, e: &Measured, extra: &str) {
    println!("| {clients} | {conflux_name} | {} | {etcd_name} | {} | {} |{extra}", c.cells(), e.cells(), c.ratios(e));
}

async fn resolve_table(conflux: &Cluster, etcd: &Cluster, client_counts: &[usize], seconds: u64) {
    let http = reqwest::Client::new();
    set_up_reads(&http, conflux, etcd).await;
    println!("Resolve, {NODES} nodes, {RESOLVED_CONFIGS} configs with a gray release (Conflux/etcd ratios)\n");
    println!("| clients | conflux resolve | r/s | p50 ms | p99 ms | etcd range | r/s | p50 ms | p99 ms | r/s ratio | p99 ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &clients in client_counts {
        let (linearizable, serializable) = (Consistency::Linearizable, Consistency::Serializable);
        let e_lin = measure_range(etcd, linearizable, clients, seconds).await;
        let e_ser = measure_range(etcd, serializable, clients, seconds).await;
        let c_lin = measure_resolve(conflux, linearizable, None, clients, seconds).await;
        row(clients, linearizable.name(), &c_lin, linearizable.name(), &e_lin, "");
        let c_ser = measure_resolve(conflux, serializable, None, clients, seconds).await;
        row(clients, serializable.name(), &c_ser, serializable.name(), &e_ser, "");
        let etags = first_etags(&http, &conflux.urls, clients).await;
        let c_304 = measure_resolve(conflux, serializable, Some(etags), clients, seconds).await;
        row(clients, "serializable, 304", &c_304, serializable.name(), &e_ser, "");
    }
}

/// Linearizable resolves on a second cluster whose nodes run `--read-policy lease`, next to etcd's
/// linearizable range reads measured again in the same minute.
async fn lease_table(lease: &Cluster, etcd: &Cluster, client_counts: &[usize], seconds: u64) {
    set_up_reads(&reqwest::Client::new(), lease, etcd).await;
    println!("\nResolve on nodes with `--read-policy lease`, {NODES} nodes (Conflux/etcd ratios)\n");
    println!("| clients | conflux resolve | r/s | p50 ms | p99 ms | etcd range | r/s | p50 ms | p99 ms | r/s ratio | p99 ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &clients in client_counts {
        let linearizable = Consistency::Linearizable;
        let e_lin = measure_range(etcd, linearizable, clients, seconds).await;
        let c_lin = measure_resolve(lease, linearizable, None, clients, seconds).await;
        row(clients, "linearizable (lease)", &c_lin, linearizable.name(), &e_lin, "");
    }
}

async fn write_table(conflux: &Cluster, etcd: &Cluster, client_counts: &[usize], seconds: u64) {
    println!("\nVersioned write, {NODES} nodes, {WRITTEN_CONFIGS} configs, 128-byte values, on the leader (Conflux/etcd ratios)\n");
    println!("| clients | conflux write | w/s | p50 ms | p99 ms | etcd write | w/s | p50 ms | p99 ms | w/s ratio | p99 ratio | w/s vs plain |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for &clients in client_counts {
        let e = measure_write(Write::EtcdPut, etcd.leader(), clients, seconds).await;
        let plain = measure_write(Write::PlainPut, conflux.leader(), clients, seconds).await;
        row(clients, Write::PlainPut.name(), &plain, Write::EtcdPut.name(), &e, " 1.00 |");
        let mut ratios = Vec::new();
        for write in [Write::JsonPut, Write::JsonPostVersion] {
            let c = measure_write(write, conflux.leader(), clients, seconds).await;
            let ratio = c.per_second / plain.per_second;
            row(clients, write.name(), &c, Write::EtcdPut.name(), &e, &format!(" {ratio:.2} |"));
            ratios.push((write.name(), ratio));
        }
        let within = ratios.iter().all(|(_, ratio)| *ratio >= MIN_VERSIONED_TO_PLAIN);
        let listed: Vec<String> = ratios.iter().map(|(name, ratio)| format!("{name} {ratio:.2}")).collect();
        let verdict = if within { "within 20 % of plain" } else { "NOT within 20 % of plain" };
        verdicts.push(format!("{clients} clients: versioned/plain w/s {}: {verdict}", listed.join(", ")));
    }
    println!("\nVersioned vs plain write (the issue requires >= {MIN_VERSIONED_TO_PLAIN:.2} at 64 clients):");
    for verdict in verdicts {
        println!("- {verdict}");
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only on bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env_list("BENCH_SECONDS", "5")[0] as u64;
    let client_counts = env_list("BENCH_CLIENTS", "64");
    let root: PathBuf = TempDir::new().unwrap().keep();
    let conflux = start_conflux(NODES, &root).await;
    let etcd = start_etcd(NODES, &root).await;
    resolve_table(&conflux, &etcd, &client_counts, seconds).await;
    write_table(&conflux, &etcd, &client_counts, seconds).await;
    drop(conflux);
    let lease = start_conflux_with(NODES, &root.join("lease"), &["--read-policy", "lease"]).await;
    lease_table(&lease, &etcd, &client_counts, seconds).await;
    drop(lease);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&root);
}
