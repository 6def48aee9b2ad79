//! `/api/v1/email/unsubscribe/{token}?type=…`: one-click unsubscribe without an account.
//!
//! A GET only shows a page asking to confirm and changes nothing, because mail scanners
//! fetch every link they see. A POST to the same URL applies it; that is also what an RFC
//! 8058 one-click request (`List-Unsubscribe=One-Click`) is. An unknown recipient and one
//! already unsubscribed get the same answer, so a token cannot be probed.

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use crate::email::templates::escape;
use crate::http::state::AppState;
use crate::store::preferences::{self, Unsubscribe};

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UnsubscribeQuery {
    /// `weekly_digest`, `session_reports` or `all`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

fn describe(what: Unsubscribe) -> &'static str {
    match what {
        Unsubscribe::WeeklyDigest => "weekly digest emails",
        Unsubscribe::SessionReports => "session report emails",
        Unsubscribe::All => "all emails from us",
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
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

fn invalid_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        "<p>This unsubscribe link is incomplete or has been altered. Please use the link from the most recent email you received.</p>",
    )
}

fn parse(state: &AppState, token: &str, kind: Option<&str>) -> Option<(String, Unsubscribe)> {
    let what = Unsubscribe::parse(kind.unwrap_or("all"))?;
    let recipient_key = state.signer.verify(token)?;
    Some((recipient_key, what))
}

#[utoipa::path(get, path = "/api/v1/email/unsubscribe/{token}", tag = "email",
    params(("token" = String, Path, description = "The token from the email's link"), UnsubscribeQuery),
    responses(
        (status = 200, description = "A page asking to confirm (changes nothing)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed or altered link", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<UnsubscribeQuery>,
) -> Response {
    let Some((_, what)) = parse(&state, &token, query.kind.as_deref()) else {
        return invalid_link();
    };
    let action = format!(
        "/api/v1/email/unsubscribe/{}?type={}",
        escape(&token),
        what.as_str()
    );
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
    params(("token" = String, Path, description = "The token from the email's link"), UnsubscribeQuery),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "Anything, e.g. `List-Unsubscribe=One-Click` (RFC 8058)"),
    responses(
        (status = 200, description = "Unsubscribed (also for a recipient already unsubscribed or unknown)", content_type = "text/html", body = String),
        (status = 400, description = "A malformed or altered link", content_type = "text/html", body = String)))]
#[tracing::instrument(skip_all)]
pub async fn apply(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(query): Query<UnsubscribeQuery>,
) -> Response {
    let Some((recipient_key, what)) = parse(&state, &token, query.kind.as_deref()) else {
        return invalid_link();
    };
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    match preferences::unsubscribe(&state.store, &recipient_key, what, now).await {
        Ok(changed) => {
            if changed {
                tracing::info!(kind = what.as_str(), "recipient unsubscribed");
            }
            page(
                StatusCode::OK,
                "You are unsubscribed",
                &format!("<p>You will no longer receive {}.</p>", describe(what)),
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
