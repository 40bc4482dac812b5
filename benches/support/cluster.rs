//! What the benchmarks share: real `conflux serve` and `etcd` clusters on loopback (killed when
//! dropped, their memory and CPU time readable), and the client-side load driver that runs
//! concurrent HTTP clients for a fixed time and reports throughput and latency percentiles.
//!
//! Not a benchmark itself: each bench includes it with `#[path = "support/cluster.rs"] mod cluster;`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conflux::client::Client;
use reqwest::{RequestBuilder, StatusCode};

const TOKEN: &str = "benchmark-cluster-token-0123456789";

/// A member's command line, with output discarded. A `Command` can be spawned again, which is how
/// a member restarts on the same data and ports.
fn member_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Running members, killed and reaped when dropped (also when a benchmark panics).
struct Processes(Vec<(Command, Child)>);

impl Processes {
    fn start(&mut self, mut command: Command) {
        let child = spawn(&mut command);
        self.0.push((command, child));
    }
}

fn spawn(command: &mut Command) -> Child {
    let program = command.get_program().to_owned();
    command.spawn().unwrap_or_else(|e| panic!("starting {program:?} (scripts/setup.sh --bench installs etcd): {e}"))
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running cluster: its members' client URLs, the leader's first.
pub struct Cluster {
    pub urls: Vec<String>,
    processes: Processes,
    /// Which of `processes` (start order) is the leader, `urls[0]`.
    leader_process: usize,
    /// The client path that answers 200 once a member is ready to serve.
    ready_path: &'static str,
}

impl Cluster {
    pub fn leader(&self) -> &str {
        &self.urls[0]
    }

    /// Each member process's resident memory (`VmRSS`) in MiB, in start order.
    #[allow(dead_code)] // not every bench reads memory
    pub fn rss_mib(&self) -> Vec<f64> {
        self.processes.0.iter().map(|(_, child)| rss_mib(child.id())).collect()
    }

    /// CPU time (user + system) each member has used so far, in seconds, the leader's first.
    pub fn cpu_seconds(&self) -> Vec<f64> {
        let mut seconds: Vec<f64> = self.processes.0.iter().map(|(_, child)| cpu_seconds(child.id())).collect();
        seconds.swap(0, self.leader_process);
        seconds
    }

    /// Stops member `i` cleanly (SIGTERM, as the kubelet does), waits for it to exit, stays down
    /// for `down` (a replaced pod is gone for seconds), starts it again on the same data and
    /// ports, and waits until it answers ready.
    #[allow(dead_code)] // only the rolling-restart bench restarts members
    pub async fn restart_gracefully(&mut self, i: usize, down: Duration) {
        let (command, child) = &mut self.processes.0[i];
        // SAFETY: kill(2) with a child's pid and a valid signal has no memory effects.
        let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "signalling member {i}");
        let exited = tokio::task::block_in_place(|| child.wait()).expect("waiting for a member to exit");
        // etcd re-raises SIGTERM once it has stopped cleanly, so dying of it is a clean exit too.
        let clean = exited.success() || std::os::unix::process::ExitStatusExt::signal(&exited) == Some(libc::SIGTERM);
        assert!(clean, "member {i} exited with {exited} on SIGTERM");
        tokio::time::sleep(down).await;
        *child = spawn(command);
        let (http, url) = (reqwest::Client::new(), format!("{}{}", self.urls[i], self.ready_path));
        wait_for("a restarted member ready", || async {
            let response = http.get(&url).timeout(Duration::from_secs(1)).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading a member's /proc status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc status");
    let kib: f64 = line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB");
    kib / 1024.0
}

/// A process's CPU time so far (`utime + stime` of `/proc/<pid>/stat`), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading a member's /proc stat");
    // The command name (field 2) is parenthesised and may hold spaces: count fields after it.
    let after_name = &stat[stat.rfind(')').expect("a command name in /proc stat") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("CPU ticks in /proc stat");
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15, the 12th and 13th after the name.
    (ticks(11) + ticks(12)) / per_second
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A comma-separated list of numbers from the environment, or `default`.
pub fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().parse().unwrap()).collect()
}

/// Polls `probe` every 50 ms until it yields a value; panics after 60 s.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
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

/// Starts a Conflux cluster of `size` voters; the first node initialises it and leads.
pub async fn start_conflux(size: usize, root: &Path) -> Cluster {
    start_conflux_with(size, root, &[]).await
}

/// [`start_conflux`] with `args` added to every node's `conflux serve` command line.
pub async fn start_conflux_with(size: usize, root: &Path, args: &[&str]) -> Cluster {
    let mut processes = Processes(Vec::new());
    let mut nodes = Vec::new();
    for i in 0..size {
        let dir = root.join(format!("conflux{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (client, peer) = (free_port(), free_port());
        let mut command = member_command(env!("CARGO_BIN_EXE_conflux"));
        command
            .args(["serve", "--join", "--data-dir"])
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{client}"), "--peer-listen", &format!("127.0.0.1:{peer}")])
            .args(args)
            .env("CONFLUX_CLUSTER_TOKEN", TOKEN)
            // etcd runs without auth here, so Conflux does too: the ratios compare like with
            // like. (With auth, a request costs one more constant-time compare, or one
            // RocksDB point read for an API token.)
            .env("CONFLUX_AUTH", "disabled")
            .env("RUST_LOG", "warn");
        processes.start(command);
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
    let urls = nodes.into_iter().map(|(client, _)| client).collect();
    Cluster { urls, processes, leader_process: 0, ready_path: "/readyz" }
}

/// Starts an etcd cluster of `size` members and waits until one leads.
pub async fn start_etcd(size: usize, root: &Path) -> Cluster {
    let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
    let mut processes = Processes(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let mut command = member_command("etcd");
        command
            .args(["--name", &format!("e{i}"), "--data-dir"])
            .arg(root.join(format!("etcd{i}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-state", "new"])
            .args(["--log-level", "error"]);
        processes.start(command);
    }
    let http = reqwest::Client::new();
    let mut urls: Vec<String> = ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
    let leader = wait_for("etcd leader", || async {
        for (i, url) in urls.iter().enumerate() {
            let status: serde_json::Value =
                http.post(format!("{url}/v3/maintenance/status")).body("{}").send().await.ok()?.json().await.ok()?;
            let leader = status["leader"].as_str()?;
            if status["header"]["member_id"].as_str() == Some(leader) {
                return Some(i);
            }
        }
        None
    })
    .await;
    urls.swap(0, leader);
    Cluster { urls, processes, leader_process: leader, ready_path: "/health" }
}

/// An etcd JSON-gateway put (`POST /v3/kv/put`) of `value` at `key`.
pub fn etcd_put(http: &reqwest::Client, url: &str, key: &str, value: &str) -> RequestBuilder {
    let body =
        format!("{{\"key\":\"{}\",\"value\":\"{}\"}}", base64_encode(key.as_bytes()), base64_encode(value.as_bytes()));
    http.post(format!("{url}/v3/kv/put")).body(body)
}

/// Standard base64 with padding, what etcd's JSON gateway expects for keys and values.
pub fn base64_encode(input: &[u8]) -> String {
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

/// Requests per second and latency percentiles of one timed run.
pub struct Measured {
    /// Requests answered in the measured run.
    pub requests: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Measured {
    /// Table cells: rate, p50 and p99.
    pub fn cells(&self) -> String {
        format!("{:.0} | {:.2} | {:.2}", self.per_second, self.p50_ms, self.p99_ms)
    }

    /// Table cells comparing Conflux (`self`) with etcd: the rate ratio and the p99 ratio.
    pub fn ratios(&self, etcd: &Measured) -> String {
        format!("{:.2} | {:.2}", self.per_second / etcd.per_second, self.p99_ms / etcd.p99_ms)
    }
}

/// CPU time (user + system) per request of a measured run, in microseconds.
#[allow(dead_code)] // only the write bench prints it
pub struct CpuPerRequest {
    /// Each member's, the leader's first.
    pub members: Vec<f64>,
    /// The benchmark process's own: the clients sharing the machine with the members.
    pub client: f64,
}

/// One load: `clients` concurrent clients, each sending `request(http, client, i)` for its i-th
/// request, back to back; every answer's status must satisfy `expect`.
pub struct Load<F> {
    pub clients: usize,
    pub expect: fn(&StatusCode) -> bool,
    pub request: F,
}

impl<F> Load<F>
where
    F: Fn(&reqwest::Client, usize, u64) -> RequestBuilder + Send + Sync + 'static,
{
    /// Runs the load for one second to warm up, then for `seconds` measured.
    #[allow(dead_code)] // the write bench measures CPU too
    pub async fn measure(self, seconds: u64) -> Measured {
        self.measure_cpu_of(None, seconds).await.0
    }

    /// [`Load::measure`], also returning the CPU time spent per request of the measured run by
    /// each member of `cluster` (none without one) and by this process, the clients.
    pub async fn measure_cpu_of(self, cluster: Option<&Cluster>, seconds: u64) -> (Measured, CpuPerRequest) {
        let (clients, expect, request) = (self.clients, self.expect, Arc::new(self.request));
        drive(clients, expect, request.clone(), 1).await;
        let members = || cluster.map(Cluster::cpu_seconds).unwrap_or_default();
        let (members_before, client_before) = (members(), cpu_seconds(std::process::id()));
        let measured = drive(clients, expect, request, seconds).await;
        let (members_after, client_after) = (members(), cpu_seconds(std::process::id()));
        let requests = measured.requests.max(1) as f64;
        let per_request = |before: f64, after: f64| (after - before) * 1e6 / requests;
        let members = members_before.iter().zip(&members_after).map(|(b, a)| per_request(*b, *a)).collect();
        let client = per_request(client_before, client_after);
        (measured, CpuPerRequest { members, client })
    }
}

async fn drive<F>(clients: usize, expect: fn(&StatusCode) -> bool, request: Arc<F>, seconds: u64) -> Measured
where
    F: Fn(&reqwest::Client, usize, u64) -> RequestBuilder + Send + Sync + 'static,
{
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).tcp_nodelay(true).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (http, request) = (http.clone(), request.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let builder = request(&http, worker, i);
                    let started = Instant::now();
                    let response = builder.send().await.expect("request");
                    let status = response.status();
                    let body = response.bytes().await.expect("body");
                    assert!(expect(&status), "unexpected answer {status}: {}", String::from_utf8_lossy(&body));
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
    let pct = |p: f64| percentile_ms(&all, p);
    Measured { requests: all.len(), per_second: all.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99) }
}

/// The `p` quantile (0 to 1) of `sorted` (ascending, not empty), in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
