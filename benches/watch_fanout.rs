//! Watch fan-out of Conflux against etcd: how long one publish takes to reach N watchers, and
//! what holding them costs the nodes, on the same machine in the same run.
//!
//! For every cluster size (1 and 3 nodes) and watcher count (1,000 and 10,000), on fresh
//! clusters on loopback:
//! - Conflux: N long-poll watchers of one config, spread round-robin over the nodes, each on its
//!   own HTTP/1.1 connection, `POST /api/v1/watch` with the version they hold. Once the nodes'
//!   `conflux_watchers` gauges count all of them, a new version is written (untimed: a version
//!   alone reaches no client) and one publish of it (`POST …/release/publish`) is timed on the
//!   leader; every watcher's answer must name the new version. They then park again with it,
//!   for `BENCH_ROUNDS` publishes.
//! - etcd: N watch streams of one key through the JSON gateway (`POST /v3/watch`), spread over
//!   the members; once etcd has confirmed every one, one put (`POST /v3/kv/put`) on the leader,
//!   and every stream must deliver its event. The streams stay open across publishes.
//!
//! Connections open 500 at a time, each batch once the previous ones are registered, so that a
//! listen backlog never overflows. A watcher's latency is the time from the write's
//! acknowledgement until its answer arrived (one that arrived before the acknowledgement counts
//! 0), and from the write's start (what the etcd reference measures); p50, p99 and max
//! are over every watcher of every publish. Memory is the largest member's resident set before
//! the watchers connect and once all are registered. The table ends with etcd p99 / Conflux p99
//! (above 1: Conflux tells its watchers sooner), and the targets follow it.
//!
//! Run: `scripts/bench.sh` (runs every bench), or `. scripts/env.sh && cargo bench --bench
//! watch_fanout`. `BENCH_SIZES` sets the cluster sizes (default `1,3`), `BENCH_WATCHERS` the
//! watcher counts (default `1000,10000`), `BENCH_ROUNDS` the publishes per cell (default 5).

#[path = "support/cluster.rs"]
#[allow(dead_code)] // the clusters, not the load driver
mod cluster;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conflux::client::{Client, PutOptions};
use conflux::wire::{Held, WatchAnswer, WatchRequest, WriteResult};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::cluster::{base64_encode, env_list, etcd_put, percentile_ms, start_conflux, start_etcd, wait_for};

/// The watched config, `[tenant, app, env, name]`; etcd watches the key `bench/app/prod/watched`.
const KEY: [&str; 4] = ["bench", "app", "prod", "watched"];
/// Watchers that connect at once.
const WAVE: usize = 500;
/// How long a Conflux long-poll may stay parked; far longer than a round.
const WATCH_TIMEOUT_MS: u64 = 60_000;
/// The targets: 10,000 watchers on 3 nodes told with this p99 (from the acknowledgement) ...
const TARGET_P99_MS: f64 = 50.0;
/// ... and at most this much resident memory on a node holding 5,000 watchers.
const TARGET_RSS_MIB: f64 = 150.0;
const TARGET_RSS_WATCHERS: usize = 5_000;

fn etcd_key() -> String {
    KEY.join("/")
}

/// When one publish was sent and when its acknowledgement arrived.
#[derive(Clone, Copy)]
struct Publish {
    start: Instant,
    ack: Instant,
}

/// Runs `write`, timing it as a publish.
async fn timed<T>(write: impl Future<Output = T>) -> (Publish, T) {
    let start = Instant::now();
    let result = write.await;
    (Publish { start, ack: Instant::now() }, result)
}

