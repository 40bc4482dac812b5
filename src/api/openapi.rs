//! The OpenAPI 3.1 description of the client and admin HTTP APIs, served at
//! `GET /api/v1/openapi.json`. The document (`openapi.json` next to this file) is written by
//! hand from `api.rs`, `wire.rs`, `problem.rs` and the handlers; `tests/api_openapi.rs` fails
//! when a route, a method or a status is missing from it.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, compiled into the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
