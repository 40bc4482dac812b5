//! HTTP routers: the client API (tenants, apps, envs, configs and their versions, schemas and
//! releases, resolve, watch, audit, tokens, metrics, health) on the client listener, and the admin
//! API on the peer listener. Every route is registered with its access rule (`access::Access`),
//! so a route without one cannot exist; [`client_routes`] and [`admin_routes`] are that table.
//! Handlers live in the submodules; the only status-code mapping is in `problem`.

pub mod access;
pub mod admin;
pub mod audit;
pub mod backup;
pub mod configs;
pub mod convert;
pub mod hierarchy;
pub mod intake;
pub mod observe;
pub mod openapi;
pub mod problem;
pub mod releases;
pub mod request;
pub mod resolve;
pub mod shed;
pub mod tokens;
pub mod watch;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

use crate::auth::Authenticator;
use crate::model::access::Action::{Manage, Read, Release, Resolve, Write};
use crate::service::Service;
use access::Access::{self, Cluster, Handler, Open, Path};
use problem::ApiError;
use shed::InflightLimits;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<Service>,
    pub auth: Arc<Authenticator>,
    pub max_body_bytes: usize,
    /// The largest backup a restore accepts (`--max-snapshot-bytes`).
    pub max_snapshot_bytes: u64,
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One route: path, method, who may call it, and its handler.
pub struct Route {
    pub path: String,
    pub method: Method,
    pub access: Access,
    handler: MethodRouter<ApiState>,
}

fn route(path: &str, method: Method, access: Access, handler: MethodRouter<ApiState>) -> Route {
    Route { path: path.to_string(), method, access, handler }
}

/// Every route of the client listener.
pub fn client_routes() -> Vec<Route> {
    use Method as M;
    const CONFIG: &str = "/api/v1/configs/{tenant}/{app}/{env}/{name}";
    let config = |tail: &str| format!("{CONFIG}{tail}");
    let tenant = "/api/v1/tenants/{tenant}";
    let app = "/api/v1/tenants/{tenant}/apps/{app}";
    let env = "/api/v1/tenants/{tenant}/apps/{app}/envs/{env}";
    vec![
        route(CONFIG, M::GET, Path(Read), get(configs::get)),
        route(CONFIG, M::PUT, Path(Write), put(configs::put)),
        route(CONFIG, M::DELETE, Path(Write), delete(configs::delete)),
        route("/api/v1/configs/{tenant}/{app}/{env}", M::GET, Path(Read), get(configs::list)),
        route(&config("/versions"), M::GET, Path(Read), get(configs::versions)),
        route(&config("/versions"), M::POST, Path(Write), post(configs::create_version)),
        route(&config("/versions/{version}"), M::GET, Path(Read), get(configs::version)),
        route(&config("/diff"), M::GET, Path(Read), get(configs::diff)),
        route(&config("/schema"), M::GET, Path(Read), get(configs::get_schema)),
        route(&config("/schema"), M::PUT, Path(Write), put(configs::put_schema)),
        route(&config("/schema"), M::DELETE, Path(Write), delete(configs::delete_schema)),
        route(&config("/release"), M::GET, Path(Read), get(releases::get)),
        route(&config("/release"), M::PUT, Path(Release), put(releases::put)),
        route(&config("/release/publish"), M::POST, Path(Release), post(releases::publish)),
        route(&config("/release/rollback"), M::POST, Path(Release), post(releases::rollback)),
        route(&config("/releases"), M::GET, Path(Read), get(releases::history)),
        route(&config("/releases/{number}"), M::GET, Path(Read), get(releases::one)),
        route(&config("/clients"), M::GET, Path(Read), get(watch::clients)),
        route("/api/v1/watch", M::POST, Handler(Resolve), post(watch::long_poll)),
        route("/api/v1/watch/stream", M::POST, Handler(Resolve), post(watch::stream)),
        route("/api/v1/resolve/{tenant}/{app}/{env}/{name}", M::GET, Path(Resolve), get(resolve::one)),
        route("/api/v1/resolve/{tenant}/{app}/{env}", M::POST, Path(Resolve), post(resolve::many)),
        route("/api/v1/tenants", M::GET, Cluster(Read), get(hierarchy::list_tenants)),
        route(tenant, M::GET, Path(Read), get(hierarchy::get_tenant)),
        route(tenant, M::PUT, Cluster(Manage), put(hierarchy::put_tenant)),
        route(tenant, M::DELETE, Cluster(Manage), delete(hierarchy::delete_tenant)),
        route("/api/v1/tenants/{tenant}/audit", M::GET, Path(Read), get(audit::query)),
        route("/api/v1/tenants/{tenant}/apps", M::GET, Path(Read), get(hierarchy::list_apps)),
        route(app, M::GET, Path(Read), get(hierarchy::get_app)),
        route(app, M::PUT, Path(Manage), put(hierarchy::put_app)),
        route(app, M::DELETE, Path(Manage), delete(hierarchy::delete_app)),
        route("/api/v1/tenants/{tenant}/apps/{app}/envs", M::GET, Path(Read), get(hierarchy::list_envs)),
        route(env, M::GET, Path(Read), get(hierarchy::get_env)),
        route(env, M::PUT, Path(Manage), put(hierarchy::put_env)),
        route(env, M::DELETE, Path(Manage), delete(hierarchy::delete_env)),
        route("/api/v1/tokens", M::POST, Handler(Manage), post(tokens::create)),
        route("/api/v1/tokens", M::GET, Handler(Manage), get(tokens::list)),
        route("/api/v1/tokens/{id}", M::GET, Handler(Manage), get(tokens::get)),
        route("/api/v1/tokens/{id}", M::DELETE, Handler(Manage), delete(tokens::revoke)),
        route("/api/v1/whoami", M::GET, Handler(Resolve), get(tokens::whoami)),
        route("/metrics", M::GET, Cluster(Read), get(observe::metrics_text)),
        route("/healthz", M::GET, Open, get(observe::healthz)),
        route("/readyz", M::GET, Open, get(observe::readyz)),
        route("/api/v1/openapi.json", M::GET, Open, get(openapi::document)),
    ]
}

