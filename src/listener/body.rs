//! The two body wrappers of a connection: [`TimedBody`], a request body that fails once the
//! body-read timeout passes before its end, and [`ResponseBody`], a response body that keeps its
//! connection marked busy until hyper has taken all of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::connection::InFlight;

/// The error a request body ends with when it was too slow.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body-read timeout")]
pub struct BodyReadTimeout;

/// A request body with a deadline, counted from the request's head.
pub(super) struct TimedBody {
    inner: Incoming,
    /// `None` for a body that is already complete (no body at all) or ended.
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, limit: Duration) -> TimedBody {
        let deadline = (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(limit)));
        TimedBody { inner, deadline, timed_out: Arc::new(AtomicBool::new(false)) }
    }

    /// Set once the body has failed for being too slow.
    pub(super) fn timed_out(&self) -> Arc<AtomicBool> {
        self.timed_out.clone()
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.deadline = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                this.deadline = None;
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body holding its request's place on the connection.
pub(super) struct ResponseBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl ResponseBody {
    pub(super) fn new(inner: axum::body::Body, in_flight: InFlight) -> ResponseBody {
        ResponseBody { inner, _in_flight: in_flight }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
