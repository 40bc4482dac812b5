//! Admin API handlers for backup, restore and quorum-loss recovery (`service/backup.rs` does the
//! work; the file format is `crate::backup`).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;

use super::problem::ApiError;
use super::ApiState;
use crate::backup::{BackupError, Decoder};
use crate::wire;

pub const HEADER_REVISION: &str = "x-conflux-revision";
pub const HEADER_CLUSTER_ID: &str = "x-conflux-cluster-id";
pub const HEADER_NODE_ID: &str = "x-conflux-node-id";
pub const HEADER_CREATED_AT: &str = "x-conflux-backup-created-at";

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /admin/backup[?linearizable=true]`: the backup file, streamed. The headers say which
/// cluster and revision it holds before the body is read.
pub async fn backup(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest { code: "invalid_query", detail: e.body_text() })?;
    let linearizable = match params.get("linearizable").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest {
                code: "invalid_query",
                detail: format!("linearizable must be true or false, got {other:?}"),
            })
        }
    };
    let stream = state.service.backup(linearizable).await?;
    let meta = &stream.meta;
    let file = format!("attachment; filename=\"conflux-{}-r{}.backup\"", meta.cluster_id, meta.revision);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_DISPOSITION, header_value(&file));
    for (name, value) in [
        (HEADER_REVISION, meta.revision.to_string()),
        (HEADER_CLUSTER_ID, meta.cluster_id.clone()),
        (HEADER_NODE_ID, meta.source_node_id.to_string()),
        (HEADER_CREATED_AT, meta.created_at_ms.to_string()),
    ] {
        headers.insert(HeaderName::from_static(name), header_value(&value));
    }
    let chunks = futures::stream::unfold(stream.chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?.map(Bytes::from).map_err(|e| {
            // Ending the body with an error cuts the connection: the client sees a failed
            // transfer, never a file that looks complete.
            tracing::warn!(error = %e, "backup failed while streaming");
            std::io::Error::other(e.to_string())
        });
        Some((chunk, chunks))
    });
    Ok((headers, Body::from_stream(chunks)).into_response())
}

/// `POST /admin/restore`: the body is a backup file, read as it arrives and checked whole
/// (size bounded by `--max-snapshot-bytes`) before anything is changed.
pub async fn restore(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    state.service.check_pristine().await?;
    let limit = state.max_snapshot_bytes;
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if length.is_some_and(|length: u64| length > limit) {
        return Err(too_large(limit));
    }
    let mut decoder = Decoder::collecting(limit, length);
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest { code: "invalid_body", detail: e.to_string() })?;
        decoder.feed(&chunk).map_err(invalid_backup)?;
    }
    let backup = decoder.finish().map_err(invalid_backup)?;
    Ok(Json(state.service.restore(backup).await?).into_response())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge { limit: usize::try_from(limit).unwrap_or(usize::MAX) }
}

fn invalid_backup(e: BackupError) -> ApiError {
    match e {
        BackupError::TooLarge { limit } => too_large(limit),
        other => ApiError::BadRequest { code: "invalid_backup", detail: other.to_string() },
    }
}

/// `POST /admin/recover`: after quorum loss, this node becomes the single voter of a new cluster.
pub async fn recover(
    State(state): State<ApiState>,
    body: Result<Json<wire::RecoverRequest>, JsonRejection>,
) -> Result<Json<wire::RecoverResult>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest { code: "invalid_json", detail: e.body_text() })?;
    Ok(Json(state.service.recover(&request.cluster_id).await?))
}
