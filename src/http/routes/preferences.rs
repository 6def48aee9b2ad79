//! `/api/v1/email/preferences/{email}`: what a recipient receives, for the calling backend's
//! own settings screen (client API key). Re-subscribing is possible and stamped; every change
//! is recorded with its source. A suppression from a bounce or a complaint is shown and is
//! not lifted here (only an operator lifts it).

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use herald_actors::email::Email;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::{ClientKey, Json as JsonBody};
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::instant;
use crate::store::preferences::{self, Change, Preferences, Source};
use crate::templates::{LinkPage, PageKind};

/// Why an address gets no email whatever its switches say.
#[derive(Serialize, ToSchema)]
pub struct SuppressionView {
    /// `bounced` or `complained`.
    pub reason: String,
    pub since: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PreferencesView {
    pub email: String,
    /// Off when turned off under any spelling of the address (the same address but for
    /// capitals): stopping mail is for the mailbox. Turned on, it is turned on under every spelling.
    pub weekly_digest_enabled: bool,
    /// As `weekly_digest_enabled`.
    pub session_reports_enabled: bool,
    /// IANA name; absent means the service's `DIGEST_TIMEZONE`.
    pub timezone: Option<String>,
    /// The recipient's language, a BCP 47 tag (`pl`, `pt-BR`): their emails and pages are
    /// worded by the deployment's templates for it, when it has them; absent, by its own.
    pub locale: Option<String>,
    pub weekly_digest_unsubscribed_at: Option<DateTime<Utc>>,
    pub weekly_digest_resubscribed_at: Option<DateTime<Utc>>,
    pub session_reports_unsubscribed_at: Option<DateTime<Utc>>,
    pub session_reports_resubscribed_at: Option<DateTime<Utc>>,
    /// Present when the address, under any spelling, is on the suppression list.
    pub suppressed: Option<SuppressionView>,
}

pub(crate) fn view(email: &Email, p: Preferences) -> PreferencesView {
    PreferencesView {
        email: email.as_str().to_owned(),
        weekly_digest_enabled: p.weekly_digest_enabled,
        session_reports_enabled: p.session_reports_enabled,
        timezone: p.timezone,
        locale: p.locale,
        weekly_digest_unsubscribed_at: p.weekly_digest_unsubscribed_at.map(instant),
        weekly_digest_resubscribed_at: p.weekly_digest_resubscribed_at.map(instant),
        session_reports_unsubscribed_at: p.session_reports_unsubscribed_at.map(instant),
        session_reports_resubscribed_at: p.session_reports_resubscribed_at.map(instant),
        suppressed: p.suppressed.map(|(reason, since)| SuppressionView {
            reason,
            since: instant(since),
        }),
    }
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    validate::email("email", Some(raw.to_owned()))?
        .ok_or_else(|| validate::invalid("email", "email is required"))
}

/// An IANA time zone name, in the API document: one of the names herald knows.
pub struct TimeZone;

impl utoipa::PartialSchema for TimeZone {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An IANA time zone name, such as Europe/Berlin"))
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|z| z.name())))
            .into()
    }
}

impl utoipa::ToSchema for TimeZone {}

/// With local delivery, makes sure the digest job of `zone` is scheduled (the scheduler
/// ignores a job it has), as existing from `chosen_at_ms`: the instant the request chose
/// the zone, not the later one at which the scheduler reads the message (an occurrence
/// between the two is the zone's to run).
pub fn schedule_zone(state: &AppState, zone: &str, chosen_at_ms: i64) {
    if let (true, Ok(zone)) = (
        state.config.jobs.local_delivery,
        zone.parse::<chrono_tz::Tz>(),
    ) && zone != state.config.jobs.timezone
    {
        state.scheduler.add(
            crate::jobs::zone_digest_job(&state.config.jobs, zone),
            Some(chosen_at_ms),
        );
    }
}

/// An IANA time zone name, or a 400 naming `field`.
pub fn timezone(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) => match raw.trim().parse::<chrono_tz::Tz>() {
            Ok(zone) => Ok(Some(zone.name().to_owned())),
            Err(_) => Err(ApiError::BadRequest {
                message: format!("{field}: '{raw}' is not an IANA time zone such as Europe/Berlin"),
                field: Some(field.to_owned()),
            }),
        },
    }
}

/// A language tag (`pl`, `pt-BR`, `zh-Hant-TW`) in its usual case, or a 400 naming `field`.
pub fn locale(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    crate::language::tag(&raw)
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest {
            message: format!("{field}: '{raw}' is not a language tag such as pl or pt-BR"),
            field: Some(field.to_owned()),
        })
}

