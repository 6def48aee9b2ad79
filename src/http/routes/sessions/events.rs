//! `POST /api/v1/sessions/{id}/events`: a step, hint or answer of an open session.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{authorize, keyed_id};
use crate::http::error::ApiError;
use crate::http::extract::{IdempotencyHeader, SessionToken, Unparsed};
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::instant;
use crate::store::sessions::{self, EventOutcome, NewEvent, StoredEvent};

const DETAIL_MAX: usize = 2_000;
const KIND_MAX: usize = 32;

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
    /// For answers: whether it was right. An answer without it counts as not right (in the
    /// accuracy, the report and its chart); record a response nobody marks as another kind.
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
           ("X-Session-Access-Token" = String, Header, description = "The session's token"),
           ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[\\x21-\\x7e]{1,255}$",
            description = "Makes the request safe to send again: a second request with the same key for this session records nothing and is answered with the event the first recorded (header `Idempotent-Replayed: true`), even once the session is completed; the same key with another event is 422")),
    request_body = NewEventBody,
    responses(
        (status = 201, description = "Recorded, or recorded before under this `Idempotency-Key`", body = EventRecorded,
            headers(("Idempotent-Replayed" = String, description = "`true` when the event was recorded before under this `Idempotency-Key`"))),
        (status = 403, description = "MISSING_SESSION_TOKEN or INVALID_SESSION_TOKEN", body = crate::http::error::ErrorBody),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 409, description = "SESSION_COMPLETED, or SESSION_FULL: the session holds 10,000 events, the most one takes", body = crate::http::error::ErrorBody),
        (status = 422, description = "A field breaks its rule, or the `Idempotency-Key` is malformed or was used for another event of this session", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all, fields(session_id = %raw_id))]
pub async fn add_event(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    token: SessionToken,
    key: IdempotencyHeader,
    body: Unparsed,
) -> Result<Response, ApiError> {
    // The caller first: one without the session's token learns nothing from the body.
    let session = authorize(&state, &raw_id, token).await?;
    let key = key.key()?;
    let body: NewEventBody = body.json()?;
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
    if session.record.completed_at_ms.is_some() && key.is_none() {
        return Err(session_completed());
    }
    let event_id = match &key {
        Some(key) => keyed_id("herald session event", &[&session.record.id, key]),
        None => uuid::Uuid::new_v4().to_string(),
    };
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
    let recorded = |kind: String, at_ms: i64| EventRecorded {
        event_id: event_id.clone(),
        session_id: session.record.id.clone(),
        kind,
        created_at: instant(at_ms),
    };
    match outcome {
        EventOutcome::Recorded => {
            Ok((StatusCode::CREATED, Json(recorded(kind, at_ms))).into_response())
        }
        EventOutcome::AlreadyRecorded(before) => {
            let asked = StoredEvent {
                kind,
                detail,
                correct: body.correct,
                at_ms: before.at_ms,
            };
            if asked != before {
                return Err(validate::invalid(
                    "Idempotency-Key",
                    "this Idempotency-Key was sent before with another event for this session; \
                     send a new key for a new event",
                ));
            }
            Ok((
                StatusCode::CREATED,
                [("idempotent-replayed", "true")],
                Json(recorded(before.kind, before.at_ms)),
            )
                .into_response())
        }
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
