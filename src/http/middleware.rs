//! The request edge: request ids, the access log, HTTP metrics, logging of 5xx, security
//! headers, timeouts and panics.
//!
//! The request-context middleware is the outermost layer, so every response, errors
//! included, gets its `X-Request-ID` and security headers, and every log line of the
//! request is inside a span that carries the id.

use std::any::Any;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, header};
use tracing::Instrument;

use super::error::{ApiError, InternalDetail};
use super::state::AppState;
use crate::redact::mask_emails_in;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// An id from the client is kept if it is short and printable and holds no `@`; otherwise
/// a new one is made, so a hostile header cannot forge log lines, and an id a backend made
/// of a parent's address does not put the address, unmasked, in every line of the request's
/// log and in its Sentry events.
fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

pub async fn request_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    request.extensions_mut().insert(RequestId(id.clone()));

    let transaction = crate::telemetry::transaction(
        &format!("{} {route}", crate::metrics::method_label(&method)),
        "http.server",
    );
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    if let Some(transaction) = &transaction {
        transaction.set_tag("http.status_code", status.as_u16());
        transaction.set_tag("request_id", &id);
    }
    crate::telemetry::finish_transaction(transaction, !status.is_server_error());

    span.in_scope(|| {
        if let Some(InternalDetail(detail)) = response.extensions_mut().remove::<InternalDetail>() {
            let detail = mask_emails_in(&detail);
            tracing::error!(error = %detail, "request failed");
            sentry::with_scope(
                |scope| {
                    scope.set_tag("request_id", &id);
                    scope.set_tag("route", &route);
                },
                || {
                    sentry::capture_message(
                        &format!("{method} {route}: {detail}"),
                        sentry::Level::Error,
                    )
                },
            );
        }
        // A rate-limit refusal is counted in the metrics and logged once per client and
        // window by the limiter, not once per request.
        if response
            .extensions()
            .get::<super::limit::Refused>()
            .is_some()
        {
            return;
        }
        tracing::info!(
            target: "herald::access",
            request_id = %id,
            method = %method,
            route = %route,
            status = status.as_u16(),
            // To the microsecond: `0.317`, not the float's `0.31686000000000003`.
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            "request"
        );
    });
    crate::metrics::http_request(&method, &route, status.as_u16(), elapsed);

    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID.clone(), value);
    }
    security_headers(headers, state.config.server.hsts_max_age);
    response
}

fn security_headers(headers: &mut http::HeaderMap, hsts_max_age: Option<u64>) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(max_age) = hsts_max_age
        && let Ok(value) = HeaderValue::from_str(&format!("max-age={max_age}; includeSubDomains"))
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
}

/// Bounds every handler; one that overruns gets a 504 and its future is dropped.
pub async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.config.server.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout = ?state.config.server.request_timeout, "handler timed out");
            ApiError::Timeout.into_response()
        }
    }
}

/// Turns a panic in a handler into a 500 `INTERNAL`; the panic message goes to the logs.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = herald_actors::panic_text(panic.as_ref());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("NOT_FOUND", "No such route.")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
