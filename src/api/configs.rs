//! Config handlers: the head of a config (read, write a new version, delete, list a namespace),
//! its version history (create, list, fetch, diff) and its JSON Schema. Every write parses the
//! content with its format's real parser and checks it against the config's schema before it is
//! proposed; `dry_run` stops right there and writes nothing.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::convert::{self, checksum};
use super::problem::ApiError;
use super::request::{self, Caller, ConfigPath, EnvPath, Params};
use super::ApiState;
use crate::command::{Change, Command, CommandResponse, Origin};
use crate::model::{diff, ConfigKey, Format};
use crate::wire;

fn format_of(params: &HashMap<String, String>, headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
    if let Some(name) = params.get("format") {
        return Ok(Some(Format::parse(name)?));
    }
    match headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        None => Ok(None),
        Some(content_type) => Format::from_content_type(content_type)
            .map(Some)
            .ok_or_else(|| ApiError::UnsupportedMediaType(content_type.into())),
    }
}

fn body_bytes(state: &ApiState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: state.max_body_bytes },
        _ => ApiError::BadRequest { code: "invalid_body", detail: e.body_text() },
    })
}

/// A JSON request body, or a 400/413 that says what is wrong with it.
pub fn json_body<T>(state: &ApiState, body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: state.max_body_bytes },
        _ => ApiError::BadRequest { code: "invalid_json", detail: e.body_text() },
    })
}

fn etag(value: String) -> HeaderValue {
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// A new version as a request asked for it.
struct VersionRequest {
    key: ConfigKey,
    /// `None`: the config's current format, else text.
    format: Option<Format>,
    content: Vec<u8>,
    message: String,
    expected_version: Option<u64>,
    dry_run: bool,
}

/// How often a write is checked again when the config's schema changed under it.
const SCHEMA_RETRIES: usize = 3;

/// What the local checks of a new version found, ready to propose.
struct Checked {
    format: Format,
    schema_checksum: Option<String>,
    /// The version number and current head, for a dry run's answer.
    next_version: u64,
}

/// Parses the content with its format and checks it against the config's schema, reading this
/// node's applied state (which may trail the leader's: callers re-check before refusing).
fn check_locally(state: &ApiState, request: &VersionRequest) -> Result<Checked, ApiError> {
    let service = &state.service;
    let record = service.store.config_record(&request.key)?;
    let live = record.as_ref().filter(|r| r.current_version.is_some());
    let format = request.format.or(live.map(|r| r.format)).unwrap_or(Format::Text);
    let tree = format.parse_tree(&request.content)?;
    let schema = service.schemas.for_config(&service.store, &request.key, record.as_ref())?;
    if let Some((_, schema)) = &schema {
        let tree = tree.as_ref().ok_or(ApiError::SchemaNeedsStructure)?;
        let violations = schema.check(tree);
        if !violations.is_empty() {
            return Err(ApiError::SchemaViolation(violations));
        }
    }
    if request.dry_run {
        let current = live.and_then(|r| r.current_version);
        if let Some(expected) = request.expected_version.filter(|e| Some(*e) != current) {
            return Err(ApiError::VersionMismatch { expected, current });
        }
        let quotas = service.store.tenant(&request.key.tenant)?.map(|t| t.quotas).unwrap_or_default();
        let size = request.content.len() as u64;
        if size > quotas.max_config_bytes {
            return Err(ApiError::ConfigTooLarge { size, limit: quotas.max_config_bytes });
        }
    }
    let next_version = record.as_ref().map_or(0, |r| r.latest_version) + 1;
    Ok(Checked { format, schema_checksum: schema.map(|(checksum, _)| checksum), next_version })
}

/// Parses, schema-checks and (unless `dry_run`) commits a new version. The checks read this
/// node's applied state, which may trail the leader's: a check that fails on it (a schema just
/// cleared, a format just changed) is repeated after a read-index round before the write is
/// refused, and the entry itself carries what was checked (schema checksum, a format taken from
/// the config), so apply refuses it if that changed and the write is checked again. A write
/// never waits for a read-index round while its checks pass.
async fn write_version(
    state: &ApiState,
    origin: Origin,
    request: VersionRequest,
) -> Result<wire::WriteResult, ApiError> {
    let service = &state.service;
    let mut fresh = service.local_state_is_current();
    if request.format.is_none() && request.dry_run && !fresh {
        // A dry run answers from this node's state alone: its default format must be current.
        service.linearize().await?;
        fresh = true;
    }
    let size = request.content.len() as u64;
    let sum = checksum(&crate::store::checksum(&request.content));
    for _ in 0..SCHEMA_RETRIES {
        let checked = match check_locally(state, &request) {
            Ok(checked) => checked,
            Err(_) if !fresh => {
                service.linearize().await?;
                fresh = true;
                continue;
            }
            Err(refusal) => return Err(refusal),
        };
        if request.dry_run {
            let (version, revision) = (checked.next_version, service.applied_index());
            return Ok(wire::WriteResult { version, revision, checksum: Some(sum), size: Some(size), dry_run: true });
        }
        let change = Change::WriteVersion {
            key: request.key.clone(),
            format: checked.format,
            content: request.content.clone(),
            message: request.message.clone(),
            expected_version: request.expected_version,
            checked_schema: checked.schema_checksum,
            format_from_config: request.format.is_none(),
        };
        match service.write(Command { origin: origin.clone(), change }).await? {
            CommandResponse::Written { version, revision } => {
                return Ok(wire::WriteResult {
                    version,
                    revision,
                    checksum: Some(sum),
                    size: Some(size),
                    dry_run: false,
                })
            }
            // This node had not applied a schema or format change yet: catch up and check again.
            CommandResponse::ChecksOutdated => {
                service.linearize().await?;
                fresh = true;
            }
            other => return Err(refused(&other, request.expected_version)),
        }
    }
    Err(ApiError::SchemaChanged)
}

/// The error for a command answer that is not the success the handler expected.
pub fn refused(response: &CommandResponse, if_match: Option<u64>) -> ApiError {
    ApiError::from_refusal(response, if_match)
        .unwrap_or_else(|| ApiError::Service(crate::service::Error::Storage(format!("unexpected answer {response:?}"))))
}

fn written(result: wire::WriteResult, status: StatusCode) -> Response {
    let tag = etag(format!("\"{}\"", result.version));
    let mut response = (status, Json(result)).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// `PUT /api/v1/configs/{t}/{a}/{e}/{c}`: the raw body becomes the next version.
pub async fn put(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    params: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let body = body_bytes(&state, body)?;
    let version = VersionRequest {
        key,
        format: format_of(&params, &headers)?,
        content: body.to_vec(),
        message: params.get("message").cloned().unwrap_or_default(),
        expected_version: request::if_match_version(&headers)?,
        dry_run: request::flag(&params, "dry_run")?,
    };
    let result = write_version(&state, caller.origin(), version).await?;
    Ok(written(result, StatusCode::OK))
}

/// `POST .../versions`: a new version from a JSON body `{content, format?, message?}`.
pub async fn create_version(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    params: Params,
    headers: HeaderMap,
    body: Result<Json<wire::NewVersion>, JsonRejection>,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let body = json_body(&state, body)?;
    let version = VersionRequest {
        key,
        format: body.format.as_deref().map(Format::parse).transpose()?,
        content: body.content.into_bytes(),
        message: body.message.unwrap_or_default(),
        expected_version: request::if_match_version(&headers)?,
        dry_run: request::flag(&params, "dry_run")?,
    };
    let result = write_version(&state, caller.origin(), version).await?;
    let status = if result.dry_run { StatusCode::OK } else { StatusCode::CREATED };
    Ok(written(result, status))
}

pub async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let expected_version = request::if_match_version(&headers)?;
    let change = Change::DeleteConfig { key, expected_version };
    match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Deleted { version, revision } => {
            let result = wire::WriteResult { version, revision, checksum: None, size: None, dry_run: false };
            Ok(written(result, StatusCode::OK))
        }
        other => Err(refused(&other, expected_version)),
    }
}