/// `future`'s output, or a panic naming `what` after 60 s.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    let waited = tokio::time::timeout(Duration::from_secs(60), future).await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// What one system measured with one cluster size and watcher count.
#[derive(Default)]
struct Fanout {
    /// From the first connect until every watcher was registered.
    connect: Duration,
    /// The largest member's resident memory, MiB, before the watchers connected and after.
    rss_before: f64,
    rss_after: f64,
    /// Per watcher and publish: arrival − acknowledgement (0 if earlier), arrival − start.
    from_ack: Vec<Duration>,
    from_start: Vec<Duration>,
    /// Conflux only: the nodes' own p99 upper bound of apply → answer written, in ms
    /// (`conflux_watch_notify_seconds`), which leaves out this process's share of the CPU.
    server_p99_ms: Option<f64>,
}

impl Fanout {
    fn record(&mut self, publish: Publish, arrivals: &[Instant]) {
        for arrived in arrivals {
            self.from_ack.push(arrived.saturating_duration_since(publish.ack));
            self.from_start.push(arrived.saturating_duration_since(publish.start));
        }
    }

    /// Sorts the samples, which the percentiles need.
    fn finished(mut self) -> Fanout {
        self.from_ack.sort();
        self.from_start.sort();
        self
    }

    fn p99_ms(&self) -> f64 {
        percentile_ms(&self.from_ack, 0.99)
    }

    fn p99_from_start_ms(&self) -> f64 {
        percentile_ms(&self.from_start, 0.99)
    }

    /// Table cells: connect time, memory before → after, p50, p99 and max from the
    /// acknowledgement, p99 from the start.
    fn cells(&self) -> String {
        let ack = |p| percentile_ms(&self.from_ack, p);
        format!(
            "{:.1} | {:.0} → {:.0} | {:.1} | {:.1} | {:.1} | {:.1}",
            self.connect.as_secs_f64(),
            self.rss_before,
            self.rss_after,
            ack(0.50),
            ack(0.99),
            ack(1.0),
            self.p99_from_start_ms()
        )
    }
}

fn largest(values: Vec<f64>) -> f64 {
    values.into_iter().fold(0.0, f64::max)
}

/// One client for every watcher of a cell: each request in flight holds its own HTTP/1.1
/// connection, kept open between publishes.
fn watcher_client() -> reqwest::Client {
    let builder = reqwest::Client::builder().http1_only().tcp_nodelay(true);
    builder.pool_max_idle_per_host(usize::MAX).pool_idle_timeout(None).build().unwrap()
}

/// Starts watchers `0..n` through `start`, `WAVE` at a time, each wave once `registered` counts
/// every watcher started before it (`what` names that wait).
async fn ramp<R, Fut>(what: &str, n: usize, mut start: impl FnMut(usize), registered: R)
where
    R: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let registered = &registered;
    let mut started = 0;
    while started < n {
        let next = (started + WAVE).min(n);
        (started..next).for_each(&mut start);
        started = next;
        wait_for(what, || async move { (registered().await >= started).then_some(()) }).await;
    }
}

/// Watchers parked or streaming on the Conflux nodes at `urls`, by their `conflux_watchers` gauges.
async fn conflux_watchers(http: &reqwest::Client, urls: &[String]) -> usize {
    let mut total = 0.0;
    for url in urls {
        let response = http.get(format!("{url}/metrics")).send().await.expect("scraping a node's metrics");
        let text = response.text().await.expect("a node's metrics");
        let samples = text.lines().filter_map(|line| line.strip_prefix("conflux_watchers"));
        let values = samples.filter(|rest| rest.starts_with([' ', '{'])).filter_map(|rest| rest.rsplit(' ').next());
        total += values.filter_map(|value| value.parse::<f64>().ok()).sum::<f64>();
    }
    total as usize
}

/// The upper bound of the bucket holding the 99th percentile of the nodes' summed
/// `conflux_watch_notify_seconds` histograms, in ms.
async fn server_notify_p99_ms(http: &reqwest::Client, urls: &[String]) -> Option<f64> {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new(); // le in µs → cumulative count
    for url in urls {
        let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
        for line in text.lines().filter(|l| l.starts_with("conflux_watch_notify_seconds_bucket{")) {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
            let micros = if le == "+Inf" { u64::MAX } else { (le.parse::<f64>().ok()? * 1e6).round() as u64 };
            *buckets.entry(micros).or_default() += count;
        }
    }
    let total = *buckets.get(&u64::MAX)?;
    let (le, _) = buckets.iter().find(|(_, count)| **count >= total * 0.99)?;
    Some(if *le == u64::MAX { f64::INFINITY } else { *le as f64 / 1000.0 })
}

