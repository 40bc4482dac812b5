//! The HTTP accept loop of both listeners (client and peer), in place of `axum::serve`: the
//! connection cap, the header-read, body-read and idle keep-alive timeouts, and graceful shutdown
//! (stop accepting, let in-flight requests finish, close idle connections). [`Handshake`] is the
//! seam where TLS will wrap each accepted TCP stream; everything after it is generic over the
//! stream.
//!
//! Past the cap a new connection is accepted and closed at once: the kernel's accept queue never
//! grows because this node is full, and a flood on one listener never takes the other's slots.

mod body;
mod connection;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::metrics;

/// How long shutdown waits for in-flight requests before it closes what is left.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The bounds of one listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// `client` or `peer`: names the listener in logs and metrics.
    pub name: &'static str,
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// A connection must deliver a complete request head within this long of when it starts
    /// sending it (or of being accepted, for its first request); else it is closed.
    pub header_read_timeout: Duration,
    /// A request's body must arrive completely within this long of its head; else the request
    /// fails with 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// A connection with no request in flight that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// Turns an accepted TCP connection into the stream HTTP is served on, and what its requests learn
/// about it (`axum::extract::ConnectInfo<Info>` in each request's extensions: the TLS listener puts
/// the client's certificate there). It runs on the connection's own task, bounded by the
/// header-read timeout.
pub trait Handshake: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Info: Clone + Send + Sync + 'static;
    fn handshake(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::Stream, Self::Info)>> + Send;
}

/// Plain TCP: the stream is the connection itself; requests learn the client's address.
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Stream = TcpStream;
    type Info = SocketAddr;
    async fn handshake(&self, tcp: TcpStream, remote: SocketAddr) -> io::Result<(TcpStream, SocketAddr)> {
        Ok((tcp, remote))
    }
}

/// Pending connections the kernel may queue before this node accepts them (Linux caps it at
/// `net.core.somaxconn`). Larger than tokio's 1024, so a burst of connects waits to be accepted
/// (and refused by the cap) instead of overflowing the queue, which leaves clients with resets.
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds a listening socket with [`ACCEPT_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Serves `app` on `listener` until `stopped` turns true; the task ends once the connections have
/// drained (or [`DRAIN_LIMIT`] passed).
pub fn serve<H: Handshake>(
    listener: TcpListener,
    app: axum::Router,
    handshake: Arc<H>,
    limits: ListenerLimits,
    stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // Turns every route into its final form once, not per connection.
    let app = app.with_state(());
    tokio::spawn(accept_loop(listener, app, handshake, Arc::new(limits), stopped))
}

fn count_closed(listener: &str, reason: &str) {
    metrics::global().listener_closed.with_label_values(&[listener, reason]).inc();
}

async fn accept_loop<H: Handshake>(
    listener: TcpListener,
    app: axum::Router,
    handshake: Arc<H>,
    limits: Arc<ListenerLimits>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let for_connections = stopped.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop_requested(&mut stopped) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(limits.name, e).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    count_closed(limits.name, "connection_cap");
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (app, handshake, limits, stopped) =
                    (app.clone(), handshake.clone(), limits.clone(), for_connections.clone());
                connections.spawn(async move {
                    connection::serve(tcp, remote, app, handshake, limits, stopped).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_LIMIT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(listener = limits.name, left = connections.len(), "closing connections still busy at shutdown");
        connections.shutdown().await;
    }
}

/// Returns once the node stops (the borrow of the flag ends here, not in the caller's select).
pub(crate) async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Errors about one connection are that connection's; anything else (out of file descriptors)
/// is waited out briefly instead of spinning.
async fn accept_failed(listener: &str, e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(listener, error = %e, "accept failed; pausing");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
