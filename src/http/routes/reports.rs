//! `/api/v1/reports/*`: a session's learning summary as JSON (for the backend, with its
//! API key) and as a PDF (for the session's own holder, with its access token). Rate
//! limited as the `reports` group.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use herald_actors::email::{Email, IdempotencyKey};
use http::{HeaderValue, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::sessions::authorize;
use crate::http::error::ApiError;
use crate::http::extract::{ClientKey, SessionToken};
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::{SessionSummary, summarize};
use crate::store::instant;
use crate::store::ledger::{self, LedgerRow};
use crate::store::{preferences, sessions};

async fn summary_of(state: &AppState, id: &str) -> Result<SessionSummary, ApiError> {
    let now = state.now_ms();
    sessions::summary(&state.store, id, now)
        .await?
        .ok_or_else(validate::session_not_found)
}

/// A session's learning summary, and what became of its report email.
#[derive(Serialize, ToSchema)]
pub struct SessionReport {
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// The report email as the send ledger has it now; null while the session is open, when
    /// it has no parent's address, or once the ledger row is older than it keeps
    /// (`RETENTION_SEND_LOG_DAYS`).
    pub report_email: Option<ReportEmailState>,
}

/// Where a session's report email stands.
#[derive(Serialize, ToSchema)]
pub struct ReportEmailState {
    /// `pending` (queued, or waiting to be tried again after a failed attempt), `sending`,
    /// `sent`, `failed` (its attempts are spent; an operator can send it again),
    /// `suppressed` (not sent: `reason` says why, such as the parent's opt-out or a bounce),
    /// or `throttled` (the parent's report throttle was spent; completing the session again
    /// later sends it).
    pub status: String,
    pub reason: Option<String>,
    /// Attempts made so far.
    pub attempts: i64,
    pub sent_at: Option<DateTime<Utc>>,
    /// When the next attempt is due, for an email waiting after a failed attempt.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<LedgerRow> for ReportEmailState {
    fn from(row: LedgerRow) -> Self {
        Self {
            status: row.status,
            reason: row.reason,
            attempts: row.attempts,
            sent_at: row.sent_at_ms.map(instant),
            next_attempt_at: row.next_attempt_at_ms.map(instant),
            updated_at: instant(row.updated_at_ms),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/reports/session/{id}/summary", tag = "reports", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Session id (a UUID)")),
    responses(
        (status = 200, description = "The learning summary and the report email's status", body = SessionReport),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn summary(
    State(state): State<AppState>,
    _key: ClientKey,
    Path(raw_id): Path<String>,
) -> Result<Json<SessionReport>, ApiError> {
    let id = validate::session_id(&raw_id)?;
    let (session, events) = sessions::with_events(&state.store, id.as_str())
        .await?
        .ok_or_else(validate::session_not_found)?;
    let summary = summarize(&session.record, &events, state.now_ms());
    let report_email = match (&session.parent_email, session.record.completed_at_ms) {
        (Some(address), Some(_)) => match Email::parse(address) {
            Ok(email) => {
                let key = IdempotencyKey::session_report(&email, &id);
                ledger::by_key(&state.store, key.as_str())
                    .await?
                    .map(ReportEmailState::from)
            }
            Err(_) => None,
        },
        _ => None,
    };
    Ok(Json(SessionReport {
        summary,
        report_email,
    }))
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
    let recipient = match session.parent_email.as_deref() {
        Some(email) => preferences::get(&state.store, email).await?,
        None => None,
    };
    let (timezone, locale) = recipient.map_or((None, None), |p| (p.timezone, p.locale));
    let zone = preferences::DigestZones::from(&state.config.jobs).reading(timezone.as_deref());
    // Rendering is CPU work of a few milliseconds: keep it off the async workers. In the
    // parent's language, as in the report email.
    let templates = state.config.email.templates.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let bytes = templates
            .for_locale(locale.as_deref())
            .report_pdf(&summary, zone);
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
