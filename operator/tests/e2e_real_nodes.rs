//! End to end without a Kubernetes API server: kube-fake-client plays the API server, this
//! harness plays the StatefulSet controller and the kubelet — for every replica the operator
//! asks for it runs a real `conflux serve` process on 127.0.0.1 and records a Pod (Ready when
//! the node's `/readyz` says so) — and the operator's real `reconcile` is driven in a loop (the
//! fake client serves no watch). A client writes all along; after each scale step the voters
//! equal the replicas and every acknowledged write is readable.
//!
//! A second test deletes the `ConfluxCluster`, creates it again with the same name, and reads
//! every key back from the same volumes.
//! `day_two.rs`: backup (to a directory and to an S3 bucket, `s3_server.rs`), delete, restore;
//! quorum-loss recovery. `tls.rs`: a cluster with `spec.tls.mode: Auto` — the harness plays the
//! kubelet's Secret volume and the cluster's DNS (pod names resolve to loopback), so members reach
//! each other by the names their certificates carry.
//!
//! Needs the node binary: `CONFLUX_BIN=/path/to/conflux cargo test --features e2e --test
//! e2e_real_nodes` (built with `cargo build --bin conflux` at the repository root).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use conflux::{
    client::{Client, ClientError, HostAddress, PutOptions},
    wire,
};
use conflux_operator::{
    controller::{reconcile, Context},
    crd::{backup::ConfluxBackup, labels, ConfluxCluster, ConfluxClusterSpec, NodeId, Phase, StorageSpec, TlsSpec},
    metrics::Metrics,
    nodes::{BackupBody, BackupTaken, HttpNodeAdmin, NodeAdmin, Rebuilt},
    resources::Names,
};
use futures::future::BoxFuture;
use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Container, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Secret},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::{Api, DeleteParams, Patch, PatchParams, PostParams},
    ResourceExt,
};
use serde_json::json;

#[path = "e2e_real_nodes/day_two.rs"]
mod day_two;
#[path = "e2e_real_nodes/s3_server.rs"]
mod s3_server;
#[path = "e2e_real_nodes/tls.rs"]
mod tls;

const NAMESPACE: &str = "e2e";
const NAME: &str = "cfx";

/// Addresses of the "pod" at each ordinal: stable across restarts, like a pod's DNS name.
#[derive(Default)]
struct Addresses {
    peer: BTreeMap<u32, SocketAddr>,
    client: BTreeMap<u32, SocketAddr>,
    /// Members speak TLS, so they are reached by their pods' DNS names ([`pod_hosts`]).
    tls: bool,
}

impl Addresses {
    /// How the listener at `addr` of the pod at `ordinal` is reached: `http://<addr>`, or with
    /// TLS `https://<pod DNS name>:<port>`, the name its certificate carries.
    fn url(&self, ordinal: u32, addr: SocketAddr) -> String {
        match self.tls {
            true => format!("https://{}:{}", pod_host(ordinal), addr.port()),
            false => format!("http://{addr}"),
        }
    }
}

/// The DNS name of the pod at `ordinal` (`<pod>.<name>-peers.<ns>.svc`).
/// The Conflux container of the StatefulSet's pod template.
fn node_container(statefulset: &StatefulSet) -> &Container {
    statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .expect("the StatefulSet has a container")
}

fn pod_host(ordinal: u32) -> String {
    format!("{NAME}-{ordinal}.{NAME}-peers.{NAMESPACE}.svc")
}

/// More pods than any test makes.
const MAX_PODS: u32 = 8;

/// The harness's DNS: every pod name it can make, at loopback (each pod has its own ports).
fn pod_hosts() -> Vec<HostAddress> {
    (0..MAX_PODS).map(|ordinal| HostAddress { host: pod_host(ordinal), ip: Ipv4Addr::LOCALHOST.into() }).collect()
}

/// [`NodeAdmin`] over real HTTP, with the ordinal ↔ address mapping a cluster's DNS would give.
struct LocalNodes {
    http: Arc<HttpNodeAdmin>,
    addresses: Arc<Mutex<Addresses>>,
}

