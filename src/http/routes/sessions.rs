//! `/api/v1/sessions/*`: start a session, record its events, complete it.
//!
//! A session's access token is random, returned once, stored only as a SHA-256 hash and
//! compared in constant time; a token opens its own session and no other.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use herald_actors::email::{Email, EmailType, IdempotencyKey, SessionId};
use herald_actors::throttle::{Admission, SendRequest};

use crate::http::error::ApiError;
use crate::http::extract::{Json as JsonBody, OptionalJson, SessionToken};
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::{EventRecord, SessionSummary, summarize};
use crate::secret::{hex, random_token};
use crate::store::instant;
use crate::store::sessions::{self, EventOutcome, NewEvent, NewSession, SessionRow};

const NAME_MAX: usize = 100;
const DETAIL_MAX: usize = 2_000;
const KIND_MAX: usize = 32;

fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The oldest instant whose report decision the send ledger surely still holds: a session
/// completed before it has had its report decided, and with the row perhaps purged,
/// deciding again could send it a second time.
fn ledger_horizon(state: &AppState) -> i64 {
    crate::jobs::purge::send_log_cutoff(state.config.jobs.retention.send_log_days, state.now_ms())
}

/// Loads the session `raw_id` and checks `token` against it: 403 `MISSING_SESSION_TOKEN`,
/// 404 `SESSION_NOT_FOUND`, 403 `INVALID_SESSION_TOKEN`.
#[tracing::instrument(skip_all)]
pub async fn authorize(
    state: &AppState,
    raw_id: &str,
    token: SessionToken,
) -> Result<SessionRow, ApiError> {
    let (id, token) = credentials(raw_id, token)?;
    let session = sessions::get(&state.store, id.as_str())
        .await?
        .ok_or_else(validate::session_not_found)?;
    check_token(&session, &token)?;
    Ok(session)
}

/// The session id and the presented token, before anything is read.
fn credentials(raw_id: &str, token: SessionToken) -> Result<(SessionId, String), ApiError> {
    let token = token.0.ok_or(ApiError::Forbidden {
        code: "MISSING_SESSION_TOKEN",
        message: "The X-Session-Access-Token header is required.".to_owned(),
    })?;
    Ok((validate::session_id(raw_id)?, token))
}

/// The session with its events, once `token` is checked against it.
async fn with_events(
    state: &AppState,
    id: &SessionId,
    token: &str,
) -> Result<(SessionRow, Vec<EventRecord>), ApiError> {
    let (session, events) = sessions::with_events(&state.store, id.as_str())
        .await?
        .ok_or_else(validate::session_not_found)?;
    check_token(&session, token)?;
    Ok((session, events))
}

fn check_token(session: &SessionRow, token: &str) -> Result<(), ApiError> {
    let presented = hash_token(token);
    if !bool::from(presented.as_bytes().ct_eq(session.token_hash.as_bytes())) {
        return Err(ApiError::Forbidden {
            code: "INVALID_SESSION_TOKEN",
            message: "The session access token is not valid for this session.".to_owned(),
        });
    }
    Ok(())
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// Up to 100 characters, no control characters.
    #[schema(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub learner_name: Option<String>,
    /// Up to 100 characters, no control characters.
    #[schema(max_length = 100, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub subject: Option<String>,
    /// Where the session report is sent on completion.
    #[schema(schema_with = address_or_blank)]
    pub parent_email: Option<String>,
    /// The parent's time zone (IANA), kept with their preferences: their digest comes at
    /// their local time. Needs `parent_email`.
    #[schema(value_type = Option<super::preferences::TimeZone>)]
    pub parent_timezone: Option<String>,
}

/// An email address, or a blank string meaning none.
fn address_or_blank() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[ \\t\\r\\n]*$")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

