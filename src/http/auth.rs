//! The admin routes' guard: every admin route needs the admin key (see [`crate::keys`]).
//!
//! A key is only ever read from the `X-API-Key` header, never from the query string, where
//! it would end up in proxy logs and browser history. Failed attempts are themselves rate
//! limited per client (`RATE_LIMIT_AUTH_FAILURES` a minute, then 429), so keys cannot be
//! guessed at speed; a presented key is never logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_actors::limiter::{Check, Policy};
use http::{HeaderValue, StatusCode, header};

use super::error::ErrorBody;
use super::extract::AdminKey;
use super::state::AppState;

/// The limiter key space of failed admin authentications, apart from every rate-limit group.
const AUTH_FAILURES: u8 = 200;

/// Applied to the whole admin router, so no admin route can forget the check.
pub async fn require_admin_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    match AdminKey::from_request_parts(&mut parts, &state).await {
        Ok(key) => {
            parts.extensions.insert(key);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(err) => match failure_refused(&state, &parts).await {
            Some(retry_after) => too_many_failures(retry_after),
            None => err.into_response(),
        },
    }
}

/// Counts a failed authentication of the client; the seconds to wait when it has had too
/// many in the last minute.
async fn failure_refused(state: &AppState, parts: &http::request::Parts) -> Option<u64> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = crate::ratelimit::identity::identify(
        &parts.headers,
        peer,
        &state.keys,
        &state.config.server.trusted_proxies,
    );
    let policy = Policy::per_seconds(state.config.rate_limit.auth_failures_per_minute, 60);
    let checked = match state.limiter.check(client.id.key(AUTH_FAILURES), policy) {
        Check::Ready(checked) => checked,
        Check::Pending(pending) => pending.await,
    };
    let decision = checked.ok()?.decision;
    if decision.admitted {
        return None;
    }
    tracing::warn!(client = %client.masked(), "too many failed admin authentications");
    Some((decision.retry_after_ms.max(1) as u64).div_ceil(1000))
}

fn too_many_failures(retry_after: u64) -> Response {
    let body = ErrorBody {
        error: "RATE_LIMIT_EXCEEDED".to_owned(),
        message: format!(
            "Too many failed authentications. Please try again in {retry_after} seconds."
        ),
        field: None,
        retry_after: Some(retry_after),
        limit: None,
        window: None,
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}
