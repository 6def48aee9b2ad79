//! `/api/v1/sessions/*`: start a session ([`start`]), record its events ([`events`]),
//! complete it ([`completion`]); here, what they share: the session's access token.
//!
//! A session's access token is random, returned once, stored only as a SHA-256 hash and
//! compared in constant time; a token opens its own session and no other.

pub mod completion;
pub mod events;
pub mod start;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use herald_actors::email::SessionId;

use crate::http::error::ApiError;
use crate::http::extract::SessionToken;
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::EventRecord;
use crate::secret::hex;
use crate::store::sessions::{self, SessionRow};

fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The id of what a request with an `Idempotency-Key` makes (`purpose`, from `parts`: the
/// key, and for an event its session): the same for every repeat of the request, so the
/// database keeps one (a UUID of version 8, from a hash of them; random ids are of version
/// 4, so the two never meet). The key itself is not kept.
fn keyed_id(purpose: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(purpose);
    for part in parts {
        hash.update(b"\0");
        hash.update(part);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
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

/// What a session's start or completion may say of the parent beyond the address, kept with
/// their preferences: their time zone and their language.
#[derive(Debug, Default)]
struct ParentSettings {
    timezone: Option<String>,
    locale: Option<String>,
}

impl ParentSettings {
    /// `parent_timezone` and `parent_locale` as a request gave them, each checked.
    fn read(timezone: Option<String>, locale: Option<String>) -> Result<Self, ApiError> {
        Ok(Self {
            timezone: crate::http::routes::preferences::timezone("parent_timezone", timezone)?,
            locale: crate::http::routes::preferences::locale("parent_locale", locale)?,
        })
    }

    /// Only what `kept` does not have yet: a repeated request fills in what the first could
    /// not keep, and leaves what the parent has set since.
    fn missing_from(self, kept: Option<&crate::store::preferences::Preferences>) -> Self {
        Self {
            timezone: self
                .timezone
                .filter(|_| kept.is_none_or(|k| k.timezone.is_none())),
            locale: self
                .locale
                .filter(|_| kept.is_none_or(|k| k.locale.is_none())),
        }
    }
}

/// Keeps a parent's time zone and language, as the calling backend gave them, with their
/// preferences.
async fn keep_parent(
    state: &AppState,
    email: &str,
    settings: ParentSettings,
    at_ms: i64,
) -> Result<(), ApiError> {
    if settings.timezone.is_none() && settings.locale.is_none() {
        return Ok(());
    }
    if let Some(zone) = &settings.timezone {
        crate::http::routes::preferences::schedule_zone(state, zone, at_ms);
    }
    let change = crate::store::preferences::Change {
        timezone: settings.timezone,
        locale: settings.locale,
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
