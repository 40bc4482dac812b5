//! Starting and stopping a node: opens the store, resolves the cluster token, builds Raft, binds
//! both listeners, bootstraps a single-node cluster when asked, and shuts everything down cleanly.
//! The binary and the tests start nodes only through [`start_node`].

use openraft::async_runtime::WatchReceiver;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::shed::InflightLimits;
use crate::api::{self, ApiState};
use crate::auth::Authenticator;
use crate::config::{AuthMode, NodeConfig};
use crate::listener::{self, ListenerLimits, PlainTcp};
use crate::metrics;
use crate::network::client::RaftNetworkClient;
use crate::network::{self, ClusterIdentity, PeerClient};
use crate::service::{Service, ServiceLimits, ServiceTimeouts};
use crate::store::Store;
use crate::tls::{self, TlsAcceptor};
use crate::types::typ;
use crate::watch::WatchHub;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("opening the data directory: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Token(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("bootstrapping the single-node cluster: {0}")]
    Bootstrap(crate::service::Error),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("this data directory belongs to node {existing}, not to node {requested} (--node-id)")]
    NodeId { existing: u64, requested: u64 },
}

/// A running node.
pub struct NodeHandle {
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub service: Arc<Service>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

const LISTEN_FILE: &str = "listen.json";
/// How long a leader shutting down tries to hand leadership over before it stops anyway.
const STEP_DOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);
/// Where a single node keeps the secrets it created (mode 0600).
pub const CLUSTER_TOKEN_FILE: &str = "cluster-token";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// A secret every member is given at start-up: the cluster token (proves a peer) or the bootstrap
/// admin token (the first cluster-wide admin).
struct Secret {
    what: &'static str,
    file: Option<PathBuf>,
    env: &'static str,
    /// Where a single node keeps the one it created when given none.
    generated: &'static str,
}

