//! `/api/v1/email/unsubscribe/{token}?type=…`: one-click unsubscribe without an account.
//!
//! A GET only shows a page asking to confirm and changes nothing, because mail scanners
//! fetch every link they see. A POST to the same URL applies it; that is also what an RFC
//! 8058 one-click request (`List-Unsubscribe=One-Click`) is. A recipient already
//! unsubscribed gets the same answer again. A genuine link whose recipient herald no longer
//! has (erased on request; only herald signs links) is answered as expired, as the
//! preference page answers it: "you are unsubscribed" would promise what herald did not
//! record, for an address it would mail again if the application named it once more.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::store::preferences::{self, Unsubscribe};
use crate::templates::{LinkPage, PageKind};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsubscribeQuery {
    /// `weekly_digest`, `session_reports` or `all` (the default).
    #[serde(rename = "type")]
    #[param(pattern = "^(weekly_digest|session_reports|all)$")]
    pub kind: Option<String>,
}

/// The page `page`, answered with `status`, in the words of the deployment's templates (of
/// the recipient's language, `locale`, when it has them).
pub(crate) fn show(
    state: &AppState,
    status: StatusCode,
    page: &LinkPage,
    locale: Option<&str>,
) -> Response {
    match state
        .config
        .email
        .templates
        .for_locale(locale)
        .link_page(page)
    {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a link's page did not render");
            ApiError::internal(err).into_response()
        }
    }
}

pub(crate) fn invalid_link(state: &AppState) -> Response {
    show(
        state,
        StatusCode::BAD_REQUEST,
        &LinkPage::bare(PageKind::InvalidLink),
        None,
    )
}

/// A token with a token's shape whose signature does not hold (altered, or signed with a
/// key herald no longer has).
pub(crate) fn altered_link(state: &AppState) -> Response {
    show(
        state,
        StatusCode::FORBIDDEN,
        &LinkPage::bare(PageKind::AlteredLink),
        None,
    )
}

/// The language of the recipient a link names, for its pages (the deployment's own when the
/// database cannot say: the page still answers); `None` when herald no longer has the
/// recipient.
async fn locale_of(state: &AppState, recipient_key: &str) -> Option<Option<String>> {
    preferences::locale_of(&state.store, recipient_key)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "a link's page is shown in the deployment's language");
            Some(None)
        })
}

fn parse(
    state: &AppState,
    token: &str,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Result<(String, Unsubscribe), Refused> {
    let Ok(Query(query)) = query else {
        return Err(Refused::Malformed);
    };
    let what =
        Unsubscribe::parse(query.kind.as_deref().unwrap_or("all")).ok_or(Refused::Malformed)?;
    Ok((recipient_key(state, token)?, what))
}

/// The recipient key a link's token names: malformed (400) or altered (403) otherwise. The
/// unsubscribe and preference links carry the same token.
pub(crate) fn recipient_key(state: &AppState, token: &str) -> Result<String, Refused> {
    if !crate::email::unsubscribe::well_formed(token) {
        return Err(Refused::Malformed);
    }
    state.signer.verify(token).ok_or(Refused::Altered)
}

/// Why a link is refused.
pub(crate) enum Refused {
    Malformed,
    Altered,
}

impl Refused {
    /// The page that says why.
    pub(crate) fn page(self, state: &AppState) -> Response {
        match self {
            Self::Malformed => invalid_link(state),
            Self::Altered => altered_link(state),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/email/unsubscribe/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link"), UnsubscribeQuery),
    responses(
        (status = 200, description = "A page asking to confirm (changes nothing)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link, or an unknown type", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, one signed with a retired key, or one whose recipient herald no longer has (erased on request)", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let (recipient_key, what) = match parse(&state, &token, query) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.page(&state),
    };
    let Some(locale) = locale_of(&state, &recipient_key).await else {
        return altered_link(&state);
    };
    // Relative, like every link of these pages: they keep working behind a proxy that
    // serves herald under a path of its own (`API_BASE_URL=https://example.org/herald`).
    let page = LinkPage {
        what: what.as_str(),
        action: format!("{token}?type={}", what.as_str()),
        ..LinkPage::bare(PageKind::UnsubscribeConfirm)
    };
    show(&state, StatusCode::OK, &page, locale.as_deref())
}

#[utoipa::path(post, path = "/api/v1/email/unsubscribe/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link"), UnsubscribeQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Anything, e.g. `List-Unsubscribe=One-Click` (RFC 8058)"),
    responses(
        (status = 200, description = "Unsubscribed (also for a recipient already unsubscribed)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link, or an unknown type", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, one signed with a retired key, or one whose recipient herald no longer has (erased on request)", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn apply(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let (recipient_key, what) = match parse(&state, &token, query) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.page(&state),
    };
    let now = state.now_ms();
    match preferences::unsubscribe(&state.store, &recipient_key, what, now).await {
        Ok(None) => altered_link(&state),
        Ok(Some((saved, changed))) => {
            if changed {
                tracing::info!(kind = what.as_str(), "recipient unsubscribed");
            }
            let page = LinkPage {
                what: what.as_str(),
                preferences_url: format!("../preferences/page/{token}"),
                ..LinkPage::bare(PageKind::Unsubscribed)
            };
            show(&state, StatusCode::OK, &page, saved.locale.as_deref())
        }
        Err(err) => {
            tracing::error!(error = %err, "unsubscribe failed");
            show(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                &LinkPage::bare(PageKind::TryAgain),
                None,
            )
        }
    }
}
