//! Test harness for real clusters: each node is a real `conflux serve` process on 127.0.0.1 with
//! its own data directory; peer traffic goes through a [`FaultProxy`] per node so tests can
//! partition the network. Waits poll real state with deadlines; nothing sleeps blindly.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conflux::client::Client;
use conflux::wire::ClusterStatus;
use tempfile::TempDir;

#[path = "proxy.rs"]
mod proxy;
pub use proxy::FaultProxy;

pub const TOKEN: &str = "test-cluster-token-0123456789abcdef";
/// The bootstrap admin token every test node is given.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Extra `conflux serve` flags for every node of a cluster.
#[derive(Clone, Default)]
pub struct NodeOptions {
    pub extra_args: Vec<String>,
}

/// Runs `scripts/certs.sh dir nodes`: a CA (kept if `dir` has one) and fresh leaf certificates.
pub fn make_certs(dir: &Path, nodes: usize) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/certs.sh");
    let status = Command::new(script).arg(dir).arg(nodes.to_string()).stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "scripts/certs.sh failed");
}

/// A client of `url`, trusting `ca` when given.
pub fn client_of(url: &str, ca: Option<&[u8]>) -> Client {
    match ca {
        Some(ca) => Client::with_ca(url, Some(ADMIN_TOKEN.to_string()), ca).unwrap(),
        None => Client::new(url, Some(ADMIN_TOKEN.to_string())),
    }
}

pub struct TestNode {
    pub dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub node_id: u64,
    pub proxy: FaultProxy,
    /// The URL peers reach this node at: its proxy, or (TLS) its peer listener.
    pub peer_url: String,
    /// The CA its certificates are signed by (TLS clusters).
    pub ca: Option<Vec<u8>>,
    process: Option<Child>,
}

impl TestNode {
    fn scheme(&self) -> &'static str {
        if self.ca.is_some() {
            "https"
        } else {
            "http"
        }
    }
    pub fn client_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.client_addr)
    }
    pub fn client(&self) -> Client {
        client_of(&self.client_url(), self.ca.as_deref())
    }
    pub fn admin(&self) -> Client {
        client_of(&format!("{}://{}", self.scheme(), self.peer_addr), self.ca.as_deref())
    }
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }
    /// This node's `/metrics` text, fetched with the admin token.
    pub async fn metrics_text(&self) -> String {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            builder = conflux::client::trusting(builder, ca).unwrap();
        }
        let response = builder.build().unwrap().get(format!("{}/metrics", self.client_url())).bearer_auth(ADMIN_TOKEN);
        response.send().await.unwrap().error_for_status().unwrap().text().await.unwrap()
    }
    /// The sum of a metric's samples whose labels include every `labels` pair (0 when none).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics_text().await;
        let (plain, labelled) = (format!("{name} "), format!("{name}{{"));
        text.lines()
            .filter(|line| line.starts_with(&plain) || line.starts_with(&labelled))
            .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub struct TestCluster {
    pub root: TempDir,
    pub nodes: Vec<TestNode>,
    options: NodeOptions,
    /// A directory made by `scripts/certs.sh DIR N`: node `i` (from 0) runs with node id `i + 1`,
    /// client TLS (`server.pem`) and peer mTLS (`node-<id>.pem`, `ca.pem`). Peer traffic then goes
    /// straight to the nodes (the HTTP fault proxy cannot read TLS).
    tls: Option<PathBuf>,
}

/// The `conflux` binary: `CONFLUX_BIN` when set (a private copy, which builds of other branches
/// into a shared target directory cannot overwrite), else the one Cargo built with this test.
pub fn conflux_bin() -> PathBuf {
    std::env::var_os("CONFLUX_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_conflux")), PathBuf::from)
}