/// The long-poll of watcher `client` that holds `held`.
fn watch_request(held: &WriteResult, client: usize) -> WatchRequest {
    let known = Held::Exact { version: held.version, checksum: held.checksum.clone() };
    WatchRequest {
        tenant: KEY[0].into(),
        app: KEY[1].into(),
        env: KEY[2].into(),
        configs: Some(vec![KEY[3].into()]),
        client_id: Some(format!("c{client}")),
        known: BTreeMap::from([(KEY[3].to_string(), known)]),
        since_revision: held.revision,
        timeout_ms: Some(WATCH_TIMEOUT_MS),
        ..WatchRequest::default()
    }
}

/// Long-polls at `url` (again after a timeout) until an answer names a change: when it arrived
/// and the version it names.
async fn watch_once(http: reqwest::Client, url: String, request: WatchRequest) -> (Instant, u64) {
    loop {
        let response = http.post(format!("{url}/api/v1/watch")).json(&request).send().await.expect("watch");
        let status = response.status();
        assert!(status.is_success(), "watch answered {status}: {}", response.text().await.unwrap_or_default());
        let answer: WatchAnswer = response.json().await.expect("watch answer");
        if let Some(change) = answer.changes.first() {
            return (Instant::now(), change.version);
        }
    }
}

/// Writes `content` as the config's next version (untimed: a new version reaches no client by
/// itself), then publishes it to everyone, which is the timed write the watchers are told of.
async fn publish_conflux(writer: &Client, content: &str) -> (Publish, WriteResult) {
    let bytes = content.as_bytes().to_vec();
    let mut written = writer.put(KEY, bytes, PutOptions::default()).await.expect("writing a version");
    let current = writer.get_release(KEY).await.expect("reading the release").number;
    let publish = conflux::wire::Publish { version: written.version, message: None };
    let (timing, released) = timed(writer.publish_release(KEY, &publish, current)).await;
    written.revision = released.expect("publishing the version").revision;
    (timing, written)
}

async fn conflux_fanout(nodes: usize, watchers: usize, rounds: usize, root: &Path) -> Fanout {
    let cluster = start_conflux(nodes, root).await;
    let (writer, urls) = (Client::new(cluster.leader(), None), &cluster.urls);
    let (_, mut held) = publish_conflux(&writer, "initial").await;
    let (http, scraper) = (watcher_client(), reqwest::Client::new());
    let registered = || conflux_watchers(&scraper, urls);
    let mut fanout = Fanout { rss_before: largest(cluster.rss_mib()), ..Fanout::default() };
    for round in 0..rounds {
        let connecting = Instant::now();
        let mut answers = Vec::with_capacity(watchers);
        let start = |w: usize| {
            let watch = watch_once(http.clone(), urls[w % nodes].clone(), watch_request(&held, w));
            answers.push(tokio::spawn(watch));
        };
        ramp("Conflux watchers to park (the conflux_watchers gauge)", watchers, start, registered).await;
        if round == 0 {
            (fanout.connect, fanout.rss_after) = (connecting.elapsed(), largest(cluster.rss_mib()));
        }
        let (publish, written) = publish_conflux(&writer, &format!("round {round}")).await;
        let mut arrivals = Vec::with_capacity(watchers);
        for answer in answers {
            let (arrived, version) = within("Conflux watchers to be told", answer).await.unwrap();
            assert_eq!(version, written.version, "a watcher was told another version");
            arrivals.push(arrived);
        }
        fanout.record(publish, &arrivals);
        fanout.server_p99_ms = server_notify_p99_ms(&scraper, urls).await;
        held = written;
        wait_for("Conflux watchers to leave", || async { (registered().await == 0).then_some(()) }).await;
    }
    fanout.finished()
}

