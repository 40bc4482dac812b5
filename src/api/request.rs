//! What handlers read from a request besides its body: query parameters, pagination, `If-Match`
//! for versions and releases, client labels, the request's id (given by `intake`) and its
//! caller (the access middleware), and the read fence (`consistency`, `min_revision`).

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use super::problem::ApiError;
use super::ApiState;
use crate::command::Origin;
use crate::model::access::{Action, Principal, Scope};
use crate::model::release::{self, Labels};
use crate::model::{ConfigKey, Namespace};

pub type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Default and largest page sizes of every listing.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served: the client's `X-Request-Id` when it is sensible, else new.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives the request its id, in its extensions (recorded in audit records): the client's
/// `X-Request-Id` when it is sensible, else a new one. Returns it, for [`echo_id`].
pub fn assign_id(request: &mut Request) -> String {
    let given = request.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|id| {
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    });
    let id = given.map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_string);
    request.extensions_mut().insert(RequestId(id.clone()));
    id
}

/// Echoes the request's id to the client as `X-Request-Id`.
pub fn echo_id(response: &mut Response, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
}

/// Who is calling (checked by the access middleware of the route) and the request's id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
    /// The request's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
}

impl Caller {
    /// Who is making a change, for its audit record and version author.
    pub fn origin(&self) -> Origin {
        Origin {
            actor: self.principal.actor.clone(),
            request_id: self.request_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }

    /// 403 unless the caller may do `action` on `target` (for routes whose target is in the body).
    pub fn authorize(&self, action: Action, target: &Scope) -> Result<(), ApiError> {
        self.principal.authorize(action, target).map_err(ApiError::Access)
    }
}

pub fn query(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params.map(|Query(q)| q).map_err(|e| ApiError::BadRequest { code: "invalid_query", detail: e.body_text() })
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::BadRequest { code: "invalid_path", detail: e.body_text() }
}

pub type ConfigPath = Result<Path<(String, String, String, String)>, PathRejection>;
pub type EnvPath = Result<Path<(String, String, String)>, PathRejection>;

pub fn config_key(path: ConfigPath) -> Result<ConfigKey, ApiError> {
    let Path((tenant, app, env, name)) = path.map_err(bad_path)?;
    Ok(ConfigKey::new(&tenant, &app, &env, &name)?)
}

pub fn namespace(path: EnvPath) -> Result<Namespace, ApiError> {
    let Path((tenant, app, env)) = path.map_err(bad_path)?;
    Ok(Namespace::new(&tenant, &app, &env)?)
}

/// Path segments of a path with a trailing number (a version or release).
pub fn numbered<T: serde::de::DeserializeOwned + Send>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p).map_err(bad_path)
}

/// `?limit=` and `?cursor=` of a listing.
pub struct Pagination {
    pub limit: usize,
    pub cursor: Option<String>,
}

pub fn pagination(params: &HashMap<String, String>) -> Result<Pagination, ApiError> {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => {
            text.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| ApiError::BadRequest {
                code: "invalid_limit",
                detail: format!("limit must be 1 to {MAX_LIMIT}, got {text:?}"),
            })?
        }
    };
    Ok(Pagination { limit, cursor: params.get("cursor").filter(|c| !c.is_empty()).cloned() })
}

pub fn bad_cursor(cursor: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_cursor",
        detail: format!("cursor {cursor:?} is not one this listing gave out; pass next_cursor from the previous page"),
    }
}

impl Pagination {
    /// The cursor of a listing by number (versions, releases).
    pub fn number(&self) -> Result<Option<u64>, ApiError> {
        self.cursor.as_deref().map(|c| c.parse::<u64>().map_err(|_| bad_cursor(c))).transpose()
    }

    /// The cursor of a listing by name (must itself be a valid name).
    pub fn name(&self) -> Result<Option<&str>, ApiError> {
        match self.cursor.as_deref() {
            Some(c) if crate::model::check_segment("cursor", c).is_err() => Err(bad_cursor(c)),
            other => Ok(other),
        }
    }

    /// The cursor of the audit log: `revision.position`.
    pub fn audit_position(&self) -> Result<Option<(u64, u32)>, ApiError> {
        let Some(cursor) = self.cursor.as_deref() else { return Ok(None) };
        let parsed = cursor.split_once('.').and_then(|(r, s)| Some((r.parse().ok()?, s.parse().ok()?)));
        parsed.map(Some).ok_or_else(|| bad_cursor(cursor))
    }
}

/// The tag of an `If-Match`, quotes removed. A weak tag (`W/"3"`) never matches: If-Match
/// compares strongly (RFC 9110, 13.1.1), so it is refused like a stale tag.
fn etag_text(value: &HeaderValue, release: bool) -> Result<&str, ApiError> {
    let text = value.to_str().unwrap_or("").trim();
    if text.starts_with("W/") {
        return Err(ApiError::WeakIfMatch { tag: text.to_string(), release });
    }
    Ok(text.trim_matches('"'))
}

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `Idempotency-Key: <1 to 128 of [A-Za-z0-9._:-]>`, if present: a retried mutation with the same
/// key (from the same token, within a day) is applied once and answered the same.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    let text = value.to_str().unwrap_or("");
    let valid =
        (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if !valid {
        return Err(ApiError::BadRequest {
            code: "invalid_idempotency_key",
            detail: "Idempotency-Key must be 1 to 128 letters, digits, '.', '_', ':' or '-' (a UUID works)".into(),
        });
    }
    Ok(Some(text.to_string()))
}