/// Starts node `index` of a cluster; `advertise_peer: None` lets it advertise its own listener.
fn spawn(
    index: usize,
    dir: &Path,
    listen: &str,
    peer_listen: &str,
    advertise_peer: Option<&str>,
    options: &NodeOptions,
    tls: Option<&Path>,
) -> Child {
    let _ = std::fs::remove_file(dir.join("listen.json"));
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).unwrap();
    let mut tls_args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(certs) = tls {
        let id = index + 1;
        let file = |name: String| certs.join(name).into_os_string();
        tls_args.extend(["--node-id".into(), id.to_string().into()]);
        tls_args.extend(["--tls-cert-file".into(), file("server.pem".into())]);
        tls_args.extend(["--tls-key-file".into(), file("server-key.pem".into())]);
        tls_args.extend(["--peer-tls-cert-file".into(), file(format!("node-{id}.pem"))]);
        tls_args.extend(["--peer-tls-key-file".into(), file(format!("node-{id}-key.pem"))]);
        tls_args.extend(["--peer-tls-ca-file".into(), file("ca.pem".into())]);
    }
    if let Some(url) = advertise_peer {
        tls_args.extend(["--advertise-peer".into(), url.into()]);
    }
    Command::new(conflux_bin())
        .args(["serve", "--join", "--data-dir"])
        .arg(dir)
        .args(["--listen", listen, "--peer-listen", peer_listen])
        .args(&tls_args)
        .args(["--heartbeat-ms", "150", "--election-timeout-min-ms", "800", "--election-timeout-max-ms", "1600"])
        .args(&options.extra_args)
        .env("CONFLUX_CLUSTER_TOKEN", TOKEN)
        .env("CONFLUX_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting conflux serve")
}