/// Removes and returns the complete JSON values at the start of `buffer`.
fn take_messages(buffer: &mut Vec<u8>) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Value>();
    for message in stream.by_ref() {
        match message {
            Ok(message) => messages.push(message),
            Err(e) if e.is_eof() => break,
            Err(e) => panic!("etcd watch stream: {e}"),
        }
    }
    let consumed = stream.byte_offset();
    buffer.drain(..consumed);
    messages
}

/// One etcd watch stream at `url`: counts itself in `created` once etcd confirms it, then sends
/// each event's value (base64) with the instant it arrived.
async fn etcd_watcher(
    http: reqwest::Client,
    url: String,
    created: Arc<AtomicUsize>,
    events: UnboundedSender<(String, Instant)>,
) {
    let body = format!("{{\"create_request\":{{\"key\":\"{}\"}}}}", base64_encode(etcd_key().as_bytes()));
    let mut response = http.post(format!("{url}/v3/watch")).body(body).send().await.expect("etcd watch");
    let mut buffer = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("etcd watch stream") {
        let arrived = Instant::now();
        buffer.extend_from_slice(&chunk);
        for message in take_messages(&mut buffer) {
            assert!(message.get("error").is_none(), "etcd watch: {message}");
            let result = &message["result"];
            if result["created"] == true {
                created.fetch_add(1, Ordering::Relaxed);
            }
            for event in result["events"].as_array().into_iter().flatten() {
                let _ = events.send((event["kv"]["value"].as_str().unwrap_or_default().to_string(), arrived));
            }
        }
    }
}

async fn publish_etcd(http: &reqwest::Client, leader: &str, value: &str) -> Publish {
    let put = async { etcd_put(http, leader, &etcd_key(), value).send().await?.error_for_status()?.bytes().await };
    let (publish, answer) = timed(put).await;
    answer.expect("etcd put");
    publish
}

async fn etcd_fanout(nodes: usize, watchers: usize, rounds: usize, root: &Path) -> Fanout {
    let cluster = start_etcd(nodes, root).await;
    let writer = reqwest::Client::new();
    publish_etcd(&writer, cluster.leader(), "initial").await;
    let mut fanout = Fanout { rss_before: largest(cluster.rss_mib()), ..Fanout::default() };
    let (http, created) = (watcher_client(), Arc::new(AtomicUsize::new(0)));
    let (events, mut arrivals) = unbounded_channel();
    let mut streams = Vec::with_capacity(watchers);
    let connecting = Instant::now();
    let start = |w: usize| {
        let url = cluster.urls[w % nodes].clone();
        streams.push(tokio::spawn(etcd_watcher(http.clone(), url, created.clone(), events.clone())));
    };
    let count = &created;
    ramp("etcd watch streams to be created", watchers, start, || async move { count.load(Ordering::Relaxed) }).await;
    (fanout.connect, fanout.rss_after) = (connecting.elapsed(), largest(cluster.rss_mib()));
    for round in 0..rounds {
        let value = format!("round {round}");
        let publish = publish_etcd(&writer, cluster.leader(), &value).await;
        let mut told = Vec::with_capacity(watchers);
        while told.len() < watchers {
            let (seen, arrived) = within("etcd watchers to be told", arrivals.recv()).await.expect("event channel");
            assert_eq!(seen, base64_encode(value.as_bytes()), "an etcd watcher saw another value");
            told.push(arrived);
        }
        fanout.record(publish, &told);
    }
    streams.iter().for_each(tokio::task::JoinHandle::abort);
    fanout.finished()
}

/// Lets this process, and the nodes it starts (they inherit the limit), hold `needed` files.
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given.
    let raised = read && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0;
    assert!(raised, "raising RLIMIT_NOFILE: {}", std::io::Error::last_os_error());
    assert!(limit.rlim_cur >= needed, "{needed} open files needed, the hard limit is {}", limit.rlim_cur);
}