/// `GET /api/v1/configs/{t}/{a}/{e}/{c}`: the head version's content, with its version in headers.
pub async fn get(State(state): State<ApiState>, path: ConfigPath, params: Params) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    request::read_fence(&state, &params).await?;
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

/// `GET /api/v1/configs/{t}/{a}/{e}`: a page of the live configs, by name.
pub async fn list(
    State(state): State<ApiState>,
    path: EnvPath,
    params: Params,
) -> Result<Json<wire::ConfigList>, ApiError> {
    let namespace = request::namespace(path)?;
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    let listed = state.service.store.list_configs(&namespace, page.name()?, page.limit)?;
    let configs = listed
        .items
        .into_iter()
        .map(|(name, record)| wire::ConfigSummary {
            name,
            version: record.current_version.unwrap_or_default(),
            format: record.format.name().to_string(),
            revision: record.revision,
        })
        .collect();
    Ok(Json(wire::ConfigList { configs, revision: state.service.applied_index(), next_cursor: listed.next }))
}

/// The config's record, also while deleted; 404 when it never existed.
fn existing_record(state: &ApiState, key: &ConfigKey) -> Result<crate::model::ConfigRecord, ApiError> {
    state.service.store.config_record(key)?.ok_or_else(|| ApiError::NotFound(format!("config {key}")))
}

