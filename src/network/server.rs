//! The peer listener's node-to-node routes: Raft RPCs (append, vote, snapshot), writes and
//! read-index requests forwarded by followers, membership changes forwarded to the leader, each
//! node's watchers of a config (for the cluster-wide list), and a ping for health probes. Every call must pass [`ClusterIdentity`] checks first. Bodies are
//! bincode; no concurrency limit is applied here (Raft traffic must never queue behind clients).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use super::identity::IdentityError;
use super::{BINCODE, HEADER_CLUSTER_ID, HEADER_TARGET_NODE};
use crate::command::{Command, CommandResponse};
use crate::service::membership::{MembershipChange, MembershipOutcome, PATH_FORWARD_ADMIN, PATH_PING};
use crate::service::watchers::{WatchersQuery, PATH_WATCHERS};
use crate::service::{self, Service, PATH_FORWARD_WRITE, PATH_READ_INDEX};
use crate::types::{typ, NodeId};

/// Largest peer request body: a full AppendEntries batch or one snapshot chunk, with headroom.
pub const MAX_PEER_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Routes for node-to-node traffic, behind the identity check.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_FORWARD_WRITE, post(forwarded_write))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_FORWARD_ADMIN, post(forwarded_membership_change))
        .route(PATH_PING, post(ping))
        .route(PATH_WATCHERS, post(watchers))
        .layer(middleware::from_fn_with_state(service.clone(), check_identity))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PEER_BODY_BYTES))
        .with_state(service)
}

async fn check_identity(State(service): State<Arc<Service>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let identity = service.peers.identity();
    let checked = identity
        .check_token(text(header::AUTHORIZATION.as_str()))
        .and_then(|_| identity.check_peer_call(text(HEADER_TARGET_NODE), text(HEADER_CLUSTER_ID)));
    match checked {
        Ok(()) => next.run(request).await,
        Err(e) => {
            let status = match e {
                IdentityError::BadToken => StatusCode::UNAUTHORIZED,
                IdentityError::WrongNode { .. } => StatusCode::MISDIRECTED_REQUEST,
                IdentityError::WrongCluster { .. } | IdentityError::MissingCluster => StatusCode::CONFLICT,
                IdentityError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(error = %e, "refused peer call");
            (status, e.to_string()).into_response()
        }
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    bincode::deserialize(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("undecodable peer request: {e}")).into_response())
}

fn reply<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(bytes) => ([(header::CONTENT_TYPE, BINCODE)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding reply: {e}")).into_response(),
    }
}

async fn append(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    match decode::<typ::AppendEntriesRequest>(&body) {
        Ok(request) => reply(&service.raft.append_entries(request).await),
        Err(refusal) => refusal,
    }
}

async fn vote(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    match decode::<typ::VoteRequest>(&body) {
        Ok(request) => reply(&service.raft.vote(request).await),
        Err(refusal) => refusal,
    }
}

async fn snapshot(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    match decode::<typ::InstallSnapshotRequest>(&body) {
        Ok(request) => reply(&service.raft.install_snapshot(request).await),
        Err(refusal) => refusal,
    }
}

/// A follower's client write: applied here only if this node leads (never forwarded again).
async fn forwarded_write(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    let command: Command = match decode(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let result: Result<CommandResponse, service::Error> = service.write_as_leader(command).await;
    reply(&result)
}

async fn read_index(State(service): State<Arc<Service>>) -> Response {
    let result: Result<u64, service::Error> = if service.raft.current_leader().await == Some(service.node_id()) {
        service.read_index_as_leader().await
    } else {
        Err(service::Error::NoLeader)
    };
    reply(&result)
}

async fn forwarded_membership_change(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    let change: MembershipChange = match decode(&body) {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    let result: Result<MembershipOutcome, service::Error> = service.change_membership_as_leader(change).await;
    reply(&result)
}

/// This node's watchers of one config, for a member assembling the cluster-wide list.
async fn watchers(State(service): State<Arc<Service>>, body: Bytes) -> Response {
    match decode::<WatchersQuery>(&body) {
        Ok(query) => reply(&service.local_watchers(&query)),
        Err(refusal) => refusal,
    }
}

async fn ping(State(service): State<Arc<Service>>) -> Response {
    let id: NodeId = service.node_id();
    reply(&id)
}
