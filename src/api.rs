//! HTTP routers: the client API (tenants, apps, envs, configs and their versions, schemas and
//! releases, resolve, watch, audit, metrics, health) on the client listener, and the admin
//! API on the peer listener behind the cluster token. Handlers live in the submodules; the only
//! status-code mapping is in `problem`.

pub mod admin;
pub mod audit;
pub mod configs;
pub mod convert;
pub mod hierarchy;
pub mod observe;
pub mod openapi;
pub mod problem;
pub mod releases;
pub mod request;
pub mod resolve;
pub mod shed;
pub mod watch;

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

/// The client listener: the configuration API, `/metrics`, `/healthz`, `/readyz`.
pub fn client_router(state: ApiState) -> Router {
    const CONFIG: &str = "/api/v1/configs/{tenant}/{app}/{env}/{name}";
    let config = |tail: &str| format!("{CONFIG}{tail}");
    Router::new()
        .route(CONFIG, get(configs::get).put(configs::put).delete(configs::delete))
        .route("/api/v1/configs/{tenant}/{app}/{env}", get(configs::list))
        .route(&config("/versions"), get(configs::versions).post(configs::create_version))
        .route(&config("/versions/{version}"), get(configs::version))
        .route(&config("/diff"), get(configs::diff))
        .route(&config("/schema"), get(configs::get_schema).put(configs::put_schema).delete(configs::delete_schema))
        .route(&config("/release"), get(releases::get).put(releases::put))
        .route(&config("/release/publish"), post(releases::publish))
        .route(&config("/release/rollback"), post(releases::rollback))
        .route(&config("/releases"), get(releases::history))
        .route(&config("/releases/{number}"), get(releases::one))
        .route(&config("/clients"), get(watch::clients))
        .route("/api/v1/watch", post(watch::long_poll))
        .route("/api/v1/watch/stream", post(watch::stream))
        .route("/api/v1/resolve/{tenant}/{app}/{env}/{name}", get(resolve::one))
        .route("/api/v1/resolve/{tenant}/{app}/{env}", post(resolve::many))
        .route("/api/v1/tenants", get(hierarchy::list_tenants))
        .route(
            "/api/v1/tenants/{tenant}",
            get(hierarchy::get_tenant).put(hierarchy::put_tenant).delete(hierarchy::delete_tenant),
        )
        .route("/api/v1/tenants/{tenant}/audit", get(audit::query))
        .route("/api/v1/tenants/{tenant}/apps", get(hierarchy::list_apps))
        .route(
            "/api/v1/tenants/{tenant}/apps/{app}",
            get(hierarchy::get_app).put(hierarchy::put_app).delete(hierarchy::delete_app),
        )
        .route("/api/v1/tenants/{tenant}/apps/{app}/envs", get(hierarchy::list_envs))
        .route(
            "/api/v1/tenants/{tenant}/apps/{app}/envs/{env}",
            get(hierarchy::get_env).put(hierarchy::put_env).delete(hierarchy::delete_env),
        )
        .route("/metrics", get(observe::metrics_text))
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/api/v1/openapi.json", get(openapi::document))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn(request::request_id))
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
