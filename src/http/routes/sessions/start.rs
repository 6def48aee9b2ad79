//! `POST /api/v1/sessions/start`: a new session and its access token, shown once.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use herald_actors::email::SessionId;

use super::{address_or_blank, hash_token, keep_timezone};
use crate::http::error::ApiError;
use crate::http::extract::OptionalJson;
use crate::http::state::AppState;
use crate::http::validate;
use crate::secret::random_token;
use crate::store::instant;
use crate::store::sessions::{self, NewSession};

const NAME_MAX: usize = 100;

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
    #[schema(value_type = Option<crate::http::routes::preferences::TimeZone>)]
    pub parent_timezone: Option<String>,
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
    let parent_timezone =
        crate::http::routes::preferences::timezone("parent_timezone", body.parent_timezone)?;
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
