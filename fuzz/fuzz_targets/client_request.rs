//! Fuzz target `client_request`: what the client API reads from a request besides its body. A
//! small axum router in-process (no sockets) with the same extractors as the real handlers
//! (`ConfigPath`, `EnvPath`, a numbered path, `Params`, the header map) feeds
//! `api::request`'s parsers (pagination and its cursors, flags, numbers, `If-Match`,
//! `If-None-Match`, labels and client id); every refusal is mapped by `api::problem` and must be
//! a 4xx, never a 5xx. Beside the router: access scopes and roles, token ids and new-token
//! checks, API token parsing (`auth::parse_api_token`), name segments and label parsing.
//!
//! The input is lines: the request target (path and query), `If-Match`, `If-None-Match`, then
//! free text for the parsers beside the router.

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use conflux::api::problem::ApiError;
use conflux::api::request::{self, ConfigPath, EnvPath, Params};
use conflux::auth;
use conflux::model::access::{self, Role, Scope};
use conflux::model::{check_segment, release};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Maps every refusal as the API does; bad input must never answer 5xx.
fn refused<T>(result: Result<T, ApiError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let status = e.into_response().status();
            assert!(status.is_client_error(), "bad input answered {status}");
            None
        }
    }
}

/// What handlers read from the query and headers, each parser on its own.
fn query_and_headers(params: Params, headers: &HeaderMap) {
    if let Some(params) = refused(request::query(params)) {
        if let Some(page) = refused(request::pagination(&params)) {
            assert!((1..=request::MAX_LIMIT).contains(&page.limit));
            refused(page.number());
            refused(page.name());
            refused(page.audit_position());
        }
        refused(request::flag(&params, "dry_run"));
        refused(request::number(&params, "min_revision"));
        if let Some((labels, _)) = refused(request::client_identity(&params)) {
            assert!(labels.len() <= release::MAX_LABELS);
        }
    }
    refused(request::if_match_version(headers));
    refused(request::if_match_release(headers));
    let _ = request::if_none_match(headers, "\"3\"");
}

async fn config(path: ConfigPath, params: Params, headers: HeaderMap) -> StatusCode {
    refused(request::config_key(path));
    query_and_headers(params, &headers);
    StatusCode::NO_CONTENT
}

async fn env(path: EnvPath, params: Params, headers: HeaderMap) -> StatusCode {
    refused(request::namespace(path));
    query_and_headers(params, &headers);
    StatusCode::NO_CONTENT
}

async fn version(path: Result<Path<(String, String, String, String, u64)>, PathRejection>) -> StatusCode {
    refused(request::numbered(path));
    StatusCode::NO_CONTENT
}

fn router() -> Router {
    Router::new()
        .route("/api/v1/configs/{tenant}/{app}/{env}/{name}", get(config))
        .route("/api/v1/configs/{tenant}/{app}/{env}/{name}/versions/{version}", get(version))
        .route("/api/v1/tenants/{tenant}/apps/{app}/envs/{env}", get(env))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

fn through_router(target: &[u8], if_match: &[u8], if_none_match: &[u8]) {
    let mut builder = Request::builder().uri(target);
    if let Ok(value) = HeaderValue::from_bytes(if_match) {
        builder = builder.header(header::IF_MATCH, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(if_none_match) {
        builder = builder.header(header::IF_NONE_MATCH, value);
    }
    let Ok(request) = builder.body(Body::empty()) else { return };
    let response = runtime().block_on(router().oneshot(request)).expect("the router is infallible");
    assert!(!response.status().is_server_error(), "bad input answered {}", response.status());
}

/// The parsers the token, access and release APIs use on names and query values.
fn beside_the_router(text: &str) {
    if let Ok(scope) = Scope::parse(text) {
        assert_eq!(Scope::parse(&scope.to_string()), Ok(scope.clone()), "a scope reads back as itself");
        let _ = access::check_new_token(text, &scope, Some(text.len() as u64));
    }
    let _ = Role::parse(text);
    let _ = access::check_token_id(text);
    if let Some((id, secret)) = text.strip_prefix("Bearer ").map(str::trim).and_then(auth::parse_api_token) {
        assert!(access::check_token_id(id).is_ok(), "a parsed token's id is a valid id");
        assert_eq!(secret.len(), 64);
    }
    let _ = check_segment("tenant", text);
    if let Ok(labels) = release::parse_labels(text) {
        assert!(labels.len() <= release::MAX_LABELS);
        for (key, value) in &labels {
            assert!(release::check_label(key, value).is_ok());
        }
    }
    let _ = release::check_client_id(text);
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(4, |b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let if_match = lines.next().unwrap_or_default();
    let if_none_match = lines.next().unwrap_or_default();
    let rest = lines.next().unwrap_or_default();
    through_router(target, if_match, if_none_match);
    beside_the_router(&String::from_utf8_lossy(rest));
});
