//! Resolve handlers: what a client (labels, client id) receives for one config (`GET`, with an
//! ETag and `If-None-Match` → 304) or for many configs of one env in one call (`POST`, what an
//! application does at start-up). Both take the read fence: linearizable by default,
//! `consistency=serializable` for the local state, `min_revision` to never go back in time.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::configs::json_body;
use super::convert::{self, checksum};
use super::problem::ApiError;
use super::request::{self, ConfigPath, EnvPath, Params};
use super::ApiState;
use crate::model::release::{Labels, Percent};
use crate::model::ConfigKey;
use crate::service::resolve::{resolve, Resolution};
use crate::wire;

/// Most configs one batch resolve may name.
const MAX_BATCH_CONFIGS: usize = 1000;

fn to_wire(key: &ConfigKey, resolution: Resolution, revision: u64) -> wire::Resolved {
    wire::Resolved {
        config: key.name.clone(),
        format: resolution.body.meta.format.name().to_string(),
        version: resolution.body.meta.version,
        checksum: checksum(&resolution.body.meta.checksum),
        content: String::from_utf8_lossy(&resolution.body.content).into_owned(),
        release: resolution.release,
        rule: wire::MatchedRule {
            index: resolution.rule_index,
            priority: resolution.rule.priority,
            labels: resolution.rule.labels.clone(),
            percent: resolution.rule.percent.map(Percent::as_percent),
        },
        revision,
    }
}

/// `GET /api/v1/resolve/{t}/{a}/{e}/{c}?labels=k=v,..&client_id=..`
pub async fn one(
    State(state): State<ApiState>,
    path: ConfigPath,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let (labels, client_id) = request::client_identity(&params)?;
    request::read_fence(&state, &params).await?;
    let revision = state.service.applied_index();
    let resolution = resolve(&state.service.store, &key, &labels, client_id.as_deref())?
        .ok_or_else(|| ApiError::NotFound(format!("config {key}")))?;
    // The checksum is part of the tag: a config deleted with its env and written again restarts at
    // version 1, and a client holding the old version 1 must not be told it is current.
    let short_sum = resolution.body.meta.checksum.get(..16).unwrap_or_default();
    let etag = format!("\"v{}-{short_sum}\"", resolution.body.meta.version);
    let etag_value = HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let revision_header = (HeaderName::from_static("x-conflux-revision"), HeaderValue::from(revision));
    if request::if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value), revision_header]).into_response());
    }
    let body = Json(to_wire(&key, resolution, revision));
    Ok(([(header::ETAG, etag_value), revision_header], body).into_response())
}

/// `POST /api/v1/resolve/{t}/{a}/{e}` with `{configs, labels, client_id, min_revision}`.
pub async fn many(
    State(state): State<ApiState>,
    path: EnvPath,
    params: Params,
    body: Result<Json<wire::ResolveMany>, JsonRejection>,
) -> Result<Json<wire::ResolvedMany>, ApiError> {
    let namespace = request::namespace(path)?;
    let mut params = request::query(params)?;
    let page = request::pagination(&params)?;
    let body = json_body(&state, body)?;
    if body.configs.len() > MAX_BATCH_CONFIGS {
        let detail = format!("at most {MAX_BATCH_CONFIGS} configs per call, got {}", body.configs.len());
        return Err(ApiError::BadRequest { code: "too_many_configs", detail });
    }
    let labels: Labels = convert::labels_from_wire(&body.labels)?;
    if let Some(id) = &body.client_id {
        crate::model::release::check_client_id(id).map_err(ApiError::InvalidLabels)?;
    }
    let keys =
        body.configs.iter().map(|name| ConfigKey::in_namespace(&namespace, name)).collect::<Result<Vec<_>, _>>()?;
    if let Some(min_revision) = body.min_revision {
        params.insert("min_revision".into(), min_revision.to_string());
    }
    request::read_fence(&state, &params).await?;
    let revision = state.service.applied_index();
    let (keys, next_cursor) = if keys.is_empty() {
        let listed = state.service.store.list_configs(&namespace, page.name()?, page.limit)?;
        let keys =
            listed.items.iter().map(|(name, _)| ConfigKey::in_namespace(&namespace, name)).collect::<Result<_, _>>()?;
        (keys, listed.next)
    } else {
        (keys, None)
    };
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for key in keys {
        match resolve(&state.service.store, &key, &labels, body.client_id.as_deref())? {
            Some(resolution) => items.push(to_wire(&key, resolution, revision)),
            None => missing.push(key.name),
        }
    }
    Ok(Json(wire::ResolvedMany { items, missing, revision, next_cursor }))
}
