//! TLS for both listeners and mutual TLS between nodes (rustls, ring): the certificate, key and CA
//! files, read at start-up and read again when they change on disk (polled every
//! [`RELOAD_INTERVAL`]; a file that does not load keeps the previous settings), the acceptor a
//! listener hands each accepted connection to, and the identity a node certificate proves.
//!
//! A node certificate names its node with the DNS subject alternative name `node-<id>.conflux`
//! ([`node_name`]), or names the host of the peer URL the node advertises (what an operator that
//! issues certificates before node ids exist can do); on the peer listener the verified client certificate of a connection travels
//! with each of its requests as `ConnectInfo<TlsConnection>`, and the Raft routes check it against
//! the node the call claims to come from (`network::server`).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::types::NodeId;

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("building the TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("building the client certificate verifier: {0}")]
    Verifier(String),
    #[error("building the peer HTTP client: {0}")]
    PeerClient(String),
}

/// The files one listener serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, client certificates signed by a CA in this file are verified (and those signed
    /// by another CA refused during the handshake). A connection without one is still accepted:
    /// the routes that need a certificate (Raft) check for it, the admin API needs only a token.
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    pub fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()].into_iter().flatten().cloned().collect()
    }
}

/// The files of peer TLS: this node's certificate (served on the peer listener and presented on
/// outbound peer calls) and the CA peers' certificates must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl PeerFiles {
    pub fn server(&self) -> ServerFiles {
        ServerFiles { cert: self.cert.clone(), key: self.key.clone(), client_ca: Some(self.ca.clone()) }
    }

    /// The identity and trust of outbound peer calls, added to `builder`.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        let invalid = |path: &Path, e: &dyn std::fmt::Display| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // Parsed here first, so a broken file is named (reqwest's errors do not say which).
        certificates(&self.cert)?;
        private_key(&self.key)?;
        let mut pem = read(&self.cert)?;
        pem.push(b'\n');
        pem.extend(read(&self.key)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| invalid(&self.cert, &e))?;
        let ca = read(&self.ca)?;
        certificates(&self.ca)?;
        let builder = crate::client::trusting(builder, &ca).map_err(|e| invalid(&self.ca, &e))?;
        Ok(builder.identity(identity))
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert.clone(), self.key.clone(), self.ca.clone()]
    }
}

/// The DNS name a node certificate carries for node `id`: `node-<id>.conflux`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}.conflux")
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every PEM certificate in `path`; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid { path: path.to_path_buf(), reason };
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|e| TlsError::Invalid { path: path.to_path_buf(), reason: format!("no PEM private key: {e}") })
}

/// A rustls server configuration from `files` (TLS 1.2 and 1.3, HTTP/1.1).
pub fn server_config(files: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    path: ca.clone(),
                    reason: format!("not a CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certificates(&files.cert)?, private_key(&files.key)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener's TLS: the current server configuration, replaced when its files change.
pub struct TlsAcceptor {
    files: ServerFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsAcceptor {
    pub fn load(files: ServerFiles) -> Result<Arc<TlsAcceptor>, TlsError> {
        let current = RwLock::new(server_config(&files)?);
        Ok(Arc::new(TlsAcceptor { files, current }))
    }

    pub fn files(&self) -> &ServerFiles {
        &self.files
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again; on failure the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// The TLS handshake on an accepted connection, with the current configuration.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        tokio_rustls::TlsAcceptor::from(self.current()).accept(tcp).await
    }
}

/// The verified leaf certificate a peer presented (the chain was checked against the peer CA
/// during the handshake).
#[derive(Debug, Clone)]
pub struct PeerCertificate(Arc<CertificateDer<'static>>);

impl PeerCertificate {
    /// The client certificate of a server-side TLS connection, if it presented one.
    pub fn of(stream: &TlsStream<TcpStream>) -> Option<PeerCertificate> {
        let leaf = stream.get_ref().1.peer_certificates()?.first()?;
        Some(PeerCertificate(Arc::new(leaf.clone().into_owned())))
    }

    /// Whether the certificate names node `id` (DNS SAN [`node_name`]).
    pub fn names_node(&self, id: NodeId) -> bool {
        self.names_host(&node_name(id))
    }

    /// Whether the certificate is valid for `host`, a DNS name (SAN DNS) or an IP address (SAN IP).
    pub fn names_host(&self, host: &str) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&*self.0) else {
            return false;
        };
        match ServerName::try_from(host) {
            Ok(name) => cert.verify_is_valid_for_subject_name(&name).is_ok(),
            Err(_) => false,
        }
    }

    /// A certificate from its DER bytes, for tests of the identity rules.
    #[cfg(test)]
    pub fn from_der(der: Vec<u8>) -> PeerCertificate {
        PeerCertificate(Arc::new(CertificateDer::from(der)))
    }
}

/// What a TLS listener knows of a connection, in every request's extensions as
/// `axum::extract::ConnectInfo<TlsConnection>`.
#[derive(Debug, Clone)]
pub struct TlsConnection {
    pub remote: SocketAddr,
    pub peer_certificate: Option<PeerCertificate>,
}

/// Calls `reload` whenever one of `paths` changes (modification time, size or inode), checked
/// every [`RELOAD_INTERVAL`] until `stopped`. `what` names the settings in logs.
pub fn watch_files<F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    mut stopped: watch::Receiver<bool>,
    reload: F,
) -> JoinHandle<()>
where
    F: Fn() -> Result<(), TlsError> + Send + 'static,
{
    tokio::spawn(async move {
        let mut seen = stamps(&paths);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
                () = stop_requested(&mut stopped) => return,
            }
            let now = stamps(&paths);
            if now == seen {
                continue;
            }
            seen = now;
            match reload() {
                Ok(()) => tracing::info!(what, "TLS files changed: new connections use them"),
                Err(e) => {
                    tracing::error!(what, error = %e, "TLS files changed but do not load; keeping the previous ones")
                }
            }
        }
    })
}

/// Returns once the node stops (the borrow of the flag ends here, not in the caller's select).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((meta.modified().ok()?, meta.len(), inode))
        })
        .collect()
}

/// The TLS handshake of the listeners' accept loop: requests of the connection carry its
/// [`TlsConnection`] (with the client's certificate, if it presented one).
impl crate::listener::Handshake for TlsAcceptor {
    type Stream = TlsStream<TcpStream>;
    type Info = TlsConnection;

    async fn handshake(&self, tcp: TcpStream, remote: SocketAddr) -> io::Result<(Self::Stream, TlsConnection)> {
        let stream = self.accept(tcp).await?;
        let peer_certificate = PeerCertificate::of(&stream);
        Ok((stream, TlsConnection { remote, peer_certificate }))
    }
}
