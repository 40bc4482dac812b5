//! Client API v1 handlers: read, write, delete and list configurations.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::problem::ApiError;
use super::ApiState;
use crate::command::{Command, CommandResponse};
use crate::model::{ConfigKey, Format, Namespace};
use crate::wire;

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params.map(|Query(q)| q).map_err(|e| ApiError::BadRequest { code: "invalid_query", detail: e.body_text() })
}

fn config_key(path: Result<Path<(String, String, String, String)>, PathRejection>) -> Result<ConfigKey, ApiError> {
    let Path((tenant, app, env, name)) =
        path.map_err(|e| ApiError::BadRequest { code: "invalid_path", detail: e.body_text() })?;
    Ok(ConfigKey::new(&tenant, &app, &env, &name)?)
}

/// Linearizable unless the client asks for `?consistency=serializable`.
async fn read_barrier(state: &ApiState, params: &HashMap<String, String>) -> Result<(), ApiError> {
    match params.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(state.service.linearize().await?),
        Some("serializable") => Ok(()),
        Some(other) => Err(ApiError::BadRequest {
            code: "invalid_consistency",
            detail: format!("consistency must be linearizable or serializable, got {other:?}"),
        }),
    }
}

/// Parses `If-Match: "7"` (quotes optional) into an expected version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| ApiError::BadRequest {
        code: "invalid_if_match",
        detail: format!("If-Match must be a version in quotes, like \"3\"; got {text:?}"),
    })
}

fn format_of(params: &HashMap<String, String>, headers: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(name) = params.get("format") {
        return Ok(Format::parse(name)?);
    }
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        None => Ok(Format::Text),
        Some(content_type) => {
            Format::from_content_type(content_type).ok_or_else(|| ApiError::UnsupportedMediaType(content_type.into()))
        }
    }
}

fn write_answer(response: CommandResponse, key: &ConfigKey, expected: Option<u64>) -> Result<Response, ApiError> {
    match response {
        CommandResponse::Written { version, revision } | CommandResponse::Deleted { version, revision } => {
            let mut answer = Json(wire::WriteResult { version, revision }).into_response();
            answer
                .headers_mut()
                .insert(header::ETAG, HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"));
            Ok(answer)
        }
        CommandResponse::NotFound => Err(ApiError::NotFound(format!("config {key}"))),
        CommandResponse::VersionMismatch { current } => {
            Err(ApiError::VersionMismatch { expected: expected.unwrap_or_default(), current })
        }
    }
}

pub async fn put(
    State(state): State<ApiState>,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    params: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = config_key(path)?;
    let params = query(params)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: state.max_body_bytes },
        _ => ApiError::BadRequest { code: "invalid_body", detail: e.body_text() },
    })?;
    let format = format_of(&params, &headers)?;
    format.validate(&body)?;
    let expected_version = if_match(&headers)?;
    let command = Command::Put { key: key.clone(), format, content: body.to_vec(), expected_version };
    write_answer(state.service.write(command).await?, &key, expected_version)
}

pub async fn delete(
    State(state): State<ApiState>,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = config_key(path)?;
    let expected_version = if_match(&headers)?;
    let command = Command::Delete { key: key.clone(), expected_version };
    write_answer(state.service.write(command).await?, &key, expected_version)
}

pub async fn get(
    State(state): State<ApiState>,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
    params: Params,
) -> Result<Response, ApiError> {
    let key = config_key(path)?;
    let params = query(params)?;
    read_barrier(&state, &params).await?;
    let (record, content) = state.service.get(&key)?.ok_or_else(|| ApiError::NotFound(format!("config {key}")))?;
    let version = record.current_version.unwrap_or_default();
    let headers = [
        (header::CONTENT_TYPE, record.format.content_type().to_string()),
        (header::ETAG, format!("\"{version}\"")),
        (header::HeaderName::from_static("x-conflux-version"), version.to_string()),
        (header::HeaderName::from_static("x-conflux-revision"), record.revision.to_string()),
        (header::HeaderName::from_static("x-conflux-format"), record.format.name().to_string()),
    ];
    Ok((headers, content).into_response())
}

pub async fn list(
    State(state): State<ApiState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    params: Params,
) -> Result<Json<wire::ConfigList>, ApiError> {
    let Path((tenant, app, env)) =
        path.map_err(|e| ApiError::BadRequest { code: "invalid_path", detail: e.body_text() })?;
    let namespace = Namespace::new(&tenant, &app, &env)?;
    let params = query(params)?;
    read_barrier(&state, &params).await?;
    let configs = state
        .service
        .list(&namespace)?
        .into_iter()
        .map(|(name, record)| wire::ConfigSummary {
            name,
            version: record.current_version.unwrap_or_default(),
            format: record.format.name().to_string(),
            revision: record.revision,
        })
        .collect();
    Ok(Json(wire::ConfigList { configs, revision: state.service.applied_index() }))
}
