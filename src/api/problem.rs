//! The single mapping from every API-level failure to an HTTP status and an
//! `application/problem+json` body with a stable `code`. 5xx bodies never carry internals.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::model::ModelError;
use crate::service;
use crate::wire::Problem;

/// Everything a client or admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] service::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("version mismatch: If-Match named {expected}, current is {}", current.map_or("none".to_string(), |v| v.to_string()))]
    VersionMismatch { expected: u64, current: Option<u64> },
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("unsupported Content-Type {0:?}: send application/json, application/yaml, application/toml, text/x-java-properties or text/plain, or pass ?format=")]
    UnsupportedMediaType(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("missing or wrong cluster token: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
}

impl ApiError {
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
            },
            ApiError::Model(e) => match e {
                ModelError::BadLength { .. } | ModelError::BadCharacters { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_name")
                }
                ModelError::UnknownFormat(_) => (StatusCode::BAD_REQUEST, "unknown_format"),
                ModelError::NotUtf8 { .. } | ModelError::InvalidJson { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_content")
                }
            },
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::VersionMismatch { .. } => (StatusCode::PRECONDITION_FAILED, "version_mismatch"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NoRoute(_) => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = if status.is_server_error() && matches!(self, ApiError::Service(service::Error::Storage(_))) {
            tracing::error!(error = %self, "request failed");
            "internal error; see the node's log".to_string()
        } else {
            self.to_string()
        };
        let problem = Problem {
            kind: format!("https://conflux.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            code: code.to_string(),
            detail,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