impl LocalNodes {
    fn url(&self, ordinal: u32) -> String {
        let addresses = self.addresses.lock().expect("addresses");
        match addresses.peer.get(&ordinal) {
            Some(addr) => addresses.url(ordinal, *addr),
            None => "http://127.0.0.1:9".to_string(),
        }
    }
}

impl NodeAdmin for LocalNodes {
    fn trust(&self, names: &Names, ca_pem: Option<&str>) {
        self.http.trust(names, ca_pem)
    }
    fn status<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::ClusterStatus, ClientError>> {
        self.http.status(endpoint, token)
    }
    fn init<'a>(&'a self, endpoint: &'a str, token: &'a str) -> BoxFuture<'a, Result<wire::InitResult, ClientError>> {
        self.http.init(endpoint, token)
    }
    fn add_learner<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
        peer_url: &'a str,
    ) -> BoxFuture<'a, Result<wire::LearnerResult, ClientError>> {
        self.http.add_learner(endpoint, token, node_id, peer_url)
    }
    fn set_voters<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        voters: Vec<NodeId>,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        self.http.set_voters(endpoint, token, voters)
    }
    fn remove_member<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        node_id: NodeId,
    ) -> BoxFuture<'a, Result<wire::Membership, ClientError>> {
        self.http.remove_member(endpoint, token, node_id)
    }
    fn transfer_leader<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<wire::LeaderTransfer, ClientError>> {
        self.http.transfer_leader(endpoint, token)
    }
    fn backup<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        out: &'a mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> BoxFuture<'a, Result<BackupTaken, ClientError>> {
        self.http.backup(endpoint, token, out)
    }
    fn restore<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        body: BackupBody,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        self.http.restore(endpoint, token, body)
    }
    fn recover<'a>(
        &'a self,
        endpoint: &'a str,
        token: &'a str,
        cluster_id: &'a str,
    ) -> BoxFuture<'a, Result<Rebuilt, ClientError>> {
        self.http.recover(endpoint, token, cluster_id)
    }
    fn endpoint(&self, _names: &Names, ordinal: u32) -> String {
        self.url(ordinal)
    }
    fn peer_url(&self, _names: &Names, ordinal: u32) -> String {
        self.url(ordinal)
    }
    fn ordinal_of(&self, _names: &Names, peer_url: &str) -> Option<u32> {
        let addresses = self.addresses.lock().expect("addresses");
        addresses
            .peer
            .iter()
            .find(|(ordinal, addr)| addresses.url(**ordinal, **addr) == peer_url)
            .map(|(ordinal, _)| *ordinal)
    }
}

/// One running `conflux serve`.
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Harness {
    binary: PathBuf,
    root: tempfile::TempDir,
    client: kube::Client,
    context: Arc<Context>,
    addresses: Arc<Mutex<Addresses>>,
    processes: BTreeMap<u32, Process>,
    /// Each ordinal's data directory (its "volume"); a new one after the claim is deleted.
    volumes: BTreeMap<u32, PathBuf>,
    volume_serial: u32,
    /// Readiness probes: like the kubelet's, an https probe does not verify the certificate.
    http: reqwest::Client,
    /// Ordinals whose machine is down: their pods stay, their processes are not started.
    down: BTreeSet<u32>,
}

async fn create_cluster(client: &kube::Client, replicas: i32, tls: Option<TlsSpec>) {
    let clusters: Api<ConfluxCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let mut cluster = ConfluxCluster::new(
        NAME,
        ConfluxClusterSpec {
            replicas,
            image: "conflux".into(),
            version: "dev".into(),
            storage: StorageSpec { size: "1Gi".into(), ..StorageSpec::default() },
            tls,
            ..ConfluxClusterSpec::default()
        },
    );
    cluster.metadata.namespace = Some(NAMESPACE.into());
    clusters.create(&PostParams::default(), &cluster).await.expect("cluster created");
}

fn binary() -> PathBuf {
    let path = std::env::var_os("CONFLUX_BIN")
        .map(PathBuf::from)
        .expect("set CONFLUX_BIN to the node binary (cargo build --bin conflux at the repository root)");
    assert!(path.is_file(), "CONFLUX_BIN={} is not a file", path.display());
    path
}

