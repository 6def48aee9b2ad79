//! Sending failed emails again, once their cause is fixed: one by its id in the ledger, or
//! every one that failed in a stretch of time (an outage, a refusal since resolved). A
//! retried email is due at once with its attempts counted afresh; it keeps the throttle
//! slot it was counted in, and the dispatcher reads the recipient's preferences and the
//! suppression list again when it claims it. Audited.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::AdminKey;
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::ledger;

/// A failed email put back in the outbox.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub id: String,
    /// `pending`: the dispatcher sends it again.
    pub status: &'static str,
}

#[utoipa::path(post, path = "/admin/email/logs/{id}/retry", tag = "admin", security(("api_key" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "The email's id in the ledger (`/admin/email/logs`)")),
    responses(
        (status = 200, description = "The failed email is due again, attempts counted afresh; it keeps its throttle slot, and preferences and suppressions are checked again when it is sent (audited)", body = Retried),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "EMAIL_NOT_FOUND: no email with that id", body = crate::http::error::ErrorBody),
        (status = 409, description = "NOT_FAILED: only a failed email is sent again", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email's id", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn retry(
    State(state): State<AppState>,
    key: AdminKey,
    Path(raw): Path<String>,
) -> Result<Json<Retried>, ApiError> {
    let id = ledger::parse_id(&raw)
        .ok_or_else(|| validate::invalid("id", "an email's id in the ledger is a UUID"))?;
    let now = state.now_ms();
    match ledger::retry(&state.store, &id, &key.fingerprint, now).await? {
        ledger::Retry::Queued { email } => {
            state.dispatcher.wake();
            tracing::info!(
                recipient = %crate::redact::mask_email(&email),
                by = %key.fingerprint,
                "failed email queued again"
            );
            Ok(Json(Retried {
                id,
                status: "pending",
            }))
        }
        ledger::Retry::NotFailed { status } => Err(ApiError::Conflict {
            code: "NOT_FAILED",
            message: format!("Only a failed email is sent again; this one is {status}."),
        }),
        ledger::Retry::NotFound => Err(ApiError::not_found(
            "EMAIL_NOT_FOUND",
            "No email with that id in the ledger.",
        )),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryFailed {
    /// The emails that failed at or after this instant (RFC 3339).
    #[schema(format = DateTime)]
    pub failed_since: String,
    /// ...and before this one (RFC 3339); default: now.
    #[schema(format = DateTime)]
    pub failed_until: Option<String>,
    /// Only `session_reports` or only `weekly_digest`; both when absent.
    #[serde(rename = "type")]
    #[schema(pattern = "^(session_reports|weekly_digest)$")]
    pub kind: Option<String>,
    /// Count them; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RetriedFailed {
    /// The failed emails in that stretch: queued again, or with `dry_run` only counted.
    pub emails: u64,
    pub dry_run: bool,
    /// With `dry_run`: why they failed, the ten most common errors first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FailedWith>,
}

/// How many of the emails failed with one error.
#[derive(Serialize, ToSchema)]
pub struct FailedWith {
    /// The error recorded (the mail server's reply, cut to 200 characters).
    pub error: String,
    pub emails: u64,
}

#[utoipa::path(post, path = "/admin/email/retry", tag = "admin", security(("api_key" = [])),
    request_body(content = RetryFailed, description = "Which failed emails: those that failed in [failed_since, failed_until)"),
    responses(
        (status = 200, description = "How many failed emails are due again (or, with dry_run, would be); each keeps its throttle slot, and preferences and suppressions are checked again when it is sent (audited)", body = RetriedFailed),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "A malformed instant or type", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn retry_failed(
    State(state): State<AppState>,
    key: AdminKey,
    crate::http::extract::Json(request): crate::http::extract::Json<RetryFailed>,
) -> Result<Json<RetriedFailed>, ApiError> {
    let now = state.now_ms();
    let failed = ledger::FailedBetween::parse(
        &request.failed_since,
        request.failed_until.as_deref(),
        request.kind.as_deref(),
        now,
    )
    .map_err(|(field, reason)| validate::invalid(field, format!("{field} {reason}")))?;
    if request.dry_run {
        let summary = ledger::failed_between(&state.store, &failed).await?;
        return Ok(Json(RetriedFailed {
            emails: summary.emails,
            dry_run: true,
            errors: summary
                .errors
                .into_iter()
                .map(|(error, emails)| FailedWith { error, emails })
                .collect(),
        }));
    }
    let emails = ledger::retry_failed(&state.store, &failed, &key.fingerprint, now).await?;
    if emails > 0 {
        state.dispatcher.wake();
        tracing::info!(emails, by = %key.fingerprint, "failed emails queued again");
    }
    Ok(Json(RetriedFailed {
        emails,
        dry_run: false,
        errors: Vec::new(),
    }))
}
