//! Load shedding on the client listener: a bound on the client API requests executing at once
//! and on the request body bytes they hold. Past either, a request is answered 503 `overloaded`
//! with `Retry-After` at once; nothing waits in a queue. `/healthz`, `/readyz` and `/metrics` are
//! exempt, and a long-poll watch gives its [`Slot`] back once it parks (parked watchers have their
//! own per-tenant quota). `intake` calls [`InflightLimits::admit`] on the client listener; the
//! peer listener (Raft, admin) is never shed.

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::problem::ApiError;
use crate::metrics;
use crate::overload::OverloadLimits;

/// Paths never shed: a saturated node must still say it is alive and be observable.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The two bounds, shared by every request on the client listener.
#[derive(Clone)]
pub struct InflightLimits {
    requests: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    max_requests: usize,
    max_body_bytes_in_flight: usize,
    max_body_bytes: usize,
}

impl InflightLimits {
    pub fn new(limits: &OverloadLimits, max_body_bytes: usize) -> InflightLimits {
        let permits = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        InflightLimits {
            requests: permits(limits.max_inflight_requests),
            body_bytes: permits(limits.max_inflight_body_bytes),
            max_requests: limits.max_inflight_requests,
            max_body_bytes_in_flight: limits.max_inflight_body_bytes,
            max_body_bytes,
        }
    }

    /// The body bytes a request will hold: its Content-Length, or the body limit when the length
    /// is not known in advance (chunked), capped so one request can always fit alone.
    fn body_charge(&self, headers: &HeaderMap) -> u32 {
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let charge = match length {
            Some(length) => usize::try_from(length).unwrap_or(usize::MAX).min(self.max_body_bytes),
            None if headers.contains_key(header::TRANSFER_ENCODING) => self.max_body_bytes,
            None => 0,
        };
        charge.min(self.max_body_bytes_in_flight).min(u32::MAX as usize) as u32
    }

    /// Admits a request if both bounds have room, putting its [`Slot`] in its extensions (exempt
    /// paths hold none); else the 503 to answer at once.
    pub fn admit(&self, request: &mut Request) -> Result<Option<Slot>, Response> {
        if EXEMPT.contains(&request.uri().path()) {
            return Ok(None);
        }
        let Ok(admitted) = self.requests.clone().try_acquire_owned() else {
            let detail =
                format!("this node is executing its limit of {} client requests; retry shortly", self.max_requests);
            return Err(overloaded("inflight_requests", detail));
        };
        let charge = self.body_charge(request.headers());
        let body_bytes = if charge == 0 {
            None
        } else {
            let Ok(bytes) = self.body_bytes.clone().try_acquire_many_owned(charge) else {
                let detail = format!(
                    "the requests this node is executing hold its limit of {} body bytes; retry shortly",
                    self.max_body_bytes_in_flight
                );
                return Err(overloaded("inflight_body_bytes", detail));
            };
            Some(bytes)
        };
        let slot = Slot(Arc::new(Mutex::new(Some(Held::new(admitted, body_bytes)))));
        request.extensions_mut().insert(slot.clone());
        Ok(Some(slot))
    }
}

/// What one executing request holds.
struct Held {
    _request: OwnedSemaphorePermit,
    _body_bytes: Option<OwnedSemaphorePermit>,
}

impl Held {
    fn new(request: OwnedSemaphorePermit, body_bytes: Option<OwnedSemaphorePermit>) -> Held {
        metrics::global().requests_inflight.inc();
        Held { _request: request, _body_bytes: body_bytes }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::global().requests_inflight.dec();
    }
}

/// A request's place among the executing ones, in its extensions; [`Slot::release`] gives it back
/// early (a watch that parks).
#[derive(Clone)]
pub struct Slot(Arc<Mutex<Option<Held>>>);

impl Slot {
    pub fn release(&self) {
        let held = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        drop(held);
    }
}

/// 503 `overloaded`, closing the connection: the body was not read, and a client must not send
/// its next request on a connection the node is closing.
fn overloaded(reason: &str, detail: String) -> Response {
    metrics::global().requests_shed.with_label_values(&[reason]).inc();
    let mut response = ApiError::Overloaded(detail).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