impl Harness {
    async fn new(replicas: i32) -> Harness {
        Harness::with_tls(replicas, None).await
    }

    async fn with_tls(replicas: i32, tls: Option<TlsSpec>) -> Harness {
        let client = kube_fake_client::ClientBuilder::new()
            .with_resource::<ConfluxCluster>()
            .with_status_subresource::<ConfluxCluster>()
            .with_resource::<ConfluxBackup>()
            .with_status_subresource::<ConfluxBackup>()
            .build()
            .await
            .expect("fake client");
        let speaks_tls = tls.is_some();
        create_cluster(&client, replicas, tls).await;
        let addresses = Arc::new(Mutex::new(Addresses { tls: speaks_tls, ..Addresses::default() }));
        let nodes = Arc::new(LocalNodes { http: HttpNodeAdmin::resolving(pod_hosts()), addresses: addresses.clone() });
        let context = Arc::new(Context::new(client.clone(), nodes, Metrics::new().expect("metrics")));
        Harness {
            binary: binary(),
            root: tempfile::tempdir().expect("temp dir"),
            client,
            context,
            addresses,
            processes: BTreeMap::new(),
            volumes: BTreeMap::new(),
            volume_serial: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .danger_accept_invalid_certs(true)
                .build()
                .expect("http client"),
            down: BTreeSet::new(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    async fn cluster(&self) -> ConfluxCluster {
        self.api::<ConfluxCluster>().get(NAME).await.expect("cluster")
    }

    /// The cluster token and the bootstrap admin token from the operator's Secret.
    async fn tokens(&self) -> Option<(String, String)> {
        let secret = self.api::<Secret>().get_opt(&format!("{NAME}-token")).await.expect("get secret")?;
        let data = secret.data?;
        let value = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        Some((value("token")?, value("admin-token")?))
    }

    async fn statefulset_replicas(&self) -> u32 {
        let sts = self.api::<StatefulSet>().get_opt(NAME).await.expect("get sts");
        sts.and_then(|s| s.spec).and_then(|s| s.replicas).map_or(0, |r| u32::try_from(r).unwrap_or(0))
    }

    /// With TLS the pod advertises its peer URL, port included, from its first start on: its
    /// ports are picked before it starts.
    fn reserve_ports(&self, ordinal: u32) {
        let mut addresses = self.addresses.lock().expect("addresses");
        if !addresses.tls || addresses.peer.contains_key(&ordinal) {
            return;
        }
        let free = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address")
        };
        addresses.client.insert(ordinal, free());
        addresses.peer.insert(ordinal, free());
    }

    fn spawn(&mut self, ordinal: u32, (token, admin_token): &(String, String), statefulset: &StatefulSet) {
        let dir = self.volumes.get(&ordinal).expect("volume exists").clone();
        self.reserve_ports(ordinal);
        let (client, peer, tls) = {
            let addresses = self.addresses.lock().expect("addresses");
            let client = addresses.client.get(&ordinal).map_or("127.0.0.1:0".to_string(), |a| a.to_string());
            let peer = addresses.peer.get(&ordinal).map_or("127.0.0.1:0".to_string(), |a| a.to_string());
            (client, peer, addresses.tls)
        };
        let _ = std::fs::remove_file(dir.join("listen.json"));
        std::fs::create_dir_all(&dir).expect("data dir");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).expect("log");
        let mut command = Command::new(&self.binary);
        if tls {
            let peer_port = peer.rsplit(':').next().expect("a port").parse().expect("a port");
            command.envs(tls::pod_env(statefulset, ordinal, peer_port, &self.tls_dir()));
            let names: Vec<String> = pod_hosts().iter().map(|entry| format!("{}={}", entry.host, entry.ip)).collect();
            command.env("CONFLUX_PEER_RESOLVE", names.join(","));
        }
        let child = command
            .args(["serve", "--join", "--data-dir"])
            .arg(&dir)
            .args(["--listen", &client, "--peer-listen", &peer])
            .args(["--heartbeat-ms", "100", "--election-timeout-min-ms", "600", "--election-timeout-max-ms", "1200"])
            .env("CONFLUX_CLUSTER_TOKEN", token)
            .env("CONFLUX_ADMIN_TOKEN", admin_token)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting conflux serve");
        self.processes.insert(ordinal, Process { child });
        // Like a pod's DNS name, the address of an ordinal is fixed once it first started.
        let deadline = Instant::now() + Duration::from_secs(30);
        let listen = loop {
            if let Ok(text) = std::fs::read_to_string(dir.join("listen.json")) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                    break value;
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                panic!("node {ordinal} never started; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let parse = |key: &str| listen[key].as_str().and_then(|a| a.parse::<SocketAddr>().ok()).expect("address");
        let mut addresses = self.addresses.lock().expect("addresses");
        addresses.client.insert(ordinal, parse("client"));
        addresses.peer.insert(ordinal, parse("peer"));
    }

    fn new_volume(&mut self, ordinal: u32) {
        self.volume_serial += 1;
        let dir = self.root.path().join(format!("data-{ordinal}-{}", self.volume_serial));
        self.volumes.insert(ordinal, dir);
    }

    /// The pod's readiness probe, as the StatefulSet's template describes it.
    async fn ready(&self, ordinal: u32, statefulset: &StatefulSet) -> bool {
        let Some(addr) = self.addresses.lock().expect("addresses").client.get(&ordinal).copied() else {
            return false;
        };
        let probe = node_container(statefulset)
            .readiness_probe
            .as_ref()
            .and_then(|probe| probe.http_get.clone())
            .expect("the pods have an HTTP readiness probe");
        let scheme = probe.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = probe.path.as_deref().unwrap_or("/");
        match self.http.get(format!("{scheme}://{addr}{path}")).send().await {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    /// The StatefulSet controller and the kubelet, one pass. Without a StatefulSet (the cluster
    /// was deleted) its pods are deleted and their processes stop; volumes stay unless deleted.
    async fn kubelet(&mut self) {
        let Some(statefulset) = self.api::<StatefulSet>().get_opt(NAME).await.expect("get sts") else {
            self.processes.clear();
            for pod in self.api::<Pod>().list(&Default::default()).await.expect("pods").items {
                let _ = self.api::<Pod>().delete(&pod.name_any(), &DeleteParams::default()).await;
            }
            return;
        };
        let Some(tokens) = self.tokens().await else { return };
        // A pod whose Secret volume does not exist yet does not start.
        if self.addresses.lock().expect("addresses").tls && !self.mount_tls_secret().await {
            return;
        }
        let replicas = self.statefulset_replicas().await;
        let pods = self.api::<Pod>();
        let claims = self.api::<PersistentVolumeClaim>();
        let claim_names: BTreeSet<String> =
            claims.list(&Default::default()).await.expect("claims").items.iter().map(|c| c.name_any()).collect();
        // A deleted claim takes its data with it.
        let ordinals: Vec<u32> = self.volumes.keys().copied().collect();
        for ordinal in ordinals {
            if !claim_names.contains(&format!("data-{NAME}-{ordinal}")) {
                self.processes.remove(&ordinal);
                if let Some(dir) = self.volumes.remove(&ordinal) {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        let highest = self.processes.keys().max().map_or(0, |o| o + 1).max(replicas);
        for ordinal in 0..highest {
            let pod_name = format!("{NAME}-{ordinal}");
            if ordinal >= replicas {
                self.processes.remove(&ordinal);
                let _ = pods.delete(&pod_name, &DeleteParams::default()).await;
                continue;
            }
            if !self.volumes.contains_key(&ordinal) {
                self.new_volume(ordinal);
                let claim = PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(format!("data-{NAME}-{ordinal}")),
                        labels: Some(labels(NAME)),
                        ..ObjectMeta::default()
                    },
                    ..PersistentVolumeClaim::default()
                };
                let _ = claims.create(&PostParams::default(), &claim).await;
            }
            let pod = pods.get_opt(&pod_name).await.expect("get pod");
            if pod.is_none() {
                // A deleted pod is a restarted process.
                self.processes.remove(&ordinal);
            }
            if !self.processes.contains_key(&ordinal) && !self.down.contains(&ordinal) {
                self.spawn(ordinal, &tokens, &statefulset);
            }
            let ready = if self.ready(ordinal, &statefulset).await { "True" } else { "False" };
            let status = PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..PodStatus::default()
            };
            match pod {
                None => {
                    let pod = Pod {
                        metadata: ObjectMeta {
                            name: Some(pod_name),
                            labels: Some(labels(NAME)),
                            ..ObjectMeta::default()
                        },
                        status: Some(status),
                        ..Pod::default()
                    };
                    pods.create(&PostParams::default(), &pod).await.expect("pod created");
                }
                Some(_) => {
                    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(json!({ "status": status })))
                        .await
                        .expect("pod status");
                }
            }
        }
    }

    /// Drives reconcile + kubelet until the cluster reports `replicas` voters and nothing to do.
    async fn converge(&mut self, replicas: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let cluster = Arc::new(self.cluster().await);
            if let Err(error) = reconcile(cluster, self.context.clone()).await {
                eprintln!("{what}: reconcile failed (retried): {error}");
            }
            self.kubelet().await;
            let cluster = self.cluster().await;
            let status = cluster.status.clone().unwrap_or_default();
            let progressing = status.conditions.iter().any(|c| c.type_ == "Progressing" && c.status == "True");
            if status.voters.len() == replicas
                && status.learners.is_empty()
                && status.phase == Some(Phase::Running)
                && !progressing
                && self.statefulset_replicas().await as usize == replicas
            {
                return;
            }
            if Instant::now() > deadline {
                for (ordinal, dir) in &self.volumes {
                    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- node {ordinal} log (last lines, newest first):\n{}", tail.join("\n"));
                }
                panic!("{what}: did not converge; status {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Kills the leader's process and deletes its pod, then reconciles while it is gone: a
    /// vanished pod is never a reason to change membership. It then comes back on its volume,
    /// and leadership has usually moved, so later scale-downs remove a leader last.
    async fn leader_pod_dies_and_nothing_changes_membership(&mut self, voters: &BTreeSet<NodeId>) {
        let leader = self.cluster().await.status.and_then(|s| s.leader).expect("a leader pod");
        let ordinal: u32 = leader.trim_start_matches(&format!("{NAME}-")).parse().expect("ordinal");
        self.processes.remove(&ordinal);
        self.api::<Pod>().delete(&leader, &DeleteParams::default()).await.expect("delete pod");
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            if let Err(error) = reconcile(Arc::new(self.cluster().await), self.context.clone()).await {
                eprintln!("reconcile while {leader} is gone (retried): {error}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(self.statefulset_replicas().await, 5, "the StatefulSet keeps the dead pod's ordinal");
        assert_eq!(&self.voters_from_nodes().await, voters, "a dead pod changes no membership");
        self.converge(5, "the dead pod comes back").await;
        assert_eq!(&self.voters_from_nodes().await, voters);
        let now = self.cluster().await.status.and_then(|s| s.leader);
        eprintln!("leader was {leader}, now {now:?}");
    }

    /// The client API (configs, audit) of the pod at `ordinal`, called with `token`.
    fn api_client(&self, ordinal: u32, token: &str) -> Client {
        let addr = self.addresses.lock().expect("addresses").client[&ordinal];
        self.client_at(ordinal, addr, token)
    }

    /// The admin API (`/admin/status`, ...) of the pod at `ordinal`: it is served on the peer
    /// listener, not the client one.
    fn admin_api(&self, ordinal: u32, token: &str) -> Client {
        let addr = self.addresses.lock().expect("addresses").peer[&ordinal];
        self.client_at(ordinal, addr, token)
    }

    /// A client of the listener at `addr` of the pod at `ordinal`; with TLS it trusts only the
    /// cluster's CA, as read from the mounted Secret.
    fn client_at(&self, ordinal: u32, addr: SocketAddr, token: &str) -> Client {
        let addresses = self.addresses.lock().expect("addresses");
        let url = addresses.url(ordinal, addr);
        if !addresses.tls {
            return Client::new(&url, Some(token.to_string()));
        }
        let ca = std::fs::read(self.tls_dir().join(conflux_operator::tls::CA_CERT_KEY)).expect("the mounted CA");
        Client::with_ca_resolving(&url, Some(token.to_string()), &ca, &pod_hosts()).expect("a client trusting the CA")
    }

    /// The client APIs of the first `replicas` pods that have started.
    fn live_clients(&self, replicas: u32, token: &str) -> Vec<Client> {
        let ordinals: Vec<u32> = self.addresses.lock().expect("addresses").client.keys().copied().collect();
        ordinals.into_iter().take(replicas as usize).map(|ordinal| self.api_client(ordinal, token)).collect()
    }

    async fn scale(&self, replicas: i32) {
        self.api::<ConfluxCluster>()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "replicas": replicas } })))
            .await
            .expect("scale");
    }

    /// The voters every running node agrees on, read from the nodes themselves.
    async fn voters_from_nodes(&self) -> BTreeSet<NodeId> {
        let (_, token) = self.tokens().await.expect("tokens");
        let mut sets = BTreeSet::new();
        let ordinals: Vec<u32> = self.processes.keys().copied().collect();
        for ordinal in ordinals {
            if let Ok(status) = self.admin_api(ordinal, &token).status().await {
                sets.insert(status.voters.keys().copied().collect::<BTreeSet<NodeId>>());
            }
        }
        assert_eq!(sets.len(), 1, "running nodes disagree on the voters: {sets:?}");
        sets.into_iter().next().unwrap_or_default()
    }
}

/// Writes unique keys round-robin over the nodes it is given, remembering acknowledged ones.
struct Writer {
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<Client>>>,
    task: tokio::task::JoinHandle<(Vec<String>, Duration)>,
}

impl Writer {
    fn start(targets: Vec<Client>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(Mutex::new(targets));
        let (stop_flag, shared) = (stop.clone(), targets.clone());
        let task = tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut longest_gap = Duration::ZERO;
            let mut last_success = Instant::now();
            let mut sequence = 0u64;
            while !stop_flag.load(Ordering::Relaxed) {
                let client = {
                    let targets = shared.lock().expect("targets");
                    targets[(sequence as usize) % targets.len().max(1)].clone()
                };
                let key = format!("w{sequence}");
                let write = client.put(
                    ["e2e", "app", "prod", &key],
                    b"v".to_vec(),
                    PutOptions { format: Some("text"), if_match: None },
                );
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), write).await {
                    acknowledged.push(key);
                    longest_gap = longest_gap.max(last_success.elapsed());
                    last_success = Instant::now();
                }
                sequence += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acknowledged, longest_gap)
        });
        Writer { stop, targets, task }
    }

