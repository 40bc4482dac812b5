//! The single mapping from every API-level failure to an HTTP status and an
//! `application/problem+json` body with a stable `code`. 5xx bodies never carry internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Unauthenticated;
use crate::command::CommandResponse;
use crate::model::access::AccessError;
use crate::model::format::{ContentError, UnknownFormat};
use crate::model::hierarchy::QuotaError;
use crate::model::release::RuleError;
use crate::model::schema::{SchemaError, Violation};
use crate::model::ModelError;
use crate::service;
use crate::store::StoreError;
use crate::watch::{Availability, WatchError};
use crate::wire::{Problem, ProblemDetail};

/// Everything a client or admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] service::Error),
    #[error(transparent)]
    Name(#[from] ModelError),
    #[error(transparent)]
    UnknownFormat(#[from] UnknownFormat),
    #[error("{0}")]
    Content(#[from] ContentError),
    #[error("the content does not satisfy the config's JSON Schema ({} violation(s)); see errors", .0.len())]
    SchemaViolation(Vec<Violation>),
    #[error(transparent)]
    InvalidSchema(#[from] SchemaError),
    #[error("the config's format is text, which a JSON Schema cannot check; write json, yaml, toml or properties")]
    SchemaNeedsStructure,
    #[error("invalid rules: {0}")]
    InvalidRules(String),
    #[error("invalid labels or client id: {0}")]
    InvalidLabels(RuleError),
    #[error(transparent)]
    InvalidQuota(#[from] QuotaError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("version mismatch: If-Match named {expected}, current is {}", current.map_or("none".to_string(), |v| v.to_string()))]
    VersionMismatch { expected: u64, current: Option<u64> },
    #[error("release conflict: If-Match named release {expected}, current is {}; read the release again and reapply your change", current.map_or("none".to_string(), |v| v.to_string()))]
    ReleaseConflict { expected: u64, current: Option<u64> },
    #[error(
        "If-Match named a weak tag ({tag}), which never matches: If-Match uses strong comparison (RFC 9110); send the {} ETag without W/",
        if *release { "release's" } else { "version's" }
    )]
    WeakIfMatch { tag: String, release: bool },
    #[error(
        "changing a release needs If-Match with the current release's ETag (GET .../release answers it, like \"r3\")"
    )]
    PreconditionRequired,
    #[error("{0}")]
    NotEmpty(String),
    #[error("the config's schema or format changed while this write was being checked; retry")]
    SchemaChanged,
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("unsupported Content-Type {0:?}: send application/json, application/yaml, application/toml, text/x-java-properties or text/plain, or pass ?format=")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content of {size} bytes is over the tenant's max_config_bytes quota of {limit} bytes")]
    ConfigTooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("this node had applied revision {applied}, not {wanted}, within {millis} ms; retry or ask another node")]
    RevisionWaitTimeout { wanted: u64, applied: u64, millis: u64 },
    #[error("{0}")]
    TooManyWatchers(String),
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    #[error(transparent)]
    Unauthenticated(#[from] Unauthenticated),
    #[error(transparent)]
    Access(AccessError),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("this Idempotency-Key was used in the last 24 hours for a different request; use a new key per change")]
    IdempotencyKeyReused,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    Overloaded(String),
    #[error("the request body did not arrive within {millis} ms")]
    BodyReadTimeout { millis: u64 },
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Service(e.into())
    }
}

