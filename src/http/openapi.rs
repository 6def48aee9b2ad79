//! The OpenAPI document served at `/openapi.json`. The router registers each handler with
//! its `#[utoipa::path]` (see [`super::router`]), so a route cannot be served undocumented or
//! documented unserved. The answers every route of a kind shares (a body that is not JSON, a
//! missing key, a refused rate, an unavailable database) are added here once, by kind, rather
//! than repeated on each handler.

use std::sync::OnceLock;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as Answer, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

pub use super::error::ErrorBody;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document's head; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(title = "herald", description = "Throttled, idempotent delivery of learning-session reports and digests."),
    // Schemas a handler's types name only through a reference utoipa does not follow.
    components(schemas(ErrorBody, super::routes::actors::Failure)),
    modifiers(&Security),
)]
pub struct ApiDoc;

/// The routes that never touch the database or an actor, so never answer 503.
const ALWAYS_ANSWER: [&str; 3] = ["/healthz", "/metrics", "/openapi.json"];

static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();

/// Completes the router's document with the shared answers and keeps it, serialised, for
/// `/openapi.json`. Every router herald builds documents the same routes, so the first
/// document kept is the one served.
pub fn publish(mut document: utoipa::openapi::OpenApi) {
    DOCUMENT.get_or_init(|| {
        shared_answers(&mut document);
        serde_json::to_vec(&document).expect("an OpenAPI document serialises")
    });
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    let body = DOCUMENT.get().cloned().unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The 401 of every route behind the admin key check (their 429, for failed attempts, is
/// every keyed route's: see [`shared_answers`]).
pub fn admin_answers(document: &mut utoipa::openapi::OpenApi) {
    for operation in operations(document) {
        add(
            operation,
            401,
            "UNAUTHORIZED: the admin key is missing or wrong",
        );
    }
}

/// The 429 of every route behind a rate-limit group.
pub fn limited_answers(document: &mut utoipa::openapi::OpenApi) {
    for operation in operations(document) {
        add(
            operation,
            429,
            "RATE_LIMIT_EXCEEDED: with Retry-After and the RateLimit headers",
        );
    }
}

fn shared_answers(document: &mut utoipa::openapi::OpenApi) {
    for (path, item) in document.paths.paths.iter_mut() {
        let always = ALWAYS_ANSWER.contains(&path.as_str());
        for operation in item_operations(item) {
            if let Some(body) = &operation.request_body {
                let json = body.content.contains_key("application/json");
                add(
                    operation,
                    400,
                    "VALIDATION_ERROR: the body is not valid for this route (malformed, a wrong type, an unknown field)",
                );
                if json {
                    add(
                        operation,
                        415,
                        "UNSUPPORTED_MEDIA_TYPE: a body sent without Content-Type: application/json",
                    );
                }
            }
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query));
            if has_query {
                add(
                    operation,
                    400,
                    "VALIDATION_ERROR: a query parameter given twice, or not of its type",
                );
            }
            // Every route that takes a key (the only scheme) counts failed attempts (see
            // `super::auth`).
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(
                    operation,
                    429,
                    "RATE_LIMIT_EXCEEDED: too many failed authentications from this client",
                );
            }
            if !always {
                add(
                    operation,
                    503,
                    "SERVICE_UNAVAILABLE: the database or an actor cannot answer now; Retry-After says when to try again",
                );
                add(
                    operation,
                    504,
                    "TIMEOUT: the request took longer than REQUEST_TIMEOUT_SECONDS",
                );
            }
        }
    }
}

fn operations(document: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    document.paths.paths.values_mut().flat_map(item_operations)
}

fn item_operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds an answer in herald's error format, unless the handler documents that status itself.
fn add(operation: &mut Operation, status: u16, description: &str) {
    let status = status.to_string();
    if operation.responses.responses.contains_key(&status) {
        return;
    }
    let answer: Answer = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build();
    operation
        .responses
        .responses
        .insert(status, RefOr::T(answer));
}
