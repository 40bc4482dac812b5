//! Starting and stopping a node: opens the store, resolves the cluster token, builds Raft, binds
//! both listeners, bootstraps a single-node cluster when asked, and shuts everything down cleanly.
//! The binary and the tests start nodes only through [`start_node`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::shed::InflightLimits;
use crate::api::{self, ApiState};
use crate::config::NodeConfig;
use crate::listener::{self, PlainTcp};
use crate::metrics;
use crate::network::client::RaftNetworkClient;
use crate::network::{self, ClusterIdentity, PeerClient};
use crate::service::{Service, ServiceLimits, ServiceTimeouts};
use crate::store::Store;
use crate::types::typ;
use crate::watch::WatchHub;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("opening the data directory: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cluster token: {0}")]
    Token(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("bootstrapping the single-node cluster: {0}")]
    Bootstrap(crate::service::Error),
}

/// A running node.
pub struct NodeHandle {
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub service: Arc<Service>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

const TOKEN_FILE: &str = "cluster-token";
const LISTEN_FILE: &str = "listen.json";

/// Token from the file, else `CONFLUX_CLUSTER_TOKEN`, else (single-node mode only) the one kept
/// in the data directory, created on first start.
fn resolve_token(config: &NodeConfig) -> Result<String, StartError> {
    let token = if let Some(path) = &config.cluster_token_file {
        std::fs::read_to_string(path).map_err(|e| StartError::Token(format!("reading {}: {e}", path.display())))?
    } else if let Ok(token) = std::env::var("CONFLUX_CLUSTER_TOKEN") {
        token
    } else if config.join {
        return Err(StartError::Token(
            "cluster mode (--join) needs --cluster-token-file or CONFLUX_CLUSTER_TOKEN, the same on every member"
                .into(),
        ));
    } else {
        token_in_data_dir(&config.data_dir)?
    };
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err(StartError::Token("the token must be at least 16 characters".into()));
    }
    Ok(token)
}

fn token_in_data_dir(dir: &Path) -> Result<String, StartError> {
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
            write_private(&path, &token).map_err(|e| StartError::Token(format!("writing {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "created a cluster token");
            Ok(token)
        }
        Err(e) => Err(StartError::Token(format!("reading {}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    listener::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

/// Starts a node and returns once both listeners accept connections.
pub async fn start_node(config: NodeConfig) -> Result<NodeHandle, StartError> {
    let raft_config = Arc::new(config.raft_config()?);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Token(format!("creating {}: {e}", config.data_dir.display())))?;
    let token = resolve_token(&config)?;
    let store = Store::open(&config.data_dir)?;
    let identity = Arc::new(ClusterIdentity::load(store.clone(), token.clone())?);
    let node_id = identity.node_id();

    let client_listener = bind(config.listen).await?;
    let peer_listener = bind(config.peer_listen).await?;
    let client_addr =
        client_listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let peer_addr =
        peer_listener.local_addr().map_err(|source| StartError::Bind { addr: config.peer_listen, source })?;
    let advertise_peer = config.advertise_peer.clone().unwrap_or_else(|| format!("http://{peer_addr}"));

    let peers = PeerClient::new(token.into(), identity.clone());
    let storage = store.raft_storage();
    let committed_index = storage.log_store.committed_index();
    let raft = typ::Raft::new(
        node_id,
        raft_config,
        RaftNetworkClient::new(peers.clone()),
        storage.log_store,
        storage.state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let timeouts = ServiceTimeouts { request: config.request_timeout(), leader_wait: config.request_timeout() / 2 };
    let (stop, stopped) = watch::channel(false);
    let watchers = WatchHub::start(store.clone(), &raft, node_id, config.watch_limits(), stopped.clone());
    let overload = config.overload_limits();
    let limits = ServiceLimits { timeouts, write_queue: overload.write_queue() };
    let service = Service::new(raft.clone(), store, peers, limits, advertise_peer, committed_index, watchers);

    let state = ApiState { service: service.clone(), max_body_bytes: config.max_body_bytes };
    let peer_app = network::server::router(service.clone()).merge(api::admin_router(state.clone()));
    // Shedding wraps the whole client router; the peer listener (Raft, admin) is never shed.
    let shed = InflightLimits::new(&overload, config.max_body_bytes);
    let client_app = api::client_router(state).layer(axum::middleware::from_fn_with_state(shed, api::shed::limit));
    let tcp = Arc::new(PlainTcp);
    let servers = vec![
        listener::serve(client_listener, client_app, tcp.clone(), overload.client_listener(), stopped.clone()),
        listener::serve(peer_listener, peer_app, tcp, overload.peer_listener(), stopped.clone()),
        tokio::spawn(bridge_metrics(raft.clone(), stopped)),
    ];
    record_listen_addresses(&config.data_dir, client_addr, peer_addr);
    tracing::info!(node_id, %client_addr, %peer_addr, "conflux node started");

    let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
    if !config.join && !initialized {
        service.init().await.map_err(StartError::Bootstrap)?;
        tracing::info!(node_id, "bootstrapped a single-node cluster");
    }
    Ok(NodeHandle { client_addr, peer_addr, service, stop, servers })
}

/// Writes the bound addresses to `listen.json` so scripts and tests can find port-0 listeners.
fn record_listen_addresses(dir: &Path, client: SocketAddr, peer: SocketAddr) {
    let text = serde_json::json!({ "client": client.to_string(), "peer": peer.to_string() }).to_string();
    let tmp = dir.join(format!("{LISTEN_FILE}.tmp"));
    let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, dir.join(LISTEN_FILE)));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not record listen addresses");
    }
}

async fn bridge_metrics(raft: typ::Raft, mut stopped: watch::Receiver<bool>) {
    let mut updates = raft.metrics();
    let mut leader = None;
    loop {
        let current = updates.borrow_and_update().clone();
        metrics::global().observe_raft(&current, leader);
        leader = current.current_leader.or(leader);
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

impl NodeHandle {
    /// Stops accepting requests, lets in-flight ones finish, and shuts Raft down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        if let Err(e) = self.service.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        tracing::info!("conflux node stopped");
    }
}