impl ApiError {
    /// The error a refused command stands for; `None` for the answers that are successes.
    pub fn from_refusal(response: &CommandResponse, if_match: Option<u64>) -> Option<ApiError> {
        let expected = if_match.unwrap_or_default();
        Some(match response {
            CommandResponse::Put { .. }
            | CommandResponse::Done { .. }
            | CommandResponse::Written { .. }
            | CommandResponse::Deleted { .. }
            | CommandResponse::Released { .. } => return None,
            CommandResponse::NotFound { level, name } => ApiError::NotFound(format!("{} {name}", level.name())),
            CommandResponse::VersionMismatch { current } => ApiError::VersionMismatch { expected, current: *current },
            CommandResponse::ReleaseMismatch { current } => ApiError::ReleaseConflict { expected, current: *current },
            CommandResponse::RulesInvalid { detail } => ApiError::InvalidRules(detail.clone()),
            CommandResponse::ChecksOutdated => ApiError::SchemaChanged,
            CommandResponse::NotEmpty { detail } => ApiError::NotEmpty(detail.clone()),
            CommandResponse::TooLarge { size, limit } => ApiError::ConfigTooLarge { size: *size, limit: *limit },
            CommandResponse::QuotaExceeded { detail } => ApiError::QuotaExceeded(detail.clone()),
            CommandResponse::AlreadyExists { detail } => ApiError::AlreadyExists(detail.clone()),
            CommandResponse::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
        })
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use service::Error as S;
        match self {
            ApiError::Service(e) => match e {
                S::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
                S::LeaderUnreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable"),
                S::QuorumUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "quorum_unavailable"),
                S::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                S::Stopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_stopped"),
                S::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
                S::AlreadyInitialized => (StatusCode::CONFLICT, "already_initialized"),
                S::NotInitialized => (StatusCode::CONFLICT, "not_initialized"),
                S::UnknownMember(_) => (StatusCode::NOT_FOUND, "unknown_member"),
                S::InvalidMembership(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_membership"),
                S::MembershipInProgress => (StatusCode::CONFLICT, "membership_in_progress"),
                S::InvalidCommand(_) => (StatusCode::BAD_REQUEST, "invalid_command"),
                S::OutcomeUnknown { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                S::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                S::ClusterIdMismatch { .. } => (StatusCode::CONFLICT, "cluster_id_mismatch"),
                S::QuorumAvailable => (StatusCode::CONFLICT, "quorum_available"),
                S::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            },
            ApiError::Name(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            ApiError::UnknownFormat(_) => (StatusCode::BAD_REQUEST, "unknown_format"),
            ApiError::Content(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_content"),
            ApiError::SchemaViolation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
            ApiError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema"),
            ApiError::SchemaNeedsStructure => (StatusCode::UNPROCESSABLE_ENTITY, "schema_needs_structure"),
            ApiError::InvalidRules(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"),
            ApiError::InvalidLabels(_) => (StatusCode::BAD_REQUEST, "invalid_labels"),
            ApiError::InvalidQuota(_) => (StatusCode::BAD_REQUEST, "invalid_quota"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
            ApiError::ReleaseConflict { .. } => (StatusCode::PRECONDITION_FAILED, "release_conflict"),
            ApiError::WeakIfMatch { release: false, .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
            ApiError::WeakIfMatch { release: true, .. } => (StatusCode::PRECONDITION_FAILED, "release_conflict"),
            ApiError::PreconditionRequired => (StatusCode::PRECONDITION_REQUIRED, "precondition_required"),
            ApiError::NotEmpty(_) => (StatusCode::CONFLICT, "not_empty"),
            ApiError::SchemaChanged => (StatusCode::CONFLICT, "schema_changed"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::ConfigTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "config_too_large"),
            ApiError::QuotaExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded"),
            ApiError::RevisionWaitTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "revision_wait_timeout"),
            ApiError::TooManyWatchers(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_watchers"),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            ApiError::Unauthenticated(Unauthenticated::Store(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Access(AccessError::RoleTooSmall { .. } | AccessError::OutOfScope { .. }) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            ApiError::Access(AccessError::BadRole(_) | AccessError::BadScope(_) | AccessError::BadTokenRequest(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_token_request")
            }
            ApiError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            ApiError::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::BodyReadTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_read_timeout"),
        }
    }

    /// The located errors this problem carries.
    fn details(&self) -> Vec<ProblemDetail> {
        let detail = |message: String| ProblemDetail { message, pointer: None, line: None, column: None };
        match self {
            ApiError::Content(e) => vec![ProblemDetail { line: e.line, column: e.column, ..detail(e.message.clone()) }],
            ApiError::SchemaViolation(violations) => violations
                .iter()
                .map(|v| ProblemDetail { pointer: Some(v.pointer.clone()), ..detail(v.message.clone()) })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl ApiError {
    /// What a client is told about a server-side failure: what to do, never peer addresses or
    /// error text from inside the node (those are logged).
    fn public_detail(&self) -> String {
        use service::Error as S;
        match self {
            ApiError::Service(S::LeaderUnreachable { .. }) => {
                "the leader could not be reached and nothing was sent to it; retry shortly".into()
            }
            ApiError::Service(S::OutcomeUnknown { .. }) => "the leader did not answer: the write may or may not have \
                been applied; read the config before retrying it"
                .into(),
            ApiError::Service(S::Stopped(_)) => {
                "this node is shutting down or stopped after a fatal error; use another node".into()
            }
            ApiError::Service(S::Storage(_)) => "internal error; see the node's log".into(),
            other => other.to_string(),
        }
    }

    /// The problem document this error answers with (also sent in a watch stream's last event).
    pub fn problem(&self) -> Problem {
        let (status, code) = self.status_and_code();
        let detail = if status.is_server_error() {
            let detail = self.public_detail();
            if detail != self.to_string() {
                tracing::warn!(code, error = %self, "request failed");
            }
            detail
        } else {
            self.to_string()
        };
        Problem {
            kind: format!("https://conflux.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            code: code.to_string(),
            detail,
            errors: self.details(),
        }
    }
}

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Unavailable(availability) => ApiError::unavailable(availability),
            WatchError::TooManyWatchers { .. } => ApiError::TooManyWatchers(e.to_string()),
            WatchError::NotFound(key) => ApiError::NotFound(format!("config {key}")),
            WatchError::NoEnv(namespace) => ApiError::NotFound(format!("env {namespace}")),
            WatchError::TooManyConfigs { .. } => {
                ApiError::BadRequest { code: "too_many_configs", detail: e.to_string() }
            }
            WatchError::Name(e) => ApiError::Name(e),
            WatchError::Service(e) => ApiError::Service(e),
        }
    }
}

impl ApiError {
    /// A node that cannot serve watchers right now; its watchers should go to another node.
    pub fn unavailable(availability: Availability) -> ApiError {
        let (code, why) = match availability {
            Availability::ShuttingDown => ("shutting_down", "this node is shutting down"),
            Availability::NoLeader | Availability::Serving => {
                ("no_leader", "this node has known no leader for a while, so its state may be stale")
            }
        };
        ApiError::Unavailable { code, detail: format!("{why}; watch through another node") }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_details_carry_no_peer_urls_or_internal_error_text() {
        let internal = "error sending request for url (http://10.1.2.3:7001/raft/write): connection reset";
        let errors = [
            service::Error::LeaderUnreachable { leader_id: 2, reason: internal.into() },
            service::Error::OutcomeUnknown { leader_id: 2, reason: internal.into() },
            service::Error::Stopped(format!("fatal: storage error: {internal}")),
            service::Error::Storage(internal.into()),
        ];
        for error in errors {
            let problem = ApiError::Service(error.clone()).problem();
            assert!(problem.status >= 500, "{error:?}");
            assert!(!problem.detail.contains("10.1.2.3") && !problem.detail.contains("raft"), "{}", problem.detail);
            assert!(!problem.detail.contains("reset"), "{}", problem.detail);
        }
    }

    #[test]
    fn a_write_whose_answer_was_lost_is_a_timeout_that_says_to_read_before_retrying() {
        let lost = ApiError::Service(service::Error::OutcomeUnknown { leader_id: 2, reason: "timed out".into() });
        let problem = lost.problem();
        assert_eq!((problem.status, problem.code.as_str()), (504, "timeout"));
        assert!(problem.detail.contains("may or may not have been applied"), "{}", problem.detail);
        assert!(problem.detail.contains("read"), "{}", problem.detail);
        let response = lost.into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none(), "no invitation to retry blindly");
        let unreachable = ApiError::Service(service::Error::LeaderUnreachable { leader_id: 2, reason: "x".into() });
        let response = unreachable.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(header::RETRY_AFTER).is_some());
    }
}
