//! `POST /api/v1/sessions/start`: a new session and its access token, shown once.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use herald_actors::email::SessionId;

use super::{ParentSettings, address_or_blank, hash_token, keep_parent, keyed_id};
use crate::http::error::ApiError;
use crate::http::extract::{IdempotencyHeader, OptionalJson};
use crate::http::state::AppState;
use crate::http::validate;
use crate::secret::random_token;
use crate::store::instant;
use crate::store::sessions::{self, NewSession, SessionRow};

const NAME_MAX: usize = 100;

/// The shortest `Idempotency-Key` a start takes. Its key is not scoped by a session as an
/// event's is: a repeat with it answers the session's token, so it must not be guessable.
pub const START_KEY_MIN: usize = 16;

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
    /// The parent's language, a tag such as `pl` or `pt-BR`, kept with their preferences:
    /// their emails are worded by the deployment's templates for it, when it has them.
    /// Needs `parent_email`.
    #[schema(pattern = "^[ ]*[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}[ ]*$")]
    pub parent_locale: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionStarted {
    pub session_id: String,
    /// Returned once; send it as `X-Session-Access-Token` for this session.
    pub session_access_token: String,
    pub started_at: DateTime<Utc>,
}

#[utoipa::path(post, path = "/api/v1/sessions/start", tag = "sessions", security((), ("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[\\x21-\\x7e]{16,255}$", min_length = 16, max_length = 255,
            description = "Makes the request safe to send again: a second start with the same key makes no session and is answered with the first one's id, token and time (header `Idempotent-Replayed: true`); the same key with another learner, subject or parent is 422. The key opens the session as its token does, so make it unguessable: a random UUID")),
    request_body(content = Option<StartSession>, description = "Optional"),
    responses(
        (status = 201, description = "Started, or started before under this `Idempotency-Key`", body = SessionStarted,
            headers(("Idempotent-Replayed" = String, description = "`true` when the session was started before under this `Idempotency-Key`"))),
        (status = 400, description = "Malformed JSON", body = crate::http::error::ErrorBody),
        (status = 401, description = "With `SESSION_START_AUTH=key`: a missing or wrong `X-API-Key`", body = crate::http::error::ErrorBody),
        (status = 409, description = "IDEMPOTENCY_KEY_EXPIRED: the session this key started holds a token of a signing key no longer kept (`SECRET_KEY_PREVIOUS`); start with a new key", body = crate::http::error::ErrorBody),
        (status = 422, description = "A field breaks its rule, or the `Idempotency-Key` is malformed or started a session with other fields; `field` names it", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn start(
    State(state): State<AppState>,
    _caller: crate::http::auth::StartCaller,
    key: IdempotencyHeader,
    OptionalJson(body): OptionalJson<StartSession>,
) -> Result<Response, ApiError> {
    let key = key.key()?;
    let learner_name = validate::text("learner_name", body.learner_name, NAME_MAX, false)?;
    let subject = validate::text("subject", body.subject, NAME_MAX, false)?;
    let parent_email = validate::email("parent_email", body.parent_email)?;
    let parent = ParentSettings::read(body.parent_timezone, body.parent_locale)?;
    let (id, token) = match &key {
        Some(key) if key.len() < START_KEY_MIN => {
            return Err(validate::invalid(
                "Idempotency-Key",
                format!(
                    "a start's Idempotency-Key is at least {START_KEY_MIN} characters (this one \
                     has {}): a repeat with it answers the session's token, so make it \
                     unguessable (a random UUID)",
                    key.len()
                ),
            ));
        }
        Some(key) => {
            let id = SessionId::parse(&keyed_id("herald session start", &[key]))
                .expect("a keyed id is a UUID");
            let token = state
                .signer
                .session_tokens(id.as_str())
                .next()
                .expect("the signer has a current key");
            (id, token)
        }
        None => (SessionId::random(), random_token()),
    };
    let started_at_ms = state.now_ms();
    let asked = NewSession {
        id: id.as_str(),
        token_hash: &hash_token(&token),
        learner_name: learner_name.as_deref(),
        subject: subject.as_deref(),
        parent_email: parent_email.as_ref().map(|e| e.as_str()),
        started_at_ms,
    };
    if !sessions::insert(&state.store, &asked).await? {
        return replay(&state, &asked, parent).await;
    }
    crate::metrics::session_started();
    tracing::info!(session_id = %id, "session started");
    if let Some(email) = asked.parent_email {
        keep_parent(&state, email, parent, started_at_ms).await?;
    }
    Ok(started(&asked, token, false))
}

fn started(session: &NewSession<'_>, token: String, replayed: bool) -> Response {
    let body = Json(SessionStarted {
        session_id: session.id.to_owned(),
        session_access_token: token,
        started_at: instant(session.started_at_ms),
    });
    if replayed {
        (StatusCode::CREATED, [("idempotent-replayed", "true")], body).into_response()
    } else {
        (StatusCode::CREATED, body).into_response()
    }
}

/// A start sent again with its `Idempotency-Key`: the session it made, answered as it was
/// when the fields are the same. A time zone or language the first could not keep (it failed
/// after the session was written) is kept now; one the parent has since is left as it is.
async fn replay(
    state: &AppState,
    asked: &NewSession<'_>,
    parent: ParentSettings,
) -> Result<Response, ApiError> {
    let Some(SessionRow {
        record,
        token_hash,
        parent_email,
    }) = sessions::get(&state.store, asked.id).await?
    else {
        return Err(ApiError::internal(
            "a session whose id was taken a moment ago is gone",
        ));
    };
    if (
        record.learner_name.as_deref(),
        record.subject.as_deref(),
        parent_email.as_deref(),
    ) != (asked.learner_name, asked.subject, asked.parent_email)
    {
        return Err(validate::invalid(
            "Idempotency-Key",
            "this Idempotency-Key started a session with another learner, subject or parent; \
             send a new key for a new session",
        ));
    }
    let Some(token) = state
        .signer
        .session_tokens(asked.id)
        .find(|token| bool::from(hash_token(token).as_bytes().ct_eq(token_hash.as_bytes())))
    else {
        return Err(ApiError::Conflict {
            code: "IDEMPOTENCY_KEY_EXPIRED",
            message: "The session this Idempotency-Key started holds a token of a signing key \
                      herald no longer keeps; start with a new key."
                .to_owned(),
        });
    };
    if let Some(email) = asked.parent_email {
        let kept = crate::store::preferences::get(&state.store, email).await?;
        keep_parent(
            state,
            email,
            parent.missing_from(kept.as_ref()),
            asked.started_at_ms,
        )
        .await?;
    }
    let first = NewSession {
        started_at_ms: record.started_at_ms,
        ..*asked
    };
    Ok(started(&first, token, true))
}
