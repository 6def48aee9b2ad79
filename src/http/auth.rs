//! The admin routes' guard: every admin route needs the admin key (see [`crate::keys`]).
//!
//! A key is only ever read from the `X-API-Key` header, never from the query string, where
//! it would end up in proxy logs and browser history.

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::extract::AdminKey;
use super::state::AppState;

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