/// `GET .../versions`: kept versions, newest first.
pub async fn versions(
    State(state): State<ApiState>,
    path: ConfigPath,
    params: Params,
) -> Result<Json<wire::Page<wire::VersionInfo>>, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    existing_record(&state, &key)?;
    let listed = state.service.store.versions(&key, page.number()?, page.limit)?;
    let items = listed.items.iter().map(convert::version_info).collect();
    Ok(Json(wire::Page { items, next_cursor: listed.next, revision: state.service.applied_index() }))
}

fn version_with_content(state: &ApiState, key: &ConfigKey, version: u64) -> Result<wire::Version, ApiError> {
    let missing =
        || ApiError::NotFound(format!("version {version} of config {key} (never written, or dropped by retention)"));
    let meta = state.service.store.version_meta(key, version)?.ok_or_else(missing)?;
    let content = state.service.store.version_content(key, version)?.ok_or_else(missing)?;
    Ok(wire::Version { info: convert::version_info(&meta), content: String::from_utf8_lossy(&content).into_owned() })
}

type VersionPath = Result<Path<(String, String, String, String, u64)>, PathRejection>;

/// `GET .../versions/{version}`: one version with its content.
pub async fn version(State(state): State<ApiState>, path: VersionPath, params: Params) -> Result<Response, ApiError> {
    let (tenant, app, env, name, number) = request::numbered(path)?;
    let key = ConfigKey::new(&tenant, &app, &env, &name)?;
    let params = request::query(params)?;
    request::read_fence(&state, &params).await?;
    let version = version_with_content(&state, &key, number)?;
    let tag = etag(format!("\"{number}\""));
    let mut response = Json(version).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    Ok(response)
}

/// `GET .../diff?from=A&to=B`: unified text diff, plus path changes for structured formats.
pub async fn diff(
    State(state): State<ApiState>,
    path: ConfigPath,
    params: Params,
) -> Result<Json<wire::Diff>, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let required = |name: &'static str| {
        request::number(&params, name)?.ok_or_else(|| ApiError::BadRequest {
            code: "invalid_query",
            detail: format!("{name} is required: diff?from=<version>&to=<version>"),
        })
    };
    let (from, to) = (required("from")?, required("to")?);
    request::read_fence(&state, &params).await?;
    let old = version_with_content(&state, &key, from)?;
    let new = version_with_content(&state, &key, to)?;
    let unified = diff::unified(&old.content, &new.content, &format!("{key}@{from}"), &format!("{key}@{to}"));
    let tree = |v: &wire::Version| {
        Format::parse(&v.info.format).ok().and_then(|f| f.parse_tree(v.content.as_bytes()).ok().flatten())
    };
    let changes = tree(&old).zip(tree(&new)).map(|(a, b)| {
        diff::paths(&a, &b)
            .into_iter()
            .map(|c| wire::PathChange { op: c.op.name().to_string(), path: c.path, old: c.old, new: c.new })
            .collect()
    });
    Ok(Json(wire::Diff { from, to, unified, changes }))
}

/// `GET .../schema`: the JSON Schema new versions must satisfy.
pub async fn get_schema(State(state): State<ApiState>, path: ConfigPath, params: Params) -> Result<Response, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    request::read_fence(&state, &params).await?;
    let record = existing_record(&state, &key)?;
    let no_schema = || ApiError::NotFound(format!("schema of config {key}"));
    let sum = record.schema_checksum.ok_or_else(no_schema)?;
    let schema = state.service.store.schema(&key)?.ok_or_else(no_schema)?;
    let headers = [
        (header::CONTENT_TYPE, "application/schema+json".to_string()),
        (header::ETAG, format!("\"{}\"", checksum(&sum))),
    ];
    Ok((headers, schema).into_response())
}

/// `PUT .../schema`: sets the JSON Schema (draft 2020-12 unless `$schema` says otherwise).
pub async fn put_schema(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<wire::Changed>, ApiError> {
    let key = request::config_key(path)?;
    let body = body_bytes(&state, body)?;
    crate::model::schema::Schema::compile(&body)?;
    let sum = crate::store::checksum(&body);
    let change = Change::SetSchema { key, schema: Some(body.to_vec()), checksum: Some(sum) };
    schema_change(&state, &caller, change).await
}

/// `DELETE .../schema`: new versions are no longer checked against a schema.
pub async fn delete_schema(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: ConfigPath,
) -> Result<Json<wire::Changed>, ApiError> {
    let key = request::config_key(path)?;
    if existing_record(&state, &key).is_err() {
        // This node may not have applied the config's creation yet.
        state.service.linearize().await?;
        existing_record(&state, &key)?;
    }
    schema_change(&state, &caller, Change::SetSchema { key, schema: None, checksum: None }).await
}

async fn schema_change(state: &ApiState, caller: &Caller, change: Change) -> Result<Json<wire::Changed>, ApiError> {
    match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Done { revision } => Ok(Json(wire::Changed { revision, created: None })),
        other => Err(refused(&other, None)),
    }
}