async fn wait_listening(dir: &Path) -> (SocketAddr, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("listen.json")) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
            return (addr("client"), addr("peer"));
        }
        assert!(Instant::now() < deadline, "node in {} never started; see node.log", dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `probe` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestCluster {
    /// Starts `size` nodes in cluster mode, initializes the first, adds the rest as learners and
    /// promotes them: the same steps an operator takes through the admin API.
    pub async fn start(size: usize, options: NodeOptions) -> TestCluster {
        TestCluster::start_with_tls(size, options, None).await
    }

    /// A cluster of no nodes yet: [`TestCluster::add_node`] starts pristine ones (`--join`).
    pub fn empty(options: NodeOptions) -> TestCluster {
        TestCluster { root: TempDir::new().unwrap(), nodes: Vec::new(), options, tls: None }
    }

    /// [`TestCluster::start`] with TLS on both listeners, certificates from `certs.sh` in `certs`.
    pub async fn start_with_tls(size: usize, options: NodeOptions, certs: Option<&Path>) -> TestCluster {
        let tls = certs.map(Path::to_path_buf);
        let mut cluster = TestCluster { root: TempDir::new().unwrap(), nodes: Vec::new(), options, tls };
        for _ in 0..size {
            cluster.add_node().await;
        }
        cluster.nodes[0].admin().init().await.expect("init the first node");
        for i in 1..size {
            cluster.add_learner(i).await;
        }
        if size > 1 {
            let voters: Vec<u64> = cluster.nodes.iter().map(|n| n.node_id).collect();
            cluster.nodes[0].admin().set_voters(voters).await.expect("promote learners");
        }
        cluster.wait_converged_membership().await;
        cluster
    }

    /// Starts one more (uninitialized) node process and returns its index.
    pub async fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let dir = self.root.path().join(format!("node{index}"));
        // The proxy exists first so the node can advertise it: all peer traffic then passes it.
        let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap()).await;
        let tls = self.tls.is_some();
        let advertise = (!tls).then(|| proxy.url());
        let process =
            spawn(index, &dir, "127.0.0.1:0", "127.0.0.1:0", advertise.as_deref(), &self.options, self.tls.as_deref());
        let (client_addr, peer_addr) = wait_listening(&dir).await;
        proxy.set_target(peer_addr);
        let peer_url = advertise.unwrap_or_else(|| format!("https://{peer_addr}"));
        let ca = self.tls.as_ref().map(|dir| std::fs::read(dir.join("ca.pem")).expect("reading ca.pem"));
        let scheme = if tls { "https" } else { "http" };
        let admin = client_of(&format!("{scheme}://{peer_addr}"), ca.as_deref());
        let node_id = eventually("node answers status", Duration::from_secs(10), || async {
            admin.status().await.ok().map(|s| s.node_id)
        })
        .await;
        let process = Some(process);
        self.nodes.push(TestNode { dir, client_addr, peer_addr, node_id, proxy, peer_url, ca, process });
        index
    }

    /// Adds node `index` as a learner through any live node and waits for it to catch up.
    pub async fn add_learner(&self, index: usize) {
        let node = &self.nodes[index];
        let via = self.any_running_except(index);
        let result = via
            .admin()
            .add_learner(node.node_id, &node.peer_url, Some(Duration::from_secs(30)))
            .await
            .expect("add learner");
        assert!(result.caught_up, "learner {} did not catch up: {result:?}", node.node_id);
    }

    fn any_running_except(&self, index: usize) -> &TestNode {
        self.nodes.iter().enumerate().find(|(i, n)| *i != index && n.is_running()).expect("a running node").1
    }

    pub async fn status(&self, index: usize) -> Option<ClusterStatus> {
        self.nodes[index].admin().status().await.ok()
    }

    /// Waits until every running node names the same running leader, which says it leads, and
    /// returns its index.
    pub async fn leader(&self) -> usize {
        eventually("a leader agreed by all running nodes", Duration::from_secs(30), || async {
            let mut leaders = BTreeSet::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if node.is_running() {
                    leaders.insert(self.status(i).await?.leader_id?);
                }
            }
            let leader_id = *leaders.iter().next()?;
            let index = self.nodes.iter().position(|n| n.node_id == leader_id && n.is_running())?;
            let leads = self.status(index).await?.state == "Leader";
            (leaders.len() == 1 && leads).then_some(index)
        })
        .await
    }

    /// Waits until every running node reports the same voter set.
    pub async fn wait_converged_membership(&self) -> BTreeSet<u64> {
        eventually("membership agreed by all running nodes", Duration::from_secs(30), || async {
            let mut sets = BTreeSet::new();
            for (i, node) in self.nodes.iter().enumerate() {
                if node.is_running() {
                    sets.insert(self.status(i).await?.voters.keys().copied().collect::<BTreeSet<u64>>());
                }
            }
            (sets.len() == 1).then(|| sets.into_iter().next()).flatten()
        })
        .await
    }

    /// Waits until every running node has applied at least `index`.
    pub async fn wait_applied(&self, index: u64) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                eventually(&format!("node {i} applies {index}"), Duration::from_secs(60), || async {
                    (self.status(i).await?.applied_index >= index).then_some(())
                })
                .await;
            }
        }
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            process.kill().unwrap();
            process.wait().unwrap();
        }
    }

    /// SIGTERMs node `index` and waits for it to exit: a clean shutdown.
    pub fn terminate(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            // SAFETY: kill(2) with a child's pid and a valid signal has no memory effects.
            let sent = unsafe { libc::kill(process.id() as libc::pid_t, libc::SIGTERM) };
            assert_eq!(sent, 0, "signalling node {index}");
            process.wait().unwrap();
        }
    }

    /// SIGSTOPs (`paused`) or SIGCONTs node `index`: a process that stops answering without
    /// dying, like one stuck in a long GC pause or on a frozen VM.
    pub fn set_paused(&self, index: usize, paused: bool) {
        if let Some(process) = &self.nodes[index].process {
            let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) with a child's pid and a valid signal has no memory effects.
            let sent = unsafe { libc::kill(process.id() as libc::pid_t, signal) };
            assert_eq!(sent, 0, "signalling node {index}");
        }
    }

    /// Restarts node `index` on its data directory and its previous ports.
    pub async fn restart(&mut self, index: usize) {
        let node = &self.nodes[index];
        let (client, peer) = (node.client_addr.to_string(), node.peer_addr.to_string());
        let advertise = self.tls.is_none().then(|| node.proxy.url());
        let process = spawn(index, &node.dir, &client, &peer, advertise.as_deref(), &self.options, self.tls.as_deref());
        wait_listening(&node.dir).await;
        self.nodes[index].process = Some(process);
    }

    /// Replaces node `index` by a pristine node: SIGKILLs it, deletes its data directory and starts
    /// a new, uninitialized node on the same ports behind the same proxy (so clients and the proxy
    /// stay valid), and returns its node id. Remove the old member before; add the new one after.
    pub async fn wipe_and_restart(&mut self, index: usize) -> u64 {
        self.kill(index);
        std::fs::remove_dir_all(&self.nodes[index].dir).expect("wiping the data directory");
        self.restart(index).await;
        let admin = self.nodes[index].admin();
        let node_id = eventually("the pristine node answers status", Duration::from_secs(10), || async {
            admin.status().await.ok().map(|s| s.node_id)
        })
        .await;
        self.nodes[index].node_id = node_id;
        node_id
    }

    /// The last `lines` lines of node `index`'s log, backtrace frames left out, to explain a
    /// failure.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let log = std::fs::read_to_string(self.nodes[index].dir.join("node.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().filter(|line| !line.starts_with("  ")).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Isolates the nodes in `group` from the rest: each side refuses the other's requests.
    pub fn partition(&self, group: &[usize]) {
        let inside: BTreeSet<u64> = group.iter().map(|i| self.nodes[*i].node_id).collect();
        let outside: BTreeSet<u64> = self.nodes.iter().map(|n| n.node_id).filter(|id| !inside.contains(id)).collect();
        for node in &self.nodes {
            let blocked = if inside.contains(&node.node_id) { outside.clone() } else { inside.clone() };
            node.proxy.block_senders(blocked);
        }
    }

    pub fn heal(&self) {
        for node in &self.nodes {
            node.proxy.block_senders([]);
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }
}

