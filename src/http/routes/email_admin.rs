//! Operating the email pipeline without SQL: a recipient's throttle state and reset, the
//! send ledger that says why each email was sent, suppressed, throttled, deduplicated or
//! failed, and an email rendered without sending it.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use herald_actors::email::EmailType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::{AdminKey, Query};
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::instant;
use crate::store::ledger::{self, LedgerRow};

fn parse_type(raw: Option<&str>) -> Result<Option<EmailType>, ApiError> {
    match raw {
        None => Ok(None),
        Some("session_reports") => Ok(Some(EmailType::SessionReport)),
        Some("weekly_digest") => Ok(Some(EmailType::WeeklyDigest)),
        Some(_) => Err(validate::invalid(
            "type",
            "type must be session_reports or weekly_digest",
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Slot {
    pub sent_at: DateTime<Utc>,
    /// When this send leaves the window and its slot is free again.
    pub frees_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct TypeThrottle {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub limit: u32,
    pub window: String,
    pub used: usize,
    pub remaining: u32,
    pub slots: Vec<Slot>,
}

#[derive(Serialize, ToSchema)]
pub struct ThrottleView {
    pub email: String,
    pub throttles: Vec<TypeThrottle>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TypeQuery {
    /// `session_reports` or `weekly_digest`; both when absent.
    #[serde(rename = "type")]
    #[param(pattern = "^(session_reports|weekly_digest)$")]
    pub kind: Option<String>,
}

#[utoipa::path(get, path = "/admin/throttles/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The recipient")),
    responses(
        (status = 200, description = "Throttle state per email type, with when each slot frees up", body = ThrottleView),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn throttle_state(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<ThrottleView>, ApiError> {
    let email = validate::address("email", &raw)?;
    let types = state.throttle.state(email.clone()).await?;
    Ok(Json(ThrottleView {
        email: email.as_str().to_owned(),
        throttles: types
            .into_iter()
            .map(|t| TypeThrottle {
                kind: t.email_type.as_str(),
                limit: t.rule.limit,
                window: t.rule.window_text(),
                used: t.sends.len(),
                remaining: t.rule.limit.saturating_sub(t.sends.len() as u32),
                slots: t
                    .sends
                    .iter()
                    .map(|&at| Slot {
                        sent_at: instant(at),
                        frees_at: instant(at + t.rule.window_ms),
                    })
                    .collect(),
            })
            .collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ThrottleReset {
    pub cleared: u64,
}

#[utoipa::path(delete, path = "/admin/throttles/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The recipient"), TypeQuery),
    responses(
        (status = 200, description = "Recorded sends cleared (audited)", body = ThrottleReset),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address, or an unknown type", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn throttle_reset(
    State(state): State<AppState>,
    key: AdminKey,
    Path(raw): Path<String>,
    Query(query): Query<TypeQuery>,
) -> Result<Json<ThrottleReset>, ApiError> {
    let email = validate::address("email", &raw)?;
    let kind = parse_type(query.kind.as_deref())?;
    // Audited before it is done, as the limiter's reset is: a reset the audit log cannot
    // record is not made, and one made is never answered with an error.
    let target = format!(
        "{}/{}",
        email.masked(),
        kind.map_or("all", EmailType::as_str)
    );
    crate::store::audit::record_alone(
        &state.store,
        &key.fingerprint,
        "email_throttle.reset",
        &target,
    )
    .await?;
    let cleared = state.throttle.reset(email.clone(), kind).await?;
    tracing::info!(recipient = %email.masked(), cleared, by = %key.fingerprint, "email throttle reset");
    Ok(Json(ThrottleReset { cleared }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The recipient whose ledger to show.
    #[param(value_type = String, required = true, format = Email)]
    pub email: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmailLogs {
    pub email: String,
    pub entries: Vec<LedgerRow>,
    /// Addresses herald keeps that differ from this one only in capitals, whose ledgers are
    /// their own (the part before the `@` may be case-sensitive, so herald keeps them apart).
    pub other_spellings: Vec<String>,
}

#[utoipa::path(get, path = "/admin/email/logs", tag = "admin", security(("api_key" = [])),
    params(LogsQuery),
    responses(
        (status = 200, description = "The recipient's ledger, newest first (at most 200 rows)", body = EmailLogs),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Missing or invalid email", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn email_logs(
    State(state): State<AppState>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<EmailLogs>, ApiError> {
    let raw = query
        .email
        .ok_or_else(|| validate::invalid("email", "email is required"))?;
    let email = validate::address("email", &raw)?;
    let entries = ledger::for_email(&state.store, email.as_str(), 200).await?;
    let other_spellings =
        crate::store::recipients::other_spellings(&state.store, email.as_str()).await?;
    Ok(Json(EmailLogs {
        email: email.as_str().to_owned(),
        entries,
        other_spellings,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportPreviewQuery {
    /// The session whose report to show.
    #[param(value_type = String, required = true, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub session_id: Option<String>,
    /// Word it in this language's templates (`EMAIL_TEMPLATES_DIR/pl/`, a language tag)
    /// instead of the recipient's: a translation seen with real data.
    #[param(pattern = "^[ ]*[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}[ ]*$")]
    pub locale: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DigestPreviewQuery {
    /// The recipient.
    #[param(value_type = String, required = true, format = Email)]
    pub email: Option<String>,
    /// The first day of the week (YYYY-MM-DD); by default the seven days before today in
    /// the recipient's zone with local delivery (`DIGEST_TIMEZONE` for one without a zone
    /// of their own, and for everyone with global delivery).
    #[param(format = Date)]
    pub week: Option<String>,
    /// Word it in this language's templates (`EMAIL_TEMPLATES_DIR/pl/`, a language tag)
    /// instead of the recipient's: a translation seen with real data.
    #[param(pattern = "^[ ]*[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}[ ]*$")]
    pub locale: Option<String>,
}

/// An email as it would be sent.
#[derive(Serialize, ToSchema)]
pub struct EmailPreview {
    /// `session_reports` or `weekly_digest`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// The report's PDF attachment, base64; absent for a digest.
    pub pdf_base64: Option<String>,
    /// The language whose templates worded it (`EMAIL_TEMPLATES_DIR/pl/`); absent for the
    /// deployment's own.
    pub locale: Option<String>,
}

#[utoipa::path(get, path = "/admin/email/preview/session_reports", tag = "admin", security(("api_key" = [])),
    params(ReportPreviewQuery),
    responses(
        (status = 200, description = "The session's report email as it would be sent, with its PDF; nothing is written or sent", body = EmailPreview),
        (status = 404, description = "SESSION_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 422, description = "A missing session_id", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn preview_report(
    State(state): State<AppState>,
    Query(query): Query<ReportPreviewQuery>,
) -> Result<Json<EmailPreview>, ApiError> {
    let raw = query
        .session_id
        .ok_or_else(|| validate::invalid("session_id", "session_id is required"))?;
    let session_id = validate::session_id(&raw)?.to_string();
    let locale = crate::http::routes::preferences::locale("locale", query.locale)?;
    show(
        &state,
        crate::email::preview::Request::Report { session_id },
        locale.as_deref(),
    )
    .await
}

#[utoipa::path(get, path = "/admin/email/preview/weekly_digest", tag = "admin", security(("api_key" = [])),
    params(DigestPreviewQuery),
    responses(
        (status = 200, description = "The recipient's digest as it would be sent; nothing is written or sent", body = EmailPreview),
        (status = 404, description = "NO_ACTIVITY: no digest would be sent for that week", body = crate::http::error::ErrorBody),
        (status = 422, description = "A missing or malformed email or week", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn preview_digest(
    State(state): State<AppState>,
    Query(query): Query<DigestPreviewQuery>,
) -> Result<Json<EmailPreview>, ApiError> {
    let raw = query
        .email
        .ok_or_else(|| validate::invalid("email", "email is required"))?;
    let email = validate::address("email", &raw)?;
    let week_start = match query.week.as_deref() {
        Some(raw) => Some(
            crate::reports::week::parse_date(raw)
                .ok_or_else(|| validate::invalid("week", "week must be YYYY-MM-DD"))?,
        ),
        None => None,
    };
    let locale = crate::http::routes::preferences::locale("locale", query.locale)?;
    let request = crate::email::preview::Request::Digest {
        email: email.as_str().to_owned(),
        week_start,
    };
    show(&state, request, locale.as_deref()).await
}

async fn show(
    state: &AppState,
    request: crate::email::preview::Request,
    locale: Option<&str>,
) -> Result<Json<EmailPreview>, ApiError> {
    use crate::email::preview::{self, PreviewError};
    let links = preview::Links {
        templates: &state.config.email.templates,
        signer: &state.signer,
        api_base_url: &state.config.email.api_base_url,
    };
    let now = state.now_ms();
    let shown = preview::render(
        &state.store,
        &links,
        (&state.config.jobs).into(),
        now,
        request,
        locale,
    )
    .await
    .map_err(|err| match err {
        PreviewError::NoSession(_) => validate::session_not_found(),
        PreviewError::NoActivity { .. } => ApiError::not_found("NO_ACTIVITY", err.to_string()),
        PreviewError::Template(detail) => ApiError::Internal(detail),
        PreviewError::Store(store) => store.into(),
    })?;
    use base64::Engine;
    Ok(Json(EmailPreview {
        kind: shown.email_type.as_str(),
        subject: shown.rendered.subject,
        html: shown.rendered.html,
        text: shown.rendered.text,
        pdf_base64: shown
            .pdf
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes)),
        locale: shown.language,
    }))
}
