//! The audit query: a tenant's audit records in revision order, filtered by actor, action,
//! resource (and everything under it) and a time range, a page at a time.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;

use super::convert;
use super::problem::ApiError;
use super::request::{self, Params};
use super::ApiState;
use crate::model::audit::{AuditAction, AuditFilter};
use crate::model::check_segment;
use crate::wire;

/// `GET /api/v1/tenants/{tenant}/audit?actor=&action=&resource=&from_ms=&to_ms=&limit=&cursor=`
pub async fn query(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    params: Params,
) -> Result<Json<wire::Page<wire::AuditEntry>>, ApiError> {
    let tenant: String = request::numbered(path)?;
    check_segment("tenant", &tenant)?;
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    let action = params
        .get("action")
        .map(|name| {
            AuditAction::parse(name).ok_or_else(|| {
                let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.name()).collect();
                let detail = format!("unknown action {name:?}: use one of {}", known.join(", "));
                ApiError::BadRequest { code: "invalid_query", detail }
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: params.get("actor").cloned(),
        action,
        resource: params.get("resource").map(|r| r.trim_matches('/').to_string()),
        from_ms: request::number(&params, "from_ms")?,
        to_ms: request::number(&params, "to_ms")?,
    };
    request::read_fence(&state, &params).await?;
    let listed = state.service.store.audit(&tenant, &filter, page.audit_position()?, page.limit)?;
    let items = listed.items.iter().map(convert::audit_entry).collect();
    Ok(Json(wire::Page { items, next_cursor: listed.next, revision: state.service.applied_index() }))
}