/// Clients writing unique keys (`load/t/w/<worker>-<seq>`) round-robin over the given nodes until
/// stopped; remembers every acknowledged write.
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(Vec<String>, u64)>>,
}

pub const LOAD_NAMESPACE: [&str; 3] = ["load", "t", "w"];

impl WriteLoad {
    pub fn start(client_urls: Vec<String>, workers: usize) -> WriteLoad {
        let clients = client_urls.iter().map(|u| Client::new(u, Some(ADMIN_TOKEN.to_string()))).collect();
        WriteLoad::start_with(clients, workers)
    }

    /// [`WriteLoad::start`] through the given clients.
    pub fn start_with(clients: Vec<Client>, workers: usize) -> WriteLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|worker| {
                let stop = stop.clone();
                let clients = clients.clone();
                tokio::spawn(async move {
                    let (mut acked, mut failed) = (Vec::new(), 0u64);
                    let mut seq = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let name = format!("{worker}-{seq}");
                        let client = &clients[(worker + seq) % clients.len()];
                        let key = [LOAD_NAMESPACE[0], LOAD_NAMESPACE[1], LOAD_NAMESPACE[2], name.as_str()];
                        match client.put(key, name.clone().into_bytes(), Default::default()).await {
                            Ok(_) => acked.push(name),
                            Err(_) => {
                                failed += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        seq += 1;
                    }
                    (acked, failed)
                })
            })
            .collect();
        WriteLoad { stop, workers }
    }

    /// Stops the writers; returns the acknowledged names and the number of failed attempts.
    pub async fn stop(self) -> (Vec<String>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut acked, mut failed) = (Vec::new(), 0);
        for worker in self.workers {
            let (a, f) = worker.await.unwrap();
            acked.extend(a);
            failed += f;
        }
        (acked, failed)
    }
}

impl TestCluster {
    /// Asserts that every running node serves every acknowledged write of a [`WriteLoad`], with
    /// its content, through a linearizable read.
    pub async fn assert_has_all(&self, acked: &[String]) {
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.is_running() {
                continue;
            }
            let client = node.client();
            let listed = eventually(&format!("node {i} lists the load namespace"), Duration::from_secs(30), || async {
                client.list(LOAD_NAMESPACE[0], LOAD_NAMESPACE[1], LOAD_NAMESPACE[2]).await.ok()
            })
            .await;
            let names: BTreeSet<String> = listed.configs.into_iter().map(|c| c.name).collect();
            let missing: Vec<&String> = acked.iter().filter(|a| !names.contains(*a)).collect();
            assert!(
                missing.is_empty(),
                "node {i} lost {} acknowledged writes, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
        }
        let client = self.nodes.iter().find(|n| n.is_running()).unwrap().client();
        for name in acked.iter().step_by(7) {
            let key = [LOAD_NAMESPACE[0], LOAD_NAMESPACE[1], LOAD_NAMESPACE[2], name.as_str()];
            let config = client.get(key, false).await.unwrap().expect("acknowledged write is present");
            assert_eq!(config.content, name.as_bytes());
        }
    }
}
