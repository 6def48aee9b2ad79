//! Keys: the admin routes' guard (every admin route needs the admin key, see
//! [`crate::keys`]) and the client-key extractor.
//!
//! A key is only ever read from the `X-API-Key` header, never from the query string, where
//! it would end up in proxy logs and browser history. Failed attempts, on admin and client
//! routes alike, are themselves rate limited per client (`RATE_LIMIT_AUTH_FAILURES` a
//! minute, then 429), so keys cannot be guessed at speed; a presented key is never logged.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_actors::limiter::{Check, Policy};
use http::request::Parts;

use super::error::ApiError;
use super::state::AppState;
use crate::keys::ClientKey;

/// The limiter key space of failed authentications, apart from every rate-limit group.
const AUTH_FAILURES: u8 = 200;

/// Proof that the request carried the admin key (`X-API-Key`). Every admin route takes it
/// through [`require_admin_key`], applied to the whole admin router.
#[derive(Debug, Clone)]
pub struct AdminKey {
    /// A short non-reversible name of the key, for audit rows.
    pub fingerprint: String,
}

impl FromRequestParts<AppState> for ClientKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let known = parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .and_then(|presented| state.keys.identify(presented));
        match known {
            Some(key) => Ok(key),
            None => Err(failed(state, parts).await),
        }
    }
}

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(key) = parts.extensions.get::<AdminKey>() {
            return Ok(key.clone());
        }
        match ClientKey::from_request_parts(parts, state).await? {
            ClientKey {
                admin: true,
                fingerprint,
                ..
            } => Ok(AdminKey { fingerprint }),
            // A client's own key is not the admin key: a failed admin authentication.
            _ => Err(failed(state, parts).await),
        }
    }
}

/// What `POST /api/v1/sessions/start` asks of its caller: nothing, or with
/// `SESSION_START_AUTH=key` a valid key (a client's or the admin's), refused as any client
/// route refuses a missing or wrong one.
#[derive(Debug, Clone, Copy)]
pub struct StartCaller;

impl FromRequestParts<AppState> for StartCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.server.session_start == crate::config::StartAuth::Key {
            ClientKey::from_request_parts(parts, state).await?;
        }
        Ok(Self)
    }
}

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
        Err(err) => err.into_response(),
    }
}

/// Counts a failed authentication of the client: 401, or 429 once it has had more than
/// `RATE_LIMIT_AUTH_FAILURES` in the last minute.
async fn failed(state: &AppState, parts: &Parts) -> ApiError {
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
    match checked {
        Ok(checked) if !checked.decision.admitted => {
            tracing::warn!(client = %client.masked(), "too many failed authentications");
            ApiError::AuthFailures {
                retry_after_seconds: checked.decision.retry_after_ms.max(1).div_ceil(1000),
            }
        }
        _ => ApiError::Unauthorized,
    }
}
