//! `/api/v1/stats/*`: public counts and the admin statistics. Rate limited as the `stats`
//! group.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::extract::ClientKey;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::stats::{self, Dashboard, Summary};

#[utoipa::path(get, path = "/api/v1/stats/dashboard", tag = "stats",
    responses(
        (status = 200, description = "Public counts", body = Dashboard),
        (status = 429, description = "Rate limited", body = crate::http::error::ErrorBody),
        (status = 500, description = "The database failed", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn dashboard(State(state): State<AppState>) -> Result<Json<Dashboard>, ApiError> {
    let started = std::time::Instant::now();
    let dashboard = stats::dashboard(&state.store).await?;
    crate::metrics::db_query("stats_dashboard", started.elapsed());
    Ok(Json(dashboard))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// The period, in days back from now (1 to 365; default 7).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 365)]
    pub days: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/stats/summary", tag = "stats", security(("api_key" = [])),
    params(SummaryQuery),
    responses(
        (status = 200, description = "Admin statistics for the period", body = Summary),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "`days` out of range", body = crate::http::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn summary(
    State(state): State<AppState>,
    _key: ClientKey,
    Query(query): Query<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    let days = validate::days(query.days.as_deref())?;
    let now = state.now_ms();
    let started = std::time::Instant::now();
    let summary = stats::summary(&state.store, days, now).await?;
    crate::metrics::db_query("stats_summary", started.elapsed());
    Ok(Json(summary))
}
