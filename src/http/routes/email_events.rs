//! Delivery events in: SendGrid's signed Event Webhook and a generic signed webhook for any
//! other provider or an MTA's bounce processor. Both verify the signature and its age before
//! reading anything, answer a genuine post with 202 whether or not the address is known, and
//! hand each event to `email::events`, which applies it once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use herald_actors::email::Email;

use crate::email::events::{self, Kind, Reported};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::validate;
use crate::secret::hex;
use crate::store::suppressions;

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Events in the post.
    pub events: usize,
    /// Of those, the ones seen for the first time.
    pub applied: usize,
}

fn bad_signature() -> ApiError {
    ApiError::Forbidden {
        code: "INVALID_SIGNATURE",
        message: "The signature does not verify, or the post is too old.".to_owned(),
    }
}

fn not_configured() -> ApiError {
    ApiError::not_found("NOT_CONFIGURED", "This webhook is not configured.")
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The post's timestamp (Unix seconds), if it is no older (and no further ahead) than the
/// configured age.
fn fresh_timestamp(state: &AppState, raw: Option<&str>) -> Result<i64, ApiError> {
    let at: i64 = raw.and_then(|t| t.parse().ok()).ok_or_else(bad_signature)?;
    let now = state.now_ms() / 1000;
    if now.abs_diff(at) > state.config.events.max_age.as_secs() {
        return Err(bad_signature());
    }
    Ok(at)
}

/// Applies `event`: 1 when it was new, 0 when it had been applied before.
async fn apply(state: &AppState, event: Reported<'_>) -> Result<usize, ApiError> {
    let now = state.now_ms();
    let outcome = events::apply(&state.store, &state.config.events, &event, now).await?;
    Ok(usize::from(outcome != events::Applied::Repeated))
}

/// What the generic webhook reports.
#[derive(Deserialize, Clone, Copy, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GenericKind {
    HardBounce,
    SoftBounce,
    Complaint,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenericEvent {
    /// The recipient; or give `ref`.
    pub email: Option<String>,
    /// The `X-Herald-Ref` header of the email the event is about: names the ledger row and
    /// so the recipient, without a lookup by address.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub kind: GenericKind,
    /// The provider's or the MTA's words.
    pub reason: Option<String>,
    pub message_id: Option<String>,
    /// The event's own id, if the sender has one; repeats of one id change nothing.
    pub id: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/email/events", tag = "email",
    params(
        ("X-Herald-Timestamp" = String, Header, description = "Unix seconds when the post was signed"),
        ("X-Herald-Signature" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>` with EMAIL_EVENTS_SECRET")),
    request_body = GenericEvent,
    responses(
        (status = 202, description = "Accepted (whether or not the address is known)", body = Accepted),
        (status = 400, description = "Malformed JSON", body = crate::http::error::ErrorBody),
        (status = 403, description = "INVALID_SIGNATURE: the signature does not verify, or the post is too old", body = crate::http::error::ErrorBody),
        (status = 404, description = "NOT_CONFIGURED: EMAIL_EVENTS_SECRET is unset", body = crate::http::error::ErrorBody),
        (status = 422, description = "Neither a valid email nor a genuine ref", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn generic(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let secret = state
        .config
        .events
        .secret
        .as_ref()
        .ok_or_else(not_configured)?;
    let at = fresh_timestamp(&state, header(&headers, "x-herald-timestamp"))?;
    let presented = header(&headers, "x-herald-signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .ok_or_else(bad_signature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).map_err(ApiError::internal)?;
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = hex(&mac.finalize().into_bytes());
    if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(bad_signature());
    }
    let event: GenericEvent = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("the body is not a valid event: {e}"),
        field: None,
    })?;
    let email = match (&event.reference, &event.email) {
        (Some(reference), _) => {
            let row = state
                .signer
                .verify_reference(reference)
                .ok_or_else(|| validate::invalid("ref", "ref is not a reference herald made"))?;
            crate::store::outbox::recipient_of(&state.store, &row).await?
        }
        (None, Some(raw)) => Some(
            Email::parse(raw)
                .map_err(|e| validate::invalid("email", e.to_string()))?
                .as_str()
                .to_owned(),
        ),
        (None, None) => return Err(validate::invalid("email", "give email or ref")),
    };
    let kind = match event.kind {
        GenericKind::HardBounce => Kind::HardBounce,
        GenericKind::SoftBounce => Kind::SoftBounce,
        GenericKind::Complaint => Kind::Complaint,
    };
    let id = event
        .id
        .clone()
        .unwrap_or_else(|| hex(&Sha256::digest(&body)));
    let mut applied = 0;
    // A ref to a row that no longer exists is accepted like any other post.
    if let Some(email) = email {
        applied += apply(
            &state,
            Reported {
                id: &id,
                email: &email,
                kind,
                source: suppressions::FROM_WEBHOOK,
                detail: event.reason.as_deref(),
            },
        )
        .await?;
    }
    Ok((StatusCode::ACCEPTED, Json(Accepted { events: 1, applied })))
}

/// One event of SendGrid's Event Webhook (the fields herald reads).
#[derive(Deserialize)]
struct SendGridEvent {
    email: Option<String>,
    event: Option<String>,
    sg_event_id: Option<String>,
    /// For `bounce`: `bounce` (permanent) or `blocked` (temporary).
    #[serde(rename = "type")]
    bounce_type: Option<String>,
    reason: Option<String>,
    /// The `custom_args` herald sends come back as top-level fields.
    herald_ref: Option<String>,
}

/// What a SendGrid event means for the address, if anything.
fn sendgrid_kind(event: &SendGridEvent) -> Option<Kind> {
    match event.event.as_deref()? {
        "bounce" if event.bounce_type.as_deref() == Some("blocked") => Some(Kind::SoftBounce),
        "bounce" => Some(Kind::HardBounce),
        "dropped" => {
            let reason = event
                .reason
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            (reason.contains("invalid") || reason.contains("bounced address"))
                .then_some(Kind::HardBounce)
        }
        "spamreport" => Some(Kind::Complaint),
        "deferred" => Some(Kind::Deferred),
        _ => None,
    }
}

#[utoipa::path(post, path = "/api/v1/email/events/sendgrid", tag = "email",
    params(
        ("X-Twilio-Email-Event-Webhook-Signature" = String, Header, description = "SendGrid's ECDSA (P-256, SHA-256) signature of `<timestamp><body>`, base64"),
        ("X-Twilio-Email-Event-Webhook-Timestamp" = String, Header, description = "Unix seconds when SendGrid signed the post")),
    request_body(content = Vec<serde_json::Value>, description = "SendGrid's array of events"),
    responses(
        (status = 202, description = "Accepted (whether or not the addresses are known)", body = Accepted),
        (status = 400, description = "Not a JSON array", body = crate::http::error::ErrorBody),
        (status = 403, description = "INVALID_SIGNATURE: the signature does not verify, or the post is too old", body = crate::http::error::ErrorBody),
        (status = 404, description = "NOT_CONFIGURED: SENDGRID_WEBHOOK_PUBLIC_KEY is unset", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn sendgrid(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    use base64::Engine;
    let key = state
        .config
        .events
        .sendgrid_public_key
        .as_ref()
        .ok_or_else(not_configured)?;
    let timestamp = header(&headers, "x-twilio-email-event-webhook-timestamp");
    fresh_timestamp(&state, timestamp)?;
    let signature = header(&headers, "x-twilio-email-event-webhook-signature")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(bad_signature)?;
    let mut signed = timestamp.unwrap_or_default().as_bytes().to_vec();
    signed.extend_from_slice(&body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, key)
        .verify(&signed, &signature)
        .map_err(|_| bad_signature())?;
    let posted: Vec<serde_json::Value> =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
            message: format!("expected SendGrid's array of events: {e}"),
            field: None,
        })?;
    let mut applied = 0;
    for value in &posted {
        let Ok(event) = serde_json::from_value::<SendGridEvent>(value.clone()) else {
            continue;
        };
        let Some(kind) = sendgrid_kind(&event) else {
            continue;
        };
        let row_email = match event
            .herald_ref
            .as_deref()
            .and_then(|r| state.signer.verify_reference(r))
        {
            Some(row) => crate::store::outbox::recipient_of(&state.store, &row).await?,
            None => None,
        };
        let Some(email) = row_email.or_else(|| {
            event
                .email
                .as_deref()
                .and_then(|e| Email::parse(e).ok())
                .map(|e| e.as_str().to_owned())
        }) else {
            continue;
        };
        let id = event
            .sg_event_id
            .clone()
            .unwrap_or_else(|| hex(&Sha256::digest(value.to_string().as_bytes())));
        applied += apply(
            &state,
            Reported {
                id: &id,
                email: &email,
                kind,
                source: suppressions::FROM_SENDGRID,
                detail: event.reason.as_deref(),
            },
        )
        .await?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            events: posted.len(),
            applied,
        }),
    ))
}
