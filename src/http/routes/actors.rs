//! `GET /admin/actors`: the supervision tree as on-call sees it.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use herald_supervision::ChildStatus;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::redact::mask_emails_in;

#[derive(Serialize, ToSchema)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
#[schema(no_recursion)]
pub struct ActorStatus {
    pub id: String,
    /// `running`, `restarting` or `stopped`.
    pub status: &'static str,
    pub restarts: u32,
    pub last_failure: Option<Failure>,
    pub children: Vec<ActorStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct SupervisionTree {
    pub supervisor: String,
    pub alive: bool,
    pub children: Vec<ActorStatus>,
}

fn to_view(status: ChildStatus) -> ActorStatus {
    ActorStatus {
        id: status.id,
        status: status.state.as_str(),
        restarts: status.restarts,
        last_failure: status.last_failure.map(|(at, reason)| Failure {
            at: at.into(),
            reason: mask_emails_in(&reason),
        }),
        children: status.children.into_iter().map(to_view).collect(),
    }
}

#[utoipa::path(get, path = "/admin/actors", tag = "admin", security(("api_key" = [])),
    responses(
        (status = 200, description = "The supervision tree", body = SupervisionTree),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 503, description = "The root supervisor did not answer", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>) -> Result<Json<SupervisionTree>, ApiError> {
    let children = state
        .root
        .status()
        .await
        .map_err(|e| ApiError::Unavailable {
            message: format!("the supervision tree did not answer: {e}"),
            retry_after_seconds: 1,
        })?;
    Ok(Json(SupervisionTree {
        supervisor: state.root.name().to_owned(),
        alive: state.root.is_alive(),
        children: children.into_iter().map(to_view).collect(),
    }))
}