#[utoipa::path(get, path = "/api/v1/email/preferences/{email}", tag = "email", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The recipient")),
    responses(
        (status = 200, description = "What the recipient receives; an address herald has not mailed gets everything, by default", body = PreferencesView),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn get(
    State(state): State<AppState>,
    _key: ClientKey,
    Path(raw): Path<String>,
) -> Result<Json<PreferencesView>, ApiError> {
    let email = parse_email(&raw)?;
    let in_force = preferences::in_force(&state.store, email.as_str()).await?;
    Ok(Json(view(&email, in_force)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesChange {
    /// `true` re-subscribes, `false` unsubscribes; absent leaves it as it is.
    pub weekly_digest_enabled: Option<bool>,
    pub session_reports_enabled: Option<bool>,
    /// An IANA name such as `America/New_York`.
    #[schema(value_type = Option<TimeZone>)]
    pub timezone: Option<String>,
    /// A language tag such as `pl` or `pt-BR`: the recipient's emails and pages are worded
    /// by the deployment's templates for it (`EMAIL_TEMPLATES_DIR/pl/`), when it has them.
    #[schema(pattern = "^[ ]*[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}[ ]*$")]
    pub locale: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/email/preferences/{email}", tag = "email", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The recipient")),
    request_body(content = PreferencesChange, description = "The values to change"),
    responses(
        (status = 200, description = "The preferences now; each change recorded with the source `api`", body = PreferencesView),
        (status = 400, description = "A malformed body, a time zone that is not an IANA name or a locale that is not a language tag (`field` says which)", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn put(
    State(state): State<AppState>,
    _key: ClientKey,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<PreferencesChange>,
) -> Result<Json<PreferencesView>, ApiError> {
    let email = parse_email(&raw)?;
    let wanted = Change {
        weekly_digest: body.weekly_digest_enabled,
        session_reports: body.session_reports_enabled,
        timezone: timezone("timezone", body.timezone)?,
        locale: locale("locale", body.locale)?,
    };
    let now = state.now_ms();
    let (now_is, changed) =
        preferences::change(&state.store, email.as_str(), &wanted, Source::Api, now).await?;
    if let Some(zone) = &now_is.timezone {
        schedule_zone(&state, zone, now);
    }
    if changed {
        tracing::info!(recipient = %email.masked(), "preferences changed through the API");
    }
    Ok(Json(view(&email, now_is)))
}

/// The preference page's form: the switches as sent (a checkbox left unticked is not sent),
/// and the nonce the page was shown with.
#[derive(Deserialize, ToSchema)]
pub struct PageForm {
    pub nonce: Option<String>,
    pub weekly_digest: Option<String>,
    pub session_reports: Option<String>,
}

/// The recipient a page link names, or the page that says why not.
async fn recipient(
    state: &AppState,
    token: &str,
) -> Result<(String, String, Preferences), axum::response::Response> {
    let altered = || super::unsubscribe::altered_link(state);
    let key = super::unsubscribe::recipient_key(state, token).map_err(|r| r.page(state))?;
    let email = preferences::email_of(&state.store, &key)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .ok_or_else(altered)?;
    let found = preferences::get(&state.store, &email)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
        .ok_or_else(altered)?;
    Ok((key, email, found))
}

use axum::response::IntoResponse;

#[utoipa::path(get, path = "/api/v1/email/preferences/page/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link")),
    responses(
        (status = 200, description = "The recipient's preferences as a form (changes nothing)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, one signed with a retired key, or one whose recipient herald no longer has (erased on request)", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> axum::response::Response {
    let (key, email, found) = match recipient(&state, &token).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let page = LinkPage {
        action: token,
        masked: Email::parse(&email).map(|e| e.masked()).unwrap_or_default(),
        nonce: state.signer.form_nonce(&key, found.version),
        session_reports: found.session_reports_enabled,
        weekly_digest: found.weekly_digest_enabled,
        suppressed: found.suppressed.map(|(reason, _)| reason),
        ..LinkPage::bare(PageKind::Preferences)
    };
    super::unsubscribe::show(&state, http::StatusCode::OK, &page, found.locale.as_deref())
}

#[utoipa::path(post, path = "/api/v1/email/preferences/page/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link")),
    request_body(content = PageForm, content_type = "application/x-www-form-urlencoded", description = "The form of the page: its nonce and the ticked switches"),
    responses(
        (status = 200, description = "Saved; what the recipient now receives", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link or form", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, one signed with a retired key, one whose recipient herald no longer has (erased on request), or a form without a nonce", content_type = "text/html", body = String),
        (status = 409, description = "A form whose nonce does not hold: shown before the preferences last changed (sent twice, or from an old page), or made up", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn page_save(
    State(state): State<AppState>,
    Path(token): Path<String>,
    form: Result<axum::Form<PageForm>, axum::extract::rejection::FormRejection>,
) -> axum::response::Response {
    let (key, email, found) = match recipient(&state, &token).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let Ok(axum::Form(form)) = form else {
        return super::unsubscribe::invalid_link(&state);
    };
    let Some(nonce) = form.nonce else {
        return super::unsubscribe::altered_link(&state);
    };
    if !state.signer.form_nonce_holds(&nonce, &key, found.version) {
        // Either forged, or shown before the last change: one answer, a fresh page fixes both.
        return super::unsubscribe::show(
            &state,
            http::StatusCode::CONFLICT,
            &LinkPage::bare(PageKind::OutOfDate),
            found.locale.as_deref(),
        );
    }
    let wanted = Change {
        weekly_digest: Some(form.weekly_digest.is_some()),
        session_reports: Some(form.session_reports.is_some()),
        ..Change::default()
    };
    let now = state.now_ms();
    let (saved, _) =
        match preferences::change(&state.store, &email, &wanted, Source::PreferencePage, now).await
        {
            Ok(saved) => saved,
            Err(err) => return ApiError::from(err).into_response(),
        };
    let page = LinkPage {
        session_reports: saved.session_reports_enabled,
        weekly_digest: saved.weekly_digest_enabled,
        ..LinkPage::bare(PageKind::PreferencesSaved)
    };
    super::unsubscribe::show(&state, http::StatusCode::OK, &page, saved.locale.as_deref())
}
