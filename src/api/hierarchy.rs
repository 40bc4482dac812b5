//! Tenant, app and env handlers: create or update (`PUT`, an optional JSON body), get, list
//! (paginated by name) and delete (409 while non-empty unless `?force=true`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;

use super::configs::refused;
use super::convert;
use super::problem::ApiError;
use super::request::{self, Caller, Params};
use super::ApiState;
use crate::command::{Change, Command, CommandResponse};
use crate::model::{check_segment, Namespace};
use crate::wire;

type TenantPath = Result<Path<String>, PathRejection>;
type AppPath = Result<Path<(String, String)>, PathRejection>;
type EnvPath = request::EnvPath;

fn tenant_name(path: TenantPath) -> Result<String, ApiError> {
    let tenant = request::numbered(path)?;
    check_segment("tenant", &tenant)?;
    Ok(tenant)
}

fn app_names(path: AppPath) -> Result<(String, String), ApiError> {
    let (tenant, app) = request::numbered(path)?;
    check_segment("tenant", &tenant)?;
    check_segment("app", &app)?;
    Ok((tenant, app))
}

/// An optional JSON body: empty means every field at its default.
fn optional_body<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::BadRequest { code: "invalid_body", detail: e.body_text() })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest { code: "invalid_json", detail: e.to_string() })
}

async fn apply(state: &ApiState, caller: &Caller, change: Change) -> Result<Response, ApiError> {
    match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Put { created, revision } => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(wire::Changed { revision, created: Some(created) })).into_response())
        }
        CommandResponse::Done { revision } => Ok(Json(wire::Changed { revision, created: None }).into_response()),
        other => Err(refused(&other, None)),
    }
}

fn tenant_level(name: &str, record: &crate::model::hierarchy::TenantRecord) -> wire::Level {
    wire::Level {
        quotas: Some(convert::quotas_to_wire(record.quotas)),
        apps: Some(record.apps),
        ..convert::level(name.to_string(), name, &record.info, record.configs)
    }
}

fn app_level(tenant: &str, name: &str, record: &crate::model::hierarchy::AppRecord) -> wire::Level {
    wire::Level {
        envs: Some(record.envs),
        ..convert::level(format!("{tenant}/{name}"), name, &record.info, record.configs)
    }
}

fn env_level(tenant: &str, app: &str, name: &str, record: &crate::model::hierarchy::EnvRecord) -> wire::Level {
    convert::level(format!("{tenant}/{app}/{name}"), name, &record.info, record.configs)
}

fn page<T>(state: &ApiState, items: Vec<T>, next_cursor: Option<String>) -> Json<wire::Page<T>> {
    Json(wire::Page { items, next_cursor, revision: state.service.applied_index() })
}

pub async fn list_tenants(
    State(state): State<ApiState>,
    params: Params,
) -> Result<Json<wire::Page<wire::Level>>, ApiError> {
    let params = request::query(params)?;
    let cursor = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    let listed = state.service.store.tenants(cursor.name()?, cursor.limit)?;
    Ok(page(&state, listed.items.iter().map(|(name, record)| tenant_level(name, record)).collect(), listed.next))
}

pub async fn get_tenant(
    State(state): State<ApiState>,
    path: TenantPath,
    params: Params,
) -> Result<Json<wire::Level>, ApiError> {
    let tenant = tenant_name(path)?;
    request::read_fence(&state, &request::query(params)?).await?;
    let record = state.service.store.tenant(&tenant)?.ok_or_else(|| ApiError::NotFound(format!("tenant {tenant}")))?;
    Ok(Json(tenant_level(&tenant, &record)))
}

pub async fn put_tenant(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: TenantPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = tenant_name(path)?;
    let spec: wire::TenantSpec = optional_body(body)?;
    let quotas = convert::quota_update(spec.quotas)?;
    apply(&state, &caller, Change::PutTenant { tenant, description: spec.description, quotas }).await
}

pub async fn delete_tenant(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: TenantPath,
    params: Params,
) -> Result<Response, ApiError> {
    let tenant = tenant_name(path)?;
    let force = request::flag(&request::query(params)?, "force")?;
    apply(&state, &caller, Change::DeleteTenant { tenant, force }).await
}

pub async fn list_apps(
    State(state): State<ApiState>,
    path: TenantPath,
    params: Params,
) -> Result<Json<wire::Page<wire::Level>>, ApiError> {
    let tenant = tenant_name(path)?;
    let params = request::query(params)?;
    let cursor = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    state.service.store.tenant(&tenant)?.ok_or_else(|| ApiError::NotFound(format!("tenant {tenant}")))?;
    let listed = state.service.store.apps(&tenant, cursor.name()?, cursor.limit)?;
    Ok(page(&state, listed.items.iter().map(|(name, record)| app_level(&tenant, name, record)).collect(), listed.next))
}

pub async fn get_app(
    State(state): State<ApiState>,
    path: AppPath,
    params: Params,
) -> Result<Json<wire::Level>, ApiError> {
    let (tenant, app) = app_names(path)?;
    request::read_fence(&state, &request::query(params)?).await?;
    let record =
        state.service.store.app(&tenant, &app)?.ok_or_else(|| ApiError::NotFound(format!("app {tenant}/{app}")))?;
    Ok(Json(app_level(&tenant, &app, &record)))
}

pub async fn put_app(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: AppPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (tenant, app) = app_names(path)?;
    let spec: wire::LevelSpec = optional_body(body)?;
    apply(&state, &caller, Change::PutApp { tenant, app, description: spec.description }).await
}

pub async fn delete_app(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: AppPath,
    params: Params,
) -> Result<Response, ApiError> {
    let (tenant, app) = app_names(path)?;
    let force = request::flag(&request::query(params)?, "force")?;
    apply(&state, &caller, Change::DeleteApp { tenant, app, force }).await
}

pub async fn list_envs(
    State(state): State<ApiState>,
    path: AppPath,
    params: Params,
) -> Result<Json<wire::Page<wire::Level>>, ApiError> {
    let (tenant, app) = app_names(path)?;
    let params = request::query(params)?;
    let cursor = request::pagination(&params)?;
    request::read_fence(&state, &params).await?;
    state.service.store.app(&tenant, &app)?.ok_or_else(|| ApiError::NotFound(format!("app {tenant}/{app}")))?;
    let listed = state.service.store.envs(&tenant, &app, cursor.name()?, cursor.limit)?;
    let items = listed.items.iter().map(|(name, record)| env_level(&tenant, &app, name, record)).collect();
    Ok(page(&state, items, listed.next))
}

pub async fn get_env(
    State(state): State<ApiState>,
    path: EnvPath,
    params: Params,
) -> Result<Json<wire::Level>, ApiError> {
    let namespace = request::namespace(path)?;
    request::read_fence(&state, &request::query(params)?).await?;
    let record = state.service.store.env(&namespace)?.ok_or_else(|| ApiError::NotFound(format!("env {namespace}")))?;
    Ok(Json(env_level(&namespace.tenant, &namespace.app, &namespace.env, &record)))
}

pub async fn put_env(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: EnvPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let namespace: Namespace = request::namespace(path)?;
    let spec: wire::LevelSpec = optional_body(body)?;
    apply(&state, &caller, Change::PutEnv { namespace, description: spec.description }).await
}

pub async fn delete_env(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: EnvPath,
    params: Params,
) -> Result<Response, ApiError> {
    let namespace = request::namespace(path)?;
    let force = request::flag(&request::query(params)?, "force")?;
    apply(&state, &caller, Change::DeleteEnv { namespace, force }).await
}
