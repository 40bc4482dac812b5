//! Observability endpoints: `/metrics`, `/healthz`, `/readyz`; and [`RequestTimer`], the request
//! counter and latency histogram `intake` records for every route.

use openraft::async_runtime::WatchReceiver;
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use super::ApiState;
use crate::metrics;

/// How far applied may trail committed for the node to call itself ready.
const READY_APPLY_LAG: u64 = 1000;

/// A request's count and latency in the metrics, by matched route and status.
pub struct RequestTimer {
    started: Instant,
}

impl RequestTimer {
    pub fn start() -> RequestTimer {
        RequestTimer { started: Instant::now() }
    }

    /// Counts the request under its matched route (or `unmatched`) and the response's status.
    pub fn record(self, route: Option<&MatchedPath>, response: &Response) {
        let route = route.map_or("unmatched", MatchedPath::as_str);
        let status = response.status();
        let labels = [route, status.as_str()];
        let m = metrics::global();
        m.http_requests.with_label_values(&labels).inc();
        m.http_request_duration.with_label_values(&labels).observe(self.started.elapsed().as_secs_f64());
    }
}

pub async fn metrics_text(State(state): State<ApiState>) -> Response {
    let m = metrics::global();
    m.storage_size_bytes.set(state.service.store.size_bytes() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
}

/// Liveness: fails once Raft has stopped on a fatal error (a storage failure such as a full disk),
/// after which this process can never serve writes again, so that it is restarted.
pub async fn healthz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    let running = state.service.raft.metrics().borrow_watched().running_state.clone();
    match running {
        Ok(()) => Ok("ok\n"),
        Err(fatal) => {
            tracing::error!(error = %fatal, "raft has stopped; liveness fails so the node is restarted");
            Err(ApiError::Unavailable {
                code: "node_stopped",
                detail: "raft stopped after a fatal error (see the node's log); restart the node".into(),
            })
        }
    }
}

/// Ready when this node is a member of a cluster that has a leader, it leads or the leader's
/// replication caught it up within the last election timeout (see `service/leader_contact.rs`),
/// and its state machine is within reach of the committed index.
pub async fn readyz(State(state): State<ApiState>) -> Result<&'static str, ApiError> {
    let m = state.service.raft.metrics().borrow_watched().clone();
    let not_ready = |why: &str| ApiError::Unavailable { code: "node_stopped", detail: format!("not ready: {why}") };
    if m.running_state.is_err() {
        return Err(not_ready("raft stopped after a fatal error (see the node's log)"));
    }
    if m.membership_config.membership().get_node(&m.id).is_none() {
        return Err(not_ready("not a member of a cluster"));
    }
    let Some(leader) = m.current_leader else {
        return Err(not_ready("no leader known"));
    };
    if leader != m.id && !state.service.leader_contact.is_fresh() {
        return Err(not_ready("the leader's replication has not caught this node up lately"));
    }
    let applied = m.last_applied.map_or(0, |l| l.index);
    let committed = state.service.committed_index();
    if committed.saturating_sub(applied) > READY_APPLY_LAG {
        return Err(not_ready(&format!("applied index {applied} trails committed {committed}")));
    }
    Ok("ready\n")
}
