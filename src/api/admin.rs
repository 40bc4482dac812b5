//! Admin API handlers (peer listener, cluster token required): status, bootstrap and membership.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::problem::ApiError;
use super::ApiState;
use crate::service::membership::{MembershipChange, MembershipOutcome};
use crate::types::NodeId;
use crate::wire;

/// The longest `?wait=` an add-learner call may ask for.
const MAX_LEARNER_WAIT: Duration = Duration::from_secs(600);

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| ApiError::BadRequest { code: "invalid_json", detail: e.body_text() })
}

pub async fn status(State(state): State<ApiState>) -> Json<wire::ClusterStatus> {
    Json(state.service.status())
}

pub async fn init(State(state): State<ApiState>) -> Result<Json<wire::InitResult>, ApiError> {
    Ok(Json(state.service.init().await?))
}

fn membership(outcome: MembershipOutcome) -> Result<Json<wire::Membership>, ApiError> {
    match outcome {
        MembershipOutcome::Changed(m) => Ok(Json(m)),
        MembershipOutcome::Learner(_) => {
            Err(ApiError::Service(crate::service::Error::Storage("unexpected membership outcome".into())))
        }
    }
}

pub async fn add_learner(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
    body: Result<Json<wire::AddLearner>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest { code: "invalid_query", detail: e.body_text() })?;
    let wait = match params.get("wait") {
        None => Duration::ZERO,
        Some(text) => text
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .filter(|d| *d <= MAX_LEARNER_WAIT)
            .ok_or_else(|| ApiError::BadRequest {
                code: "invalid_wait",
                detail: format!("wait must be a number of seconds from 0 to {}", MAX_LEARNER_WAIT.as_secs()),
            })?,
    };
    let request = json_body(body)?;
    let change = MembershipChange::AddLearner {
        node_id: request.node_id,
        peer_url: request.peer_url,
        wait_millis: wait.as_millis() as u64,
    };
    match state.service.change_membership(change).await? {
        MembershipOutcome::Learner(result) => {
            let status = if wait.is_zero() || result.caught_up { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok((status, Json(result)).into_response())
        }
        MembershipOutcome::Changed(m) => Ok(Json(m).into_response()),
    }
}

pub async fn set_voters(
    State(state): State<ApiState>,
    body: Result<Json<wire::SetVoters>, JsonRejection>,
) -> Result<Json<wire::Membership>, ApiError> {
    let voters: BTreeSet<NodeId> = json_body(body)?.voters.into_iter().collect();
    membership(state.service.change_membership(MembershipChange::SetVoters { voters }).await?)
}

pub async fn remove_member(
    State(state): State<ApiState>,
    path: Result<Path<NodeId>, PathRejection>,
) -> Result<Json<wire::Membership>, ApiError> {
    let Path(node_id) = path.map_err(|e| ApiError::BadRequest { code: "invalid_path", detail: e.body_text() })?;
    membership(state.service.change_membership(MembershipChange::Remove { node_id }).await?)
}
