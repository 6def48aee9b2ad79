//! `GET /api/v1/ops/metrics?days=N`: the seed's JSON snapshot of the service's health
//! numbers, for scripts and humans who do not read Prometheus.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::stats::SummaryQuery;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::stats;

#[derive(Serialize, ToSchema)]
pub struct OpsNumbers {
    pub period_days: i64,
    pub sessions_started: i64,
    pub sessions_completed: i64,
    pub emails_sent: i64,
    pub emails_suppressed: i64,
    pub emails_throttled: i64,
    pub emails_failed: i64,
    /// Requests refused by the rate limiter since this process started.
    pub rate_limit_hits: u64,
    /// Mean latency of timed database round trips since this process started.
    pub avg_sql_latency_ms: f64,
}

#[derive(Serialize, ToSchema)]
pub struct OpsMetrics {
    pub timestamp: DateTime<Utc>,
    pub metrics: OpsNumbers,
}

#[utoipa::path(get, path = "/api/v1/ops/metrics", tag = "ops", security(("api_key" = [])),
    params(SummaryQuery),
    responses(
        (status = 200, description = "The snapshot", body = OpsMetrics),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "`days` out of range", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn snapshot(
    State(state): State<AppState>,
    Query(query): Query<SummaryQuery>,
) -> Result<Json<OpsMetrics>, ApiError> {
    let days = validate::days(query.days.as_deref())?;
    let now = state.now_ms();
    let summary = stats::summary(&state.store, days, now).await?;
    let emails = |status: &str| summary.emails_by_outcome.get(status).copied().unwrap_or(0);
    Ok(Json(OpsMetrics {
        timestamp: crate::store::instant(now),
        metrics: OpsNumbers {
            period_days: days,
            sessions_started: summary.sessions_started,
            sessions_completed: summary.sessions_completed,
            emails_sent: emails("sent"),
            emails_suppressed: emails("suppressed"),
            emails_throttled: emails("throttled"),
            emails_failed: emails("failed"),
            rate_limit_hits: crate::metrics::rate_limit_hits(),
            avg_sql_latency_ms: crate::metrics::avg_sql_latency_ms(),
        },
    }))
}
