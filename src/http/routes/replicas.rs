//! `GET /admin/replicas`: the replicas serving now, and which of the settings every replica
//! must share each has otherwise than the one answering.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct ReplicaView {
    /// `HERALD_INSTANCE`.
    pub instance: String,
    pub started_at: DateTime<Utc>,
    /// Its last renewal; a replica not seen for 90 s is no longer listed.
    pub seen_at: DateTime<Utc>,
    /// The replica answering.
    pub this: bool,
    /// The shared settings (DEPLOYMENT.md) it has otherwise than the replica answering, by
    /// name; empty when they agree. Values are never shown.
    pub differing: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Replicas {
    /// The replica answering.
    pub instance: String,
    pub replicas: Vec<ReplicaView>,
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[utoipa::path(get, path = "/admin/replicas", tag = "admin", security(("api_key" = [])),
    responses(
        (status = 200, description = "The replicas serving now and how their shared settings compare", body = Replicas),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 503, description = "The database is unreachable", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Replicas>, ApiError> {
    let peers = state.replica.peers(&state.store, state.now_ms()).await?;
    Ok(Json(Replicas {
        instance: state.replica.instance.clone(),
        replicas: peers
            .into_iter()
            .map(|peer| ReplicaView {
                instance: peer.instance,
                started_at: instant(peer.started_at_ms),
                seen_at: instant(peer.seen_at_ms),
                this: peer.this,
                differing: peer.differing,
            })
            .collect(),
    }))
}
