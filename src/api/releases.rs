//! Release handlers: read the current release (ETag `"r<number>"`), replace it (`PUT`, gray
//! release and promotion), publish one version to everyone, roll back to an earlier release's
//! rules, and browse the release history. Every change needs `If-Match` with the current ETag
//! and is one atomic compare-and-set through Raft, so no concurrent edit is ever lost.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::configs::{json_body, refused};
use super::convert;
use super::problem::ApiError;
use super::request::{self, Caller, ConfigPath, Params};
use super::ApiState;
use crate::command::{Change, Command, CommandResponse, ReleaseKind};
use crate::model::release::{self, Labels, Rule};
use crate::model::ConfigKey;
use crate::wire;

fn release_etag(number: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"r{number}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

fn with_etag<T: serde::Serialize>(body: T, number: u64) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::ETAG, release_etag(number));
    response
}

/// `GET .../release`: the rules clients are served by now.
pub async fn get(State(state): State<ApiState>, path: ConfigPath, params: Params) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    request::read_fence(&state, &request::query(params)?).await?;
    let record = state.service.store.config_record(&key)?;
    let current = record.and_then(|r| r.release).ok_or_else(|| ApiError::NotFound(format!("config {key}")))?;
    Ok(with_etag(convert::release_to_wire(&current), current.number))
}

/// Proposes a new rule list if the current release is still `expected`.
async fn change(
    state: &ApiState,
    caller: &Caller,
    key: ConfigKey,
    rules: Vec<Rule>,
    expected: u64,
    message: Option<String>,
    kind: ReleaseKind,
) -> Result<Response, ApiError> {
    // Versions are checked where the change is applied, against the versions kept then.
    release::validate(&rules, |_| true).map_err(|e| ApiError::InvalidRules(e.to_string()))?;
    let change =
        Change::SetRelease { key, rules, expected_release: expected, message: message.unwrap_or_default(), kind };
    match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Released { release, revision } => Ok(with_etag(wire::Released { release, revision }, release)),
        other => Err(refused(&other, Some(expected))),
    }
}

/// `PUT .../release` with `If-Match: "r<current>"`: replaces the whole rule list.
pub async fn put(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    headers: HeaderMap,
    body: Result<Json<wire::ReleaseSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let expected = request::if_match_release(&headers)?;
    let spec = json_body(&state, body)?;
    let rules = convert::rules_from_wire(&spec.rules)?;
    change(&state, &caller, key, rules, expected, spec.message, ReleaseKind::Set).await
}

/// `POST .../release/publish`: one version becomes the default for everyone (gray rules end).
pub async fn publish(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    headers: HeaderMap,
    body: Result<Json<wire::Publish>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let expected = request::if_match_release(&headers)?;
    let spec = json_body(&state, body)?;
    let rules = vec![Rule { labels: Labels::new(), version: spec.version, priority: 0, percent: None }];
    change(&state, &caller, key, rules, expected, spec.message, ReleaseKind::Publish).await
}

/// `POST .../release/rollback`: restores the rules of an earlier release, as a new release.
pub async fn rollback(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    headers: HeaderMap,
    body: Result<Json<wire::Rollback>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let expected = request::if_match_release(&headers)?;
    let spec = json_body(&state, body)?;
    let mut earlier = state.service.store.release(&key, spec.to)?;
    if earlier.is_none() {
        // This node may not have applied that release yet.
        state.service.linearize().await?;
        earlier = state.service.store.release(&key, spec.to)?;
    }
    let earlier = earlier.ok_or_else(|| ApiError::NotFound(format!("release {} of config {key}", spec.to)))?;
    let kind = ReleaseKind::Rollback { to: spec.to };
    change(&state, &caller, key, earlier.rules, expected, spec.message, kind).await
}

/// `GET .../releases`: the release history, newest first.
pub async fn history(
    State(state): State<ApiState>,
    path: ConfigPath,
    params: Params,
) -> Result<Json<wire::Page<wire::Release>>, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    state.service.store.config_record(&key)?.ok_or_else(|| ApiError::NotFound(format!("config {key}")))?;
    let listed = state.service.store.releases(&key, page.number()?, page.limit)?;
    let items = listed.items.iter().map(convert::release_to_wire).collect();
    Ok(Json(wire::Page { items, next_cursor: listed.next, revision: state.service.applied_index() }))
}

type ReleasePath = Result<Path<(String, String, String, String, u64)>, PathRejection>;

/// `GET .../releases/{number}`: one release of the history.
pub async fn one(State(state): State<ApiState>, path: ReleasePath, params: Params) -> Result<Response, ApiError> {
    let (tenant, app, env, name, number) = request::numbered(path)?;
    let key = ConfigKey::new(&tenant, &app, &env, &name)?;
    request::read_fence(&state, &request::query(params)?).await?;
    let found = state.service.store.release(&key, number)?;
    let found = found.ok_or_else(|| ApiError::NotFound(format!("release {number} of config {key}")))?;
    Ok(with_etag(convert::release_to_wire(&found), number))
}
