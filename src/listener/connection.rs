//! One accepted connection: the handshake, HTTP/1.1 through hyper, and the clock that closes it
//! when a request head trickles in too slowly or the connection idles too long. hyper's own
//! header-read timer is not used: it restarts whenever a keep-alive connection waits for its next
//! request, so it cannot tell a slow head from an idle connection. Here a head's timer starts at
//! its first byte (at accept for the first request) and nothing runs while a request is in
//! flight, so long-polls and streams are never cut.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt;

use super::body::{ResponseBody, TimedBody};
use super::{count_closed, stop_requested, Handshake, ListenerLimits};
use crate::api::problem::ApiError;
use crate::metrics;

/// Serves one connection until the client closes it, a timeout closes it, or shutdown drains it.
pub(super) async fn serve<H: Handshake>(
    tcp: TcpStream,
    remote: SocketAddr,
    app: axum::Router,
    handshake: Arc<H>,
    limits: Arc<ListenerLimits>,
    mut stopped: watch::Receiver<bool>,
) {
    let open = metrics::global().listener_connections.with_label_values(&[limits.name]);
    open.inc();
    let _open = OpenGuard(open);
    let (stream, info) = match tokio::time::timeout(limits.header_read_timeout, handshake.handshake(tcp, remote)).await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::debug!(listener = limits.name, error = %e, "handshake failed");
            return;
        }
        Err(_) => return count_closed(limits.name, "handshake_timeout"),
    };
    let clock = Arc::new(Clock::new());
    let io = TokioIo::new(ObservedIo {
        inner: stream,
        clock: clock.clone(),
        linger_for: limits.header_read_timeout,
        linger: None,
    });
    let service = ConnectionService { app, clock: clock.clone(), limits: limits.clone(), info: ConnectInfo(info) };
    // No timer is given to hyper, so its own header-read timeout stays off; `Clock` does it.
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = clock.deadline(&limits);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(listener = limits.name, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = until(deadline) => {
                if let Some(reason) = clock.expired(&limits) {
                    return count_closed(limits.name, reason);
                }
            }
            _ = clock.changed.notified() => {}
            () = stop_requested(&mut stopped), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When this connection last had something to do: requests in flight, when it went idle, and
/// when the head it is now receiving started.
pub(super) struct Clock {
    state: Mutex<ClockState>,
    changed: Notify,
}

struct ClockState {
    in_flight: usize,
    idle_since: Instant,
    head_started: Option<Instant>,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        // The first request's head is due within the header-read timeout of the accept.
        let state = ClockState { in_flight: 0, idle_since: now, head_started: Some(now) };
        Clock { state: Mutex::new(state), changed: Notify::new() }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes arrived: on an idle connection they start the next request's head.
    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// A complete head arrived; the connection is busy until the returned guard drops (with the
    /// response body, once hyper has taken all of it).
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.head_started = None;
        drop(state);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn deadline(&self, limits: &ListenerLimits) -> Option<Instant> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => started + limits.header_read_timeout,
            None => state.idle_since + limits.idle_timeout,
        })
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: &ListenerLimits) -> Option<&'static str> {
        let due = self.deadline(limits)?;
        let reason = if self.state().head_started.is_some() { "header_timeout" } else { "idle_timeout" };
        (Instant::now() >= due).then_some(reason)
    }
}

/// One request in flight on a connection.
pub(super) struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
        }
        drop(state);
        self.0.changed.notify_one();
    }
}

/// The stream, telling the clock when bytes arrive, and closing like a lingering close: once
/// hyper shuts the connection down (after a response that left the request body unread, such as
/// a 503), the write side is shut and whatever the client still sends is read and dropped for up
/// to `linger_for` (the header-read timeout: a closing connection gets as long as a new one to
/// send its head), so the client reads the answer instead of a reset.
struct ObservedIo<S> {
    inner: S,
    clock: Arc<Clock>,
    linger_for: std::time::Duration,
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

thread_local! {
    /// Where lingering connections read what they drop: one buffer per worker thread, so a
    /// thousand closing connections cost no memory each and few read calls.
    static DISCARD: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; 64 * 1024].into_boxed_slice());
}

impl<S: AsyncRead + AsyncWrite + Unpin> ObservedIo<S> {
    /// Reads and drops until the client closes, fails, or the linger time is over.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let linger_for = self.linger_for;
        let linger = self.linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(linger_for)));
        if linger.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        DISCARD.with_borrow_mut(|scratch| loop {
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ObservedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        }
        this.poll_drain(cx).map(Ok)
    }
}

/// Hands each request to the router with a timed body, and keeps the connection marked busy
/// until its response is sent.
#[derive(Clone)]
struct ConnectionService<I> {
    app: axum::Router,
    clock: Arc<Clock>,
    limits: Arc<ListenerLimits>,
    /// Put into every request's extensions.
    info: ConnectInfo<I>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl<I: Clone + Send + Sync + 'static> hyper::service::Service<Request<Incoming>> for ConnectionService<I> {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let in_flight = self.clock.request_started();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(self.info.clone());
        let body = TimedBody::new(body, self.limits.body_read_timeout);
        let timed_out = body.timed_out();
        let request = Request::from_parts(parts, body);
        let (app, limits) = (self.app.clone(), self.limits.clone());
        Box::pin(async move {
            let Ok(mut response) = app.oneshot(request).await;
            if timed_out.load(Ordering::Relaxed) {
                count_closed(limits.name, "body_timeout");
                let millis = limits.body_read_timeout.as_millis() as u64;
                response = ApiError::BodyReadTimeout { millis }.into_response();
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response.map(|body| ResponseBody::new(body, in_flight)))
        })
    }
}
