//! `POST /api/v1/sessions/{id}/complete`: closes the session, answers its summary, and
//! hands its report to the throttle (queued, throttled, duplicate, or not sent).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use herald_actors::email::{Email, EmailType, IdempotencyKey, SessionId};
use herald_actors::throttle::{Admission, SendRequest};

use super::{
    ParentSettings, address_or_blank, credentials, keep_parent, ledger_horizon, with_events,
};
use crate::http::error::ApiError;
use crate::http::extract::{SessionToken, Unparsed};
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::{SessionSummary, summarize};
use crate::store::sessions::{self};

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteSession {
    /// Overrides the address given at start, if the session is not yet completed; a repeat
    /// naming another address than the one it was completed with is refused
    /// (`PARENT_EMAIL_MISMATCH`).
    #[schema(schema_with = address_or_blank)]
    pub parent_email: Option<String>,
    /// The parent's time zone (IANA), kept with their preferences.
    #[schema(value_type = Option<crate::http::routes::preferences::TimeZone>)]
    pub parent_timezone: Option<String>,
    /// The parent's language (`pl`, `pt-BR`), kept with their preferences.
    #[schema(pattern = "^[ ]*[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}[ ]*$")]
    pub parent_locale: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionCompleted {
    pub session_id: String,
    pub completed_at: DateTime<Utc>,
    pub summary: SessionSummary,
    pub report_email: ReportEmail,
}

/// What happened to the parent's report email: `queued` (on its way), `suppressed` (the
/// parent turned session reports off), `duplicate` (already queued or sent, or decided
/// longer ago than the send ledger keeps, `RETENTION_SEND_LOG_DAYS`), `none` (the session
/// has no parent's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportEmail {
    /// On its way.
    Queued,
    /// The parent turned session reports off.
    Suppressed,
    /// Already queued or sent; or decided longer ago than the send ledger keeps
    /// (`RETENTION_SEND_LOG_DAYS`), so never decided again.
    Duplicate,
    /// The session has no parent address.
    None,
}

impl ReportEmail {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Suppressed => "suppressed",
            Self::Duplicate => "duplicate",
            Self::None => "none",
        }
    }
}

/// Decides the report email of a completed session through the throttle actor.
async fn report_email(
    state: &AppState,
    session_id: &SessionId,
    parent_email: Option<&str>,
    summary: &SessionSummary,
) -> Result<ReportEmail, ApiError> {
    let Some(raw) = parent_email else {
        return Ok(ReportEmail::None);
    };
    let email = Email::parse(raw).map_err(|e| validate::invalid("parent_email", e.to_string()))?;
    let request = SendRequest {
        idempotency_key: IdempotencyKey::session_report(&email, session_id),
        email: email.clone(),
        email_type: EmailType::SessionReport,
        session_id: Some(session_id.clone()),
        week_start: None,
        zone: None,
    };
    // Handed to the dispatcher with the email, so it need not read the session again.
    let key = request.idempotency_key.as_str().to_owned();
    state.reports.put(key.clone(), summary.clone());
    let admission = state.throttle.admit(request).await;
    if !matches!(admission, Ok(Admission::Queued)) {
        state.reports.take(&key);
    }
    let admission = admission?;
    let kind = EmailType::SessionReport.as_str();
    let outcome = match admission {
        Admission::Queued => {
            state.dispatcher.wake();
            ReportEmail::Queued
        }
        Admission::Duplicate => ReportEmail::Duplicate,
        Admission::Suppressed => {
            tracing::info!(
                "Email suppressed: session_reports disabled for {}",
                email.masked()
            );
            ReportEmail::Suppressed
        }
        Admission::Throttled {
            retry_after_ms,
            rule,
        } => {
            crate::metrics::email_decision(kind, "throttled");
            tracing::info!(recipient = %email.masked(), "session report throttled");
            return Err(ApiError::EmailThrottled {
                kind: "session reports",
                retry_after_seconds: (retry_after_ms.max(1) as u64).div_ceil(1000),
                limit: rule.limit,
                window: rule.window_text(),
            });
        }
    };
    crate::metrics::email_decision(kind, outcome.as_str());
    Ok(outcome)
}

