//! HTTP routers: the client API (configs, metrics, health) on the client listener, and the admin
//! API on the peer listener behind the cluster token. Handlers live in the submodules; the only
//! status-code mapping is in `problem`.

pub mod admin;
pub mod configs;
pub mod observe;
pub mod problem;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::service::Service;
use problem::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<Service>,
    pub max_body_bytes: usize,
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The client listener: configs, `/metrics`, `/healthz`, `/readyz`.
pub fn client_router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/api/v1/configs/{tenant}/{app}/{env}/{name}",
            get(configs::get).put(configs::put).delete(configs::delete),
        )
        .route("/api/v1/configs/{tenant}/{app}/{env}", get(configs::list))
        .route("/metrics", get(observe::metrics_text))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn(observe::record_request))
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.service.peers.identity().check_token(presented) {
        Ok(()) => next.run(request).await,
        Err(_) => ApiError::Unauthorized.into_response(),
    }
}

/// The admin API, mounted on the peer listener.
pub fn admin_router(state: ApiState) -> Router {
    Router::new()
        .route("/admin/status", get(admin::status))
        .route("/admin/init", post(admin::init))
        .route("/admin/learners", post(admin::add_learner))
        .route("/admin/voters", put(admin::set_voters))
        .route("/admin/members/{id}", delete(admin::remove_member))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(observe::record_request))
        .with_state(state)
}