/// `If-Match: "7"` (quotes optional) on a config write or delete: the version expected current.
pub fn if_match_version(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let bare = etag_text(value, false)?;
    bare.parse::<u64>().map(Some).map_err(|_| ApiError::BadRequest {
        code: "invalid_if_match",
        detail: format!("If-Match must be a version in quotes, like \"3\"; got {:?}", value.to_str().unwrap_or("")),
    })
}

/// `If-Match: "r3"` on a release change: required (428 without), names the current release.
pub fn if_match_release(headers: &HeaderMap) -> Result<u64, ApiError> {
    let value = headers.get(header::IF_MATCH).ok_or(ApiError::PreconditionRequired)?;
    let bare = etag_text(value, true)?;
    bare.strip_prefix('r').unwrap_or(bare).parse::<u64>().map_err(|_| ApiError::BadRequest {
        code: "invalid_if_match",
        detail: format!("If-Match must be the release's ETag, like \"r3\"; got {:?}", value.to_str().unwrap_or("")),
    })
}

/// Whether `If-None-Match` names `etag` (or is `*`).
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|list| {
        list.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    })
}

/// A boolean query flag: absent is false; `true`/`false`/`1`/`0` are accepted.
pub fn flag(params: &HashMap<String, String>, name: &'static str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest {
            code: "invalid_query",
            detail: format!("{name} must be true or false, got {other:?}"),
        }),
    }
}

/// A number in the query, if present.
pub fn number(params: &HashMap<String, String>, name: &'static str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|text| {
            text.parse::<u64>().map_err(|_| ApiError::BadRequest {
                code: "invalid_query",
                detail: format!("{name} must be a non-negative integer, got {text:?}"),
            })
        })
        .transpose()
}

/// The client's labels (`?labels=k=v,k2=v2`) and id (`?client_id=`).
pub fn client_identity(params: &HashMap<String, String>) -> Result<(Labels, Option<String>), ApiError> {
    let labels =
        release::parse_labels(params.get("labels").map_or("", String::as_str)).map_err(ApiError::InvalidLabels)?;
    let client_id = params.get("client_id").cloned();
    if let Some(id) = &client_id {
        release::check_client_id(id).map_err(ApiError::InvalidLabels)?;
    }
    Ok((labels, client_id))
}

/// Waits before a read: a read-index round unless `consistency=serializable`, then (always) until
/// this node has applied `min_revision`, so a client that moves between nodes never reads older
/// state than it has seen.
pub async fn read_fence(state: &ApiState, params: &HashMap<String, String>) -> Result<(), ApiError> {
    let min_revision = number(params, "min_revision")?;
    match params.get("consistency").map(String::as_str) {
        None | Some("linearizable") => state.service.linearize().await?,
        Some("serializable") => {}
        Some(other) => {
            return Err(ApiError::BadRequest {
                code: "invalid_consistency",
                detail: format!("consistency must be linearizable or serializable, got {other:?}"),
            })
        }
    }
    if let Some(wanted) = min_revision {
        wait_applied(state, wanted).await?;
    }
    Ok(())
}

/// Waits (bounded by the request timeout) until this node has applied `wanted`.
pub async fn wait_applied(state: &ApiState, wanted: u64) -> Result<(), ApiError> {
    let bound = state.service.timeouts.request;
    if state.service.wait_applied(wanted, bound).await {
        return Ok(());
    }
    let millis = bound.as_millis() as u64;
    Err(ApiError::RevisionWaitTimeout { wanted, applied: state.service.applied_index(), millis })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn if_match(value: &str) -> HeaderMap {
        HeaderMap::from_iter([(header::IF_MATCH, HeaderValue::from_str(value).unwrap())])
    }

    #[test]
    fn weak_if_match_tags_never_match() {
        assert_eq!(if_match_version(&if_match("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match_release(&if_match("\"r3\"")).unwrap(), 3);
        for weak in ["W/\"3\"", " W/\"3\" "] {
            let err = if_match_version(&if_match(weak)).unwrap_err();
            let problem = err.problem();
            assert_eq!((problem.status, problem.code.as_str()), (412, "version_mismatch"));
            assert!(problem.detail.contains("weak"), "{}", problem.detail);
        }
        let problem = if_match_release(&if_match("W/\"r3\"")).unwrap_err().problem();
        assert_eq!((problem.status, problem.code.as_str()), (412, "release_conflict"));
        assert!(problem.detail.contains("release's ETag without W/"), "{}", problem.detail);
    }
}