#[utoipa::path(post, path = "/api/v1/sessions/{id}/complete", tag = "sessions",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Session id (a UUID)"),
           ("X-Session-Access-Token" = String, Header, description = "The session's token")),
    request_body(content = Option<CompleteSession>, description = "Optional"),
    responses(
        (status = 200, description = "Completed (a repeat changes nothing and returns the same)", body = SessionCompleted),
        (status = 409, description = "PARENT_EMAIL_MISMATCH: a repeat naming another parent address than the one the session was completed with", body = crate::http::error::ErrorBody),
        (status = 403, description = "MISSING_SESSION_TOKEN or INVALID_SESSION_TOKEN", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 422, description = "Invalid parent_email", body = crate::http::error::ErrorBody),
        (status = 429, description = "The parent's session-report throttle is spent (`limit`, `window`, `retry_after`); retry later to send the report", body = crate::http::error::ErrorBody),
        (status = 503, description = "The email throttle is restarting", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn complete(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    token: SessionToken,
    body: Unparsed,
) -> Result<Json<SessionCompleted>, ApiError> {
    // The caller first: one without the session's token learns nothing from the body.
    let (id, token) = credentials(&raw_id, token)?;
    let mut loaded = with_events(&state, &id, &token).await?;
    let body: CompleteSession = body.optional_json()?;
    let parent_email = validate::email("parent_email", body.parent_email)?;
    let parent = ParentSettings::read(body.parent_timezone, body.parent_locale)?;
    // The session is read with its events and completed only if no event arrived since, so
    // the summary covers exactly what the completion closed; if one did, read again. After
    // two such races the completion goes ahead and the events are read after it.
    let mut races = 0;
    let mut completed_here = false;
    let (session, events) = loop {
        let (mut session, events) = loaded;
        if session.record.completed_at_ms.is_some() {
            // Completed earlier, perhaps by a concurrent call: the stored state is the answer,
            // but not to a call that names another parent address. Its report was decided
            // for the address the session was completed with, and a session's address does
            // not change once it is: else whoever holds its token could have its report
            // mailed to one address after another.
            if let Some(email) = &parent_email
                && session.parent_email.as_deref() != Some(email.as_str())
            {
                return Err(ApiError::Conflict {
                    code: "PARENT_EMAIL_MISMATCH",
                    message: "The session was completed with another parent address, which its \
                              report was decided for; a completed session's address does not change."
                        .to_owned(),
                });
            }
            break (session, events);
        }
        let events_seen = (races < 2).then_some(events.len());
        let completed_at = state.now_ms();
        let completed_now = sessions::complete(
            &state.writes,
            id.as_str(),
            parent_email.as_ref().map(|e| e.as_str()),
            completed_at,
            events_seen,
        )
        .await?;
        if completed_now {
            completed_here = true;
            crate::metrics::session_completed();
            tracing::info!("session completed");
            // What was just written, without reading it back.
            session.record.completed_at_ms = Some(completed_at);
            if let Some(email) = &parent_email {
                session.parent_email = Some(email.as_str().to_owned());
            }
            let events = match events_seen {
                Some(_) => events,
                None => sessions::events(&state.store, id.as_str()).await?,
            };
            break (session, events);
        }
        races += 1;
        loaded = with_events(&state, &id, &token).await?;
    };
    if let Some(email) = session.parent_email.as_deref() {
        keep_parent(&state, email, parent, state.now_ms()).await?;
    }
    let summary = summarize(&session.record, &events, state.now_ms());
    let decided_long_ago = !completed_here
        && session
            .record
            .completed_at_ms
            .is_some_and(|at| at < ledger_horizon(&state));
    let report_email = match session.parent_email.as_deref() {
        Some(_) if decided_long_ago => ReportEmail::Duplicate,
        parent => report_email(&state, &id, parent, &summary).await?,
    };
    Ok(Json(SessionCompleted {
        session_id: id.to_string(),
        completed_at: summary.completed_at.unwrap_or_default(),
        summary,
        report_email,
    }))
}
