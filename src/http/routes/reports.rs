//! `/api/v1/reports/*`: a session's learning summary as JSON (for the backend, with its
//! API key) and as a PDF (for the session's own holder, with its access token). Rate
//! limited as the `reports` group.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::sessions::authorize;
use crate::http::error::ApiError;
use crate::http::extract::{ClientKey, SessionToken};
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::{SessionSummary, pdf};
use crate::store::{preferences, sessions};

async fn summary_of(state: &AppState, id: &str) -> Result<SessionSummary, ApiError> {
    let now = state.now_ms();
    sessions::summary(&state.store, id, now)
        .await?
        .ok_or_else(validate::session_not_found)
}

#[utoipa::path(get, path = "/api/v1/reports/session/{id}/summary", tag = "reports", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Session id (a UUID)")),
    responses(
        (status = 200, description = "The learning summary", body = SessionSummary),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn summary(
    State(state): State<AppState>,
    _key: ClientKey,
    Path(raw_id): Path<String>,
) -> Result<Json<SessionSummary>, ApiError> {
    let id = validate::session_id(&raw_id)?;
    Ok(Json(summary_of(&state, id.as_str()).await?))
}

#[utoipa::path(get, path = "/api/v1/reports/session/{id}/pdf", tag = "reports",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Session id (a UUID)"),
           ("X-Session-Access-Token" = String, Header, description = "The session's token")),
    responses(
        (status = 200, description = "The report", content_type = "application/pdf", body = Vec<u8>),
        (status = 403, description = "MISSING_SESSION_TOKEN or INVALID_SESSION_TOKEN", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn pdf(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    token: SessionToken,
) -> Result<Response, ApiError> {
    let session = authorize(&state, &raw_id, token).await?;
    let summary = summary_of(&state, &session.record.id).await?;
    // Its times in the parent's zone, as in the report email.
    let timezone = match session.parent_email.as_deref() {
        Some(email) => preferences::get(&state.store, email)
            .await?
            .and_then(|p| p.timezone),
        None => None,
    };
    let zone = preferences::DigestZones::from(&state.config.jobs).reading(timezone.as_deref());
    // Rendering is CPU work of a few milliseconds: keep it off the async workers.
    let bytes = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let bytes = pdf::render(&summary, zone);
        crate::metrics::pdf_rendered(started.elapsed());
        bytes
    })
    .await
    .map_err(ApiError::internal)?;
    let filename = format!("attachment; filename=\"session-{}.pdf\"", session.record.id);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&filename).unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        bytes,
    )
        .into_response())
}
