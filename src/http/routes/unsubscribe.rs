//! `/api/v1/email/unsubscribe/{token}?type=…`: one-click unsubscribe without an account.
//!
//! A GET only shows a page asking to confirm and changes nothing, because mail scanners
//! fetch every link they see. A POST to the same URL applies it; that is also what an RFC
//! 8058 one-click request (`List-Unsubscribe=One-Click`) is. An unknown recipient and one
//! already unsubscribed get the same answer, so a token cannot be probed.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use crate::http::state::AppState;
use crate::store::preferences::{self, Unsubscribe};
use crate::templates::escape;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnsubscribeQuery {
    /// `weekly_digest`, `session_reports` or `all` (the default).
    #[serde(rename = "type")]
    #[param(pattern = "^(weekly_digest|session_reports|all)$")]
    pub kind: Option<String>,
}

fn describe(what: Unsubscribe) -> &'static str {
    match what {
        Unsubscribe::WeeklyDigest => "weekly digest emails",
        Unsubscribe::SessionReports => "session report emails",
        Unsubscribe::All => "all emails from us",
    }
}

pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    (status, Html(html)).into_response()
}

pub(crate) fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        "<p>This unsubscribe link is incomplete or has been altered. Please use the link from the most recent email you received.</p>",
    )
}

/// A token with a token's shape whose signature does not hold (altered, or signed with a
/// key herald no longer has).
pub(crate) fn altered_link() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "This link is not valid",
        "<p>This unsubscribe link has been altered or has expired. Please use the link from the most recent email you received.</p>",
    )
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

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Malformed => invalid_link(),
            Self::Altered => altered_link(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/email/unsubscribe/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link"), UnsubscribeQuery),
    responses(
        (status = 200, description = "A page asking to confirm (changes nothing)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link, or an unknown type", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, or one signed with a retired key", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let (_, what) = match parse(&state, &token, query) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    // Relative, like every link of these pages: they keep working behind a proxy that
    // serves herald under a path of its own (`API_BASE_URL=https://example.org/herald`).
    let action = format!("{}?type={}", escape(&token), what.as_str());
    page(
        StatusCode::OK,
        "Unsubscribe?",
        &format!(
            "<p>Stop receiving {}?</p>\
             <form method=\"post\" action=\"{action}\"><button type=\"submit\" name=\"confirm\" value=\"yes\">Unsubscribe</button></form>",
            describe(what)
        ),
    )
}

#[utoipa::path(post, path = "/api/v1/email/unsubscribe/{token}", tag = "email",
    params(("token" = String, Path, pattern = r"^v[0-9]{1,9}\.[0-9a-fA-F]{32}\.[0-9a-f]{32}$", description = "The token from the email's link"), UnsubscribeQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Anything, e.g. `List-Unsubscribe=One-Click` (RFC 8058)"),
    responses(
        (status = 200, description = "Unsubscribed (also for a recipient already unsubscribed or unknown)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed link, or an unknown type", content_type = "text/html", body = String),
        (status = 403, description = "An altered link, or one signed with a retired key", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn apply(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<UnsubscribeQuery>, QueryRejection>,
) -> Response {
    let (recipient_key, what) = match parse(&state, &token, query) {
        Ok(parsed) => parsed,
        Err(refused) => return refused.into_response(),
    };
    let now = state.now_ms();
    match preferences::unsubscribe(&state.store, &recipient_key, what, now).await {
        Ok(changed) => {
            if changed {
                tracing::info!(kind = what.as_str(), "recipient unsubscribed");
            }
            page(
                StatusCode::OK,
                "You are unsubscribed",
                &format!(
                    "<p>You will no longer receive {}.</p>\
                     <p>Changed your mind? <a href=\"../preferences/page/{}\">Choose what you receive</a>.</p>",
                    describe(what),
                    escape(&token)
                ),
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "unsubscribe failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "<p>We could not record your choice just now. Please try the link again in a minute.</p>",
            )
        }
    }
}