    fn retarget(&self, targets: Vec<Client>) {
        *self.targets.lock().expect("targets") = targets;
    }

    async fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("writer task")
    }
}

async fn assert_all_readable(client: &Client, keys: &[String]) {
    for key in keys {
        let found = client.get(["e2e", "app", "prod", key], false).await.expect("read");
        assert!(found.is_some(), "acknowledged write {key} is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_one_three_five_three_one_three_keeps_every_write_and_a_lost_disk_is_replaced() {
    let mut harness = Harness::new(1).await;
    harness.converge(1, "bootstrap").await;
    let (_, admin_token) = harness.tokens().await.expect("the operator created its Secret");
    let writer = Writer::start(harness.live_clients(1, &admin_token));

    for replicas in [3u32, 5, 3, 1, 3] {
        harness.scale(replicas as i32).await;
        // Writes go to the members that stay; new ones join as they come.
        let staying = replicas.min(harness.statefulset_replicas().await.max(1));
        writer.retarget(harness.live_clients(staying, &admin_token));
        harness.converge(replicas as usize, &format!("scale to {replicas}")).await;
        writer.retarget(harness.live_clients(replicas, &admin_token));
        let from_nodes = harness.voters_from_nodes().await;
        assert_eq!(from_nodes.len(), replicas as usize, "voters after scaling to {replicas}");
        let recorded: BTreeSet<NodeId> = harness.cluster().await.status.expect("status").voters.into_iter().collect();
        assert_eq!(recorded, from_nodes, "status.voters matches what the nodes report");
        if replicas == 5 {
            harness.leader_pod_dies_and_nothing_changes_membership(&from_nodes).await;
        }
    }

    // Kill pod 2's node and wipe its volume: it comes back empty, a new node id.
    let old_voters = harness.voters_from_nodes().await;
    harness.processes.remove(&2);
    if let Some(dir) = harness.volumes.get(&2) {
        std::fs::remove_dir_all(dir).expect("wipe data dir");
    }
    harness.api::<Pod>().delete(&format!("{NAME}-2"), &DeleteParams::default()).await.expect("delete pod");
    harness.converge(3, "replace the lost member").await;
    let new_voters = harness.voters_from_nodes().await;
    assert_eq!(new_voters.len(), 3);
    assert_eq!(old_voters.intersection(&new_voters).count(), 2, "exactly the lost member was replaced");
    let status = harness.cluster().await.status.expect("status");
    let replaced: Vec<&NodeId> = old_voters.difference(&new_voters).collect();
    assert!(status.removed_node_ids.contains(replaced[0]), "the lost id is tombstoned");

    let (acknowledged, longest_gap) = writer.finish().await;
    eprintln!("{} acknowledged writes; longest gap between acknowledged writes {longest_gap:?}", acknowledged.len());
    assert!(acknowledged.len() > 50, "the writer made progress: {}", acknowledged.len());
    // Elections take 0.6-1.2 s here (one follows the leader's death above); a stall past several
    // of them means quorum was lost.
    assert!(longest_gap < Duration::from_secs(10), "writes stalled for {longest_gap:?}: quorum was lost");
    assert_all_readable(&harness.api_client(0, &admin_token), &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cluster_keeps_its_volumes_and_comes_back_with_every_key_when_created_again() {
    let mut harness = Harness::new(3).await;
    harness.converge(3, "bootstrap").await;
    let (_, admin_token) = harness.tokens().await.expect("tokens");
    let writer = harness.api_client(0, &admin_token);
    let mut written = BTreeMap::new();
    for i in 0..300u32 {
        let key = format!("k{i}");
        // Some keys get a second version, so versions as well as contents must come back.
        for version in 0..=(i % 2) {
            let content = format!("value {i} v{version}").into_bytes();
            let result = writer
                .put(["e2e", "app", "prod", &key], content.clone(), PutOptions { format: Some("text"), if_match: None })
                .await
                .expect("write");
            written.insert(key.clone(), (content, result.version));
        }
    }
    let before = harness.cluster().await.status.expect("status");
    let voters = harness.voters_from_nodes().await;

    // kubectl delete: the owned objects go (the fake client cascades along owner references),
    // the nodes stop, the volumes stay.
    harness.api::<ConfluxCluster>().delete(NAME, &DeleteParams::background()).await.expect("deleted");
    harness.kubelet().await;
    assert!(harness.processes.is_empty(), "every node stopped");
    assert!(harness.tokens().await.is_none(), "the token Secret went with the cluster");
    let claims = harness.api::<PersistentVolumeClaim>().list(&Default::default()).await.expect("claims");
    assert_eq!(claims.items.len(), 3, "the volumes are kept");

    create_cluster(&harness.client, 3, None).await;
    harness.converge(3, "created again").await;
    let after = harness.cluster().await.status.expect("status");
    assert_eq!(after.cluster_id, before.cluster_id, "the same Raft cluster, adopted");
    assert_eq!(harness.voters_from_nodes().await, voters, "the same members");
    let (_, new_admin_token) = harness.tokens().await.expect("a new token Secret");
    let reader = harness.api_client(1, &new_admin_token);
    for (key, (content, version)) in &written {
        let found = reader.get(["e2e", "app", "prod", key], false).await.expect("read").expect("key is there");
        assert_eq!((&found.content, found.version), (content, *version), "{key}");
    }
    eprintln!("{} keys read back after delete and re-create", written.len());
}