/// etcd / Conflux, or `-` when Conflux measured 0 (every watcher told before the acknowledgement).
fn ratio(etcd: f64, conflux: f64) -> String {
    if conflux > 0.0 {
        format!("{:.2}", etcd / conflux)
    } else {
        "-".into()
    }
}

/// One row: both systems' cells and the p99 ratios, etcd / Conflux.
fn row(nodes: usize, watchers: usize, conflux: &Fanout, etcd: &Fanout) {
    let ack = ratio(etcd.p99_ms(), conflux.p99_ms());
    let start = ratio(etcd.p99_from_start_ms(), conflux.p99_from_start_ms());
    println!("| {nodes} | {watchers} | {} | {} | {ack} | {start} |", conflux.cells(), etcd.cells());
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// The targets, from the cells (`(nodes, watchers, Conflux)`) that measure them.
fn report_targets(cells: &[(usize, usize, Fanout)]) {
    println!("\nTargets:");
    match cells.iter().find(|(nodes, watchers, _)| (*nodes, *watchers) == (3, 10_000)) {
        Some((.., c)) => {
            let p99 = c.p99_ms();
            println!(
                "- 10,000 watchers on 3 nodes, p99 < {TARGET_P99_MS} ms: {p99:.1} ms: {}",
                verdict(p99 < TARGET_P99_MS)
            );
        }
        None => println!("- 10,000 watchers on 3 nodes: not measured (BENCH_SIZES=3 BENCH_WATCHERS=10000)"),
    }
    let loaded = cells.iter().filter(|(nodes, watchers, _)| watchers.div_ceil(*nodes) >= TARGET_RSS_WATCHERS);
    let mut any = false;
    for (nodes, watchers, c) in loaded {
        let per_node = watchers.div_ceil(*nodes);
        let outcome = verdict(c.rss_after < TARGET_RSS_MIB);
        println!("- node RSS < {TARGET_RSS_MIB} MiB with {TARGET_RSS_WATCHERS} watchers: {:.0} MiB with {per_node} on a node ({nodes} nodes, {watchers} watchers): {outcome}", c.rss_after);
        any = true;
    }
    if !any {
        println!("- node RSS with {TARGET_RSS_WATCHERS} watchers on a node: not measured (BENCH_SIZES=1 BENCH_WATCHERS=5000)");
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run only on bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes = env_list("BENCH_SIZES", "1,3");
    let counts = env_list("BENCH_WATCHERS", "1000,10000");
    let rounds = env_list("BENCH_ROUNDS", "5")[0];
    raise_open_files(counts.iter().max().copied().unwrap_or(0) as u64 + 1024);
    println!("Watch fan-out: one publish to N watchers, {rounds} publishes per row; latencies in ms, memory of the largest member in MiB\n");
    println!("| nodes | watchers | conflux connect s | RSS before → after | p50 | p99 | max | p99 from write start | etcd connect s | RSS before → after | p50 | p99 | max | p99 from write start | p99 etcd/conflux | from start etcd/conflux |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut cells = Vec::new();
    for &nodes in &sizes {
        for &watchers in &counts {
            let root: PathBuf = TempDir::new().unwrap().keep();
            let conflux = conflux_fanout(nodes, watchers, rounds, &root).await;
            let etcd = etcd_fanout(nodes, watchers, rounds, &root).await;
            row(nodes, watchers, &conflux, &etcd);
            cells.push((nodes, watchers, conflux));
            let _ = std::fs::remove_dir_all(&root);
        }
    }
    println!();
    for (nodes, watchers, conflux) in &cells {
        if let Some(p99) = conflux.server_p99_ms {
            println!("- {nodes} node(s), {watchers} watchers: the nodes' own p99 from apply to answer written is at most {p99} ms");
        }
    }
    report_targets(&cells);
}
