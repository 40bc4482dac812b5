//! Token handlers: create (the secret is answered once, only its hash is replicated), list, get and
//! revoke, each limited to tokens inside the caller's own scope; and `whoami`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::configs::{json_body, refused};
use super::problem::ApiError;
use super::request::{self, Caller, Params};
use super::ApiState;
use crate::auth;
use crate::command::{Change, Command, CommandResponse};
use crate::model::access::{self, Action, Role, Scope, TokenRecord};
use crate::wire;

pub fn to_wire(record: &TokenRecord) -> wire::TokenInfo {
    wire::TokenInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        role: record.role.name().to_string(),
        scope: record.scope.to_string(),
        created_ms: record.created_ms,
        created_by: record.created_by.clone(),
        expires_ms: record.expires_ms,
        revoked_ms: record.revoked.as_ref().map(|r| r.time_ms),
        revoked_by: record.revoked.as_ref().map(|r| r.by.clone()),
    }
}

/// The token named in the path, if it exists and lies in the caller's scope (else 404: a caller
/// does not learn which ids exist outside its scope).
fn visible_token(
    state: &ApiState,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<TokenRecord, ApiError> {
    let id = request::numbered(path)?;
    let not_found = || ApiError::NotFound(format!("token {id}"));
    let record = if access::check_token_id(&id).is_ok() { state.service.store.token(&id)? } else { None };
    record.filter(|r| caller.principal.scope.covers(&r.scope)).ok_or_else(not_found)
}

/// `POST /api/v1/tokens` → 201 with the token, shown this once.
pub async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<wire::TokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(&state, body)?;
    let role = Role::parse(&body.role).map_err(ApiError::Access)?;
    let scope = Scope::parse(&body.scope).map_err(ApiError::Access)?;
    caller.authorize(Action::Manage, &scope)?;
    let name = body.name.trim().to_string();
    access::check_new_token(&name, &scope, body.ttl_seconds).map_err(ApiError::Access)?;
    let ttl_ms = body.ttl_seconds.map(|ttl| ttl * 1000);
    let new = auth::generate_token();
    let change =
        Change::CreateToken { id: new.id.clone(), name, role, scope, secret_sha256: new.secret_sha256, ttl_ms };
    let revision = match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Done { revision } => revision,
        other => return Err(refused(&other, None)),
    };
    request::wait_applied(&state, revision).await?;
    let record = state.service.store.token(&new.id)?.ok_or_else(|| ApiError::NotFound(format!("token {}", new.id)))?;
    let created = wire::TokenCreated { token: new.token, info: to_wire(&record), revision };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/tokens?limit=&cursor=`: the tokens inside the caller's scope, by id.
pub async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<Json<wire::Page<wire::TokenInfo>>, ApiError> {
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    let revision = state.service.applied_index();
    let scope = &caller.principal.scope;
    let listed = state.service.store.tokens(page.name()?, page.limit, |record| scope.covers(&record.scope))?;
    let items = listed.items.iter().map(|(_, record)| to_wire(record)).collect();
    Ok(Json(wire::Page { items, next_cursor: listed.next, revision }))
}

/// `GET /api/v1/tokens/{id}`
pub async fn get(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::TokenInfo>, ApiError> {
    Ok(Json(to_wire(&visible_token(&state, &caller, path)?)))
}

/// `DELETE /api/v1/tokens/{id}`: revokes; every node refuses the token once it applies this.
pub async fn revoke(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::Changed>, ApiError> {
    let record = visible_token(&state, &caller, path)?;
    let change = Change::RevokeToken { id: record.id };
    match state.service.write(Command { origin: caller.origin(), change }).await? {
        CommandResponse::Done { revision } => Ok(Json(wire::Changed { revision, created: None })),
        other => Err(refused(&other, None)),
    }
}

/// `GET /api/v1/whoami`
pub async fn whoami(Extension(caller): Extension<Caller>) -> Json<wire::WhoAmI> {
    let principal = caller.principal;
    Json(wire::WhoAmI {
        actor: principal.actor,
        role: principal.role.name().to_string(),
        scope: principal.scope.to_string(),
    })
}
