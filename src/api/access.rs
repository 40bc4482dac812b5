//! The access rule every route is registered with, and the middleware that enforces it before the
//! handler runs: authenticate the bearer credential (401), check the role and, for rules that
//! take it from the path, the scope (403), then hand the handler a [`Caller`].

use axum::extract::{RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;

use super::problem::ApiError;
use super::request::{self, Caller, RequestId};
use super::ApiState;
use crate::auth::Unauthenticated;
use crate::model::access::{AccessError, Action, Principal, Scope};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health probes and the API description.
    Open,
    /// A token for the whole cluster whose role allows the action (tenants, metrics, admin API).
    Cluster(Action),
    /// A token whose role allows the action and whose scope covers the `{tenant}`, `{app}` and
    /// `{env}` of the path.
    Path(Action),
    /// A token whose role allows the action; the handler checks the scope against what the body
    /// names (watch requests, tokens).
    Handler(Action),
}

#[derive(Clone)]
pub struct Guard {
    pub state: ApiState,
    pub access: Access,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The principal behind the request's credential. A well-formed token this node does not know
/// may have been created on the leader a moment ago: catch up with the leader once and look again.
async fn authenticate(state: &ApiState, authorization: Option<&str>) -> Result<Principal, ApiError> {
    let first = state.auth.authenticate(authorization, now_ms());
    let result = match first {
        Err(Unauthenticated::UnknownId) if state.service.linearize().await.is_ok() => {
            state.auth.authenticate(authorization, now_ms())
        }
        other => other,
    };
    result.map_err(ApiError::Unauthenticated)
}

/// The tenant, app and env a path names, as far as it names them.
fn path_scope(params: &RawPathParams) -> Scope {
    let mut path = Vec::new();
    for level in ["tenant", "app", "env"] {
        match params.iter().find(|(name, _)| *name == level) {
            Some((_, value)) => path.push(value.to_string()),
            None => break,
        }
    }
    Scope { path }
}

/// The caller, once the rule is satisfied; `None` for open routes.
async fn check(guard: &Guard, request: &mut Request) -> Result<Option<Caller>, ApiError> {
    let (action, target) = match guard.access {
        Access::Open => return Ok(None),
        Access::Cluster(action) => (action, Some(Scope::cluster())),
        Access::Path(action) => {
            let params = request
                .extract_parts::<RawPathParams>()
                .await
                .map_err(|e| ApiError::BadRequest { code: "invalid_path", detail: e.body_text() })?;
            (action, Some(path_scope(&params)))
        }
        Access::Handler(action) => (action, None),
    };
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = authenticate(&guard.state, authorization).await?;
    match &target {
        Some(target) => principal.authorize(action, target),
        None if principal.role.allows(action) => Ok(()),
        None => Err(AccessError::RoleTooSmall { role: principal.role, needed: action.least_role() }),
    }
    .map_err(ApiError::Access)?;
    let request_id = request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let idempotency_key = request::idempotency_key(request.headers())?;
    Ok(Some(Caller { principal, request_id, idempotency_key }))
}

/// Middleware: enforces the guard's rule, then runs the handler with the [`Caller`] in the
/// request's extensions.
pub async fn enforce(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    match check(&guard, &mut request).await {
        Ok(caller) => {
            if let Some(caller) = caller {
                request.extensions_mut().insert(caller);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}
