//! Admin API handlers (peer listener, cluster token required): status, bootstrap, membership and
//! leader transfer
//! (backup, restore and recover: `api/backup.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::problem::ApiError;
use super::ApiState;
use crate::service::membership::{MembershipChange, MembershipOutcome, MAX_LEARNER_WAIT};
use crate::types::NodeId;
use crate::wire;

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
        MembershipOutcome::Learner(_) | MembershipOutcome::Transferred(_) => Err(unexpected_outcome()),
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
        Some(text) => learner_wait(text)?,
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
        MembershipOutcome::Transferred(_) => Err(unexpected_outcome()),
    }
}

/// `?wait=` in seconds: checked against the bounds before it becomes a `Duration` (which panics
/// on values it cannot hold).
fn learner_wait(text: &str) -> Result<Duration, ApiError> {
    let max = MAX_LEARNER_WAIT.as_secs_f64();
    text.parse::<f64>()
        .ok()
        .filter(|seconds| (0.0..=max).contains(seconds))
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_wait",
            detail: format!("wait must be a number of seconds from 0 to {}, got {text:?}", MAX_LEARNER_WAIT.as_secs()),
        })
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

/// Hands leadership to the voter in the body (or the most caught-up one); any node forwards it
/// to the leader.
pub async fn transfer_leader(
    State(state): State<ApiState>,
    body: Result<Json<wire::TransferLeader>, JsonRejection>,
) -> Result<Json<wire::LeaderTransfer>, ApiError> {
    let to = json_body(body)?.to;
    match state.service.change_membership(MembershipChange::TransferLeader { to }).await? {
        MembershipOutcome::Transferred(done) => Ok(Json(done)),
        _ => Err(unexpected_outcome()),
    }
}

fn unexpected_outcome() -> ApiError {
    ApiError::Service(crate::service::Error::Storage("unexpected membership outcome".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_out_of_range_are_refused_not_panicked_on() {
        for text in ["1e20", "1e300", "NaN", "nan", "inf", "-inf", "-1", "-0.5", "600.001", "x", ""] {
            let err = learner_wait(text).unwrap_err();
            assert!(
                matches!(&err, ApiError::BadRequest { code: "invalid_wait", detail } if detail.contains("0 to 600"))
            );
        }
        assert_eq!(learner_wait("0").unwrap(), Duration::ZERO);
        assert_eq!(learner_wait("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(learner_wait("600").unwrap(), MAX_LEARNER_WAIT);
    }
}