#[derive(Serialize, ToSchema)]
pub struct SessionStarted {
    pub session_id: String,
    /// Returned once; send it as `X-Session-Access-Token` for this session.
    pub session_access_token: String,
    pub started_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/sessions/start", tag = "sessions",
    request_body(content = Option<StartSession>, description = "Optional"),
    responses(
        (status = 201, description = "Started", body = SessionStarted),
        (status = 400, description = "Malformed JSON", body = crate::http::error::ErrorBody),
        (status = 422, description = "A field breaks its rule; `field` names it", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn start(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<StartSession>,
) -> Result<(StatusCode, Json<SessionStarted>), ApiError> {
    let learner_name = validate::text("learner_name", body.learner_name, NAME_MAX, false)?;
    let subject = validate::text("subject", body.subject, NAME_MAX, false)?;
    let parent_email = validate::email("parent_email", body.parent_email)?;
    let parent_timezone = super::preferences::timezone("parent_timezone", body.parent_timezone)?;
    let id = SessionId::random();
    let token = random_token();
    let started_at_ms = state.now_ms();
    sessions::insert(
        &state.store,
        &NewSession {
            id: id.as_str(),
            token_hash: &hash_token(&token),
            learner_name: learner_name.as_deref(),
            subject: subject.as_deref(),
            parent_email: parent_email.as_ref().map(|e| e.as_str()),
            started_at_ms,
        },
    )
    .await?;
    crate::metrics::session_started();
    tracing::info!(session_id = %id, "session started");
    if let (Some(email), Some(zone)) = (&parent_email, parent_timezone) {
        keep_timezone(&state, email.as_str(), zone, started_at_ms).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(SessionStarted {
            session_id: id.to_string(),
            session_access_token: token,
            started_at: instant(started_at_ms),
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEventBody {
    /// What happened: `step`, `hint`, `answer`, … (1-32 of a-z, 0-9, `_`; upper case is
    /// taken as lower case).
    #[schema(pattern = "^[ \\t\\r\\n]*[A-Za-z0-9_]{1,32}[ \\t\\r\\n]*$")]
    pub kind: String,
    /// Up to 2,000 characters; tabs and line breaks allowed, no other control characters.
    #[schema(max_length = 2000, pattern = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$")]
    pub detail: Option<String>,
    /// For answers: whether it was right.
    pub correct: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct EventRecorded {
    pub event_id: String,
    pub session_id: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
}

fn session_completed() -> ApiError {
    ApiError::Conflict {
        code: "SESSION_COMPLETED",
        message: "The session is completed; it takes no more events.".to_owned(),
    }
}

#[utoipa::path(post, path = "/api/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Session id (a UUID)"),
           ("X-Session-Access-Token" = String, Header, description = "The session's token")),
    request_body = NewEventBody,
    responses(
        (status = 201, description = "Recorded", body = EventRecorded),
        (status = 403, description = "MISSING_SESSION_TOKEN or INVALID_SESSION_TOKEN", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 409, description = "SESSION_COMPLETED, or SESSION_FULL: the session holds 10,000 events, the most one takes", body = crate::http::error::ErrorBody),
        (status = 422, description = "A field breaks its rule", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn add_event(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    token: SessionToken,
    JsonBody(body): JsonBody<NewEventBody>,
) -> Result<(StatusCode, Json<EventRecorded>), ApiError> {
    let session = authorize(&state, &raw_id, token).await?;
    let kind = body.kind.trim().to_ascii_lowercase();
    if kind.is_empty()
        || kind.len() > KIND_MAX
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(validate::invalid(
            "kind",
            "kind is 1-32 of a-z, 0-9 and _ (e.g. step, hint, answer)",
        ));
    }
    let detail = validate::text("detail", body.detail, DETAIL_MAX, true)?;
    if session.record.completed_at_ms.is_some() {
        return Err(session_completed());
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    let at_ms = state.now_ms();
    let outcome = sessions::add_event(
        &state.store,
        &NewEvent {
            id: &event_id,
            session_id: &session.record.id,
            kind: &kind,
            detail: detail.as_deref(),
            correct: body.correct,
            at_ms,
        },
    )
    .await?;
    match outcome {
        EventOutcome::Recorded => Ok((
            StatusCode::CREATED,
            Json(EventRecorded {
                event_id,
                session_id: session.record.id,
                kind,
                created_at: instant(at_ms),
            }),
        )),
        EventOutcome::SessionCompleted => Err(session_completed()),
        EventOutcome::SessionFull => Err(ApiError::Conflict {
            code: "SESSION_FULL",
            message: format!(
                "The session holds {} events, the most one takes; complete it and start another.",
                sessions::MAX_EVENTS
            ),
        }),
        EventOutcome::SessionMissing => Err(validate::session_not_found()),
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteSession {
    /// Overrides the address given at start, if the session is not yet completed.
    #[schema(schema_with = address_or_blank)]
    pub parent_email: Option<String>,
    /// The parent's time zone (IANA), kept with their preferences.
    #[schema(value_type = Option<super::preferences::TimeZone>)]
    pub parent_timezone: Option<String>,
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
/// Keeps a parent's time zone, as the calling backend gave it, with their preferences.
async fn keep_timezone(
    state: &AppState,
    email: &str,
    zone: String,
    at_ms: i64,
) -> Result<(), ApiError> {
    super::preferences::schedule_zone(state, &zone, at_ms);
    let change = crate::store::preferences::Change {
        timezone: Some(zone),
        ..Default::default()
    };
    crate::store::preferences::change(
        &state.store,
        email,
        &change,
        crate::store::preferences::Source::Api,
        at_ms,
    )
    .await?;
    Ok(())
}

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
        check_preference: true,
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
    OptionalJson(body): OptionalJson<CompleteSession>,
) -> Result<Json<SessionCompleted>, ApiError> {
    let (id, token) = credentials(&raw_id, token)?;
    let mut loaded = with_events(&state, &id, &token).await?;
    let parent_email = validate::email("parent_email", body.parent_email)?;
    let parent_timezone = super::preferences::timezone("parent_timezone", body.parent_timezone)?;
    // The session is read with its events and completed only if no event arrived since, so
    // the summary covers exactly what the completion closed; if one did, read again. After
    // two such races the completion goes ahead and the events are read after it.
    let mut races = 0;
    let mut completed_here = false;
    let (session, events) = loop {
        let (mut session, events) = loaded;
        if session.record.completed_at_ms.is_some() {
            // Completed earlier, perhaps by a concurrent call: the stored state is the answer.
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
    if let (Some(email), Some(zone)) = (session.parent_email.as_deref(), parent_timezone) {
        keep_timezone(&state, email, zone, state.now_ms()).await?;
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