/// Every route of the admin API (on the peer listener): cluster-wide admin tokens only. The
/// cluster token that proves a peer is not accepted here.
pub fn admin_routes() -> Vec<Route> {
    use Method as M;
    vec![
        route("/admin/status", M::GET, Cluster(Manage), get(admin::status)),
        route("/admin/init", M::POST, Cluster(Manage), post(admin::init)),
        route("/admin/learners", M::POST, Cluster(Manage), post(admin::add_learner)),
        route("/admin/voters", M::PUT, Cluster(Manage), put(admin::set_voters)),
        route("/admin/members/{id}", M::DELETE, Cluster(Manage), delete(admin::remove_member)),
        route("/admin/leader", M::POST, Cluster(Manage), post(admin::transfer_leader)),
        route("/admin/backup", M::GET, Cluster(Manage), get(backup::backup)),
        route("/admin/restore", M::POST, Cluster(Manage), post(backup::restore)),
        route("/admin/recover", M::POST, Cluster(Manage), post(backup::recover)),
    ]
}

/// The routes, each behind the middleware enforcing its rule, methods of one path merged.
fn guarded(state: &ApiState, routes: Vec<Route>) -> Router<ApiState> {
    let mut paths: Vec<(String, MethodRouter<ApiState>)> = Vec::new();
    for route in routes {
        let guard = access::Guard { state: state.clone(), access: route.access };
        let handler = route.handler.route_layer(middleware::from_fn_with_state(guard, access::enforce));
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(handler),
            None => paths.push((route.path, handler)),
        }
    }
    paths.into_iter().fold(Router::new(), |router, (path, methods)| router.route(&path, methods))
}

/// The client listener: the configuration API, tokens, `/metrics`, `/healthz`, `/readyz`; shed
/// past `limits`.
pub fn client_router(state: ApiState, limits: InflightLimits) -> Router {
    guarded(&state, client_routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(limits, intake::client))
        .with_state(state)
}

/// The admin API, mounted on the peer listener.
pub fn admin_router(state: ApiState) -> Router {
    guarded(&state, admin_routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(intake::admin))
        .with_state(state)
}