/// The secret from its file, else its environment variable, else (single-node mode only) the one
/// kept in the data directory, created on first start.
fn resolve_secret(config: &NodeConfig, secret: &Secret) -> Result<String, StartError> {
    let fail = |detail: String| StartError::Token(format!("{}: {detail}", secret.what));
    let value = if let Some(path) = &secret.file {
        std::fs::read_to_string(path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?
    } else if let Ok(value) = std::env::var(secret.env) {
        value
    } else if config.join {
        return Err(fail(format!(
            "cluster mode (--join) needs it from a file flag or {}, the same on every member",
            secret.env
        )));
    } else {
        secret_in_data_dir(&config.data_dir.join(secret.generated), secret.what).map_err(fail)?
    };
    let value = value.trim().to_string();
    if value.len() < 16 {
        return Err(fail("it must be at least 16 characters".into()));
    }
    Ok(value)
}

fn secret_in_data_dir(path: &Path, what: &str) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(value) => Ok(value),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
            write_private(path, &value).map_err(|e| format!("writing {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "created the {what}");
            Ok(value)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Who checks the credentials of client and admin requests.
fn authenticator(config: &NodeConfig, store: Store) -> Result<Authenticator, StartError> {
    if config.auth == AuthMode::Disabled {
        tracing::warn!(
            "ACCESS CONTROL IS DISABLED (--auth=disabled): anyone who can reach this node can read, change and \
             delete every configuration. Never run like this outside a laptop."
        );
        return Ok(Authenticator::disabled(store));
    }
    let admin = Secret {
        what: "admin token",
        file: config.admin_token_file.clone(),
        env: "CONFLUX_ADMIN_TOKEN",
        generated: ADMIN_TOKEN_FILE,
    };
    let bootstrap = resolve_secret(config, &admin)?;
    if config.admin_token_file.is_none() && std::env::var(admin.env).is_err() {
        tracing::info!(
            path = %config.data_dir.join(ADMIN_TOKEN_FILE).display(),
            "the bootstrap admin token is in this file: send it as Authorization: Bearer <token>, or run the CLI from this directory"
        );
    }
    Ok(Authenticator::enabled(store, Some(bootstrap)))
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
    let tls = config.tls_settings()?;
    let client_tls = tls.client.clone().map(TlsAcceptor::load).transpose()?;
    let peer_tls = tls.peer.as_ref().map(|files| TlsAcceptor::load(files.server())).transpose()?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError::Token(format!("creating {}: {e}", config.data_dir.display())))?;
    let cluster_token = Secret {
        what: "cluster token",
        file: config.cluster_token_file.clone(),
        env: "CONFLUX_CLUSTER_TOKEN",
        generated: CLUSTER_TOKEN_FILE,
    };
    let token = resolve_secret(&config, &cluster_token)?;
    let store = Store::open_as(&config.data_dir, config.node_id)?;
    if let Some(requested) = config.node_id {
        let existing = store.node_id()?;
        if existing != requested {
            return Err(StartError::NodeId { existing, requested });
        }
    }
    let auth = Arc::new(authenticator(&config, store.clone())?);
    let identity = Arc::new(ClusterIdentity::load(store.clone(), token.clone())?);
    let node_id = identity.node_id();

    let client_listener = bind(config.listen).await?;
    let peer_listener = bind(config.peer_listen).await?;
    let client_addr =
        client_listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let peer_addr =
        peer_listener.local_addr().map_err(|source| StartError::Bind { addr: config.peer_listen, source })?;
    let scheme = if peer_tls.is_some() { "https" } else { "http" };
    let advertise_peer = config.advertise_peer.clone().unwrap_or_else(|| format!("{scheme}://{peer_addr}"));

    let peers = PeerClient::new(
        token.into(),
        identity.clone(),
        config.peer_body_limit(),
        tls.peer.clone(),
        &config.peer_resolve,
    )?;
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
    let limits = ServiceLimits {
        timeouts,
        write_queue: overload.write_queue(),
        read_lease: config.read_lease(),
        leader_contact_within: config.election_timeout_max(),
    };
    let service = Service::new(raft.clone(), store, peers, limits, advertise_peer, committed_index, watchers);

    let state = ApiState {
        service: service.clone(),
        auth,
        max_body_bytes: config.max_body_bytes,
        max_snapshot_bytes: config.max_snapshot_bytes,
    };
    let limits = network::server::PeerLimits {
        body_bytes: config.peer_body_limit(),
        max_body_bytes: config.max_body_bytes,
        snapshot_bytes: config.max_snapshot_bytes,
    };
    let peer_app =
        network::server::router(service.clone(), limits, peer_tls.is_some()).merge(api::admin_router(state.clone()));
    // The client listener is shed past these bounds; the peer listener (Raft, admin) never is.
    let shed = InflightLimits::new(&overload, config.max_body_bytes);
    let client_app = api::client_router(state, shed);
    let mut servers = vec![
        serve(client_listener, client_app, client_tls.clone(), overload.client_listener(), stopped.clone()),
        serve(peer_listener, peer_app, peer_tls.clone(), overload.peer_listener(), stopped.clone()),
        tokio::spawn(bridge_metrics(raft.clone(), stopped.clone())),
    ];
    if let Some(acceptor) = client_tls {
        let paths = acceptor.files().paths();
        servers.push(tls::watch_files("client listener", paths, stopped.clone(), move || acceptor.reload()));
    } else {
        tracing::warn!(
            %client_addr,
            "the client listener speaks plain HTTP (no --tls-cert-file/--tls-key-file): tokens and configs cross the \
             network unencrypted"
        );
    }
    if let (Some(acceptor), Some(files)) = (peer_tls, &tls.peer) {
        let peers = service.peers.clone();
        let reload = move || acceptor.reload().and_then(|_| peers.reload_tls());
        servers.push(tls::watch_files("peer TLS", files.paths(), stopped, reload));
    } else {
        tracing::warn!(
            %peer_addr,
            "the peer listener speaks plain HTTP (no --peer-tls-*-file): Raft traffic and admin tokens cross the \
             network unencrypted, peers prove themselves by the cluster token alone"
        );
    }
    record_listen_addresses(&config.data_dir, client_addr, peer_addr);
    let read_policy = format!("{:?}", config.read_policy);
    tracing::info!(node_id, %client_addr, %peer_addr, client_tls = tls.client.is_some(), peer_tls = tls.peer.is_some(), read_policy, "conflux node started");

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

/// Serves `app` on `listener`, over TLS when `tls` is given.
fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<TlsAcceptor>>,
    limits: ListenerLimits,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    match tls {
        Some(acceptor) => listener::serve(listener, app, acceptor, limits, stopped),
        None => listener::serve(listener, app, Arc::new(PlainTcp), limits, stopped),
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
    /// Hands leadership over if this node leads, stops accepting requests, lets in-flight ones
    /// finish, and shuts Raft down.
    pub async fn shutdown(self) {
        // A leader hands over first, while its listeners still serve: writes pause for about a
        // round trip instead of an election timeout.
        self.service.step_down_before_shutdown(STEP_DOWN_WITHIN).await;
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
