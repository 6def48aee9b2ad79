//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/openapi.json`. A route is added here in the same change that adds it to the router.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

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

#[derive(OpenApi)]
#[openapi(
    info(title = "herald", description = "Throttled, idempotent delivery of learning-session reports and digests."),
    paths(
        routes::health::healthz,
        routes::health::health,
        routes::health::ready,
        routes::metrics::metrics,
        routes::actors::list,
        routes::rate_limits::list,
        routes::rate_limits::update,
        routes::rate_limits::reset,
        routes::stats::dashboard,
        routes::stats::summary,
        routes::sessions::start,
        routes::sessions::add_event,
        routes::sessions::complete,
        routes::reports::summary,
        routes::reports::pdf,
        routes::unsubscribe::confirm,
        routes::unsubscribe::apply,
        routes::email_admin::throttle_state,
        routes::email_admin::throttle_reset,
        routes::email_admin::email_logs,
        routes::suppressions::list,
        routes::email_events::generic,
        routes::email_events::sendgrid,
        routes::suppressions::lift,
        routes::jobs::list,
        routes::ops::snapshot,
        routes::jobs::run,
        routes::jobs::runs,
        openapi_json,
    ),
    components(schemas(ErrorBody, routes::actors::ActorStatus, routes::actors::Failure)),
    modifiers(&Security),
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
