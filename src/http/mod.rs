//! The HTTP edge: the router, its middleware and the error format.
//!
//! Layer order matters and is fixed here: request context (id, access log, metrics,
//! security headers) outermost, then CORS, the handler timeout, panic catching and the
//! body limit, then the routes. Admin routes sit in their own router behind the key check.

pub mod auth;
pub mod error;
pub mod extract;
pub mod limit;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod state;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use http::{HeaderName, HeaderValue, Method};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::require_admin_key;

use crate::ratelimit::Group;
pub use limit::RateLimitLayer;
pub use state::AppState;

/// Every route herald serves, plus `extra` when given, with the edge layers applied.
pub fn router(state: AppState, extra: Option<Router<AppState>>) -> Router {
    let (routes, document) = api(&state).split_for_parts();
    openapi::publish(document);
    let mut routes = routes;
    if let Some(extra) = extra {
        routes = routes.merge(extra);
    }
    with_edge(routes, state)
}

/// The routes and their documentation, registered together so the two cannot drift: a
/// handler's `#[utoipa::path]` gives both its place in the router and its entry in
/// `/openapi.json`.
fn api(state: &AppState) -> OpenApiRouter<AppState> {
    let admin = admin(state);

    let public = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::health))
        .routes(routes!(routes::health::ready))
        .routes(routes!(routes::metrics::metrics))
        .routes(routes!(openapi::openapi_json));

    let stats = limited(
        OpenApiRouter::new()
            .routes(routes!(routes::stats::dashboard))
            .routes(routes!(routes::stats::summary)),
        state,
        Group::Stats,
    );

    let reports = limited(
        OpenApiRouter::new()
            .routes(routes!(routes::reports::summary))
            .routes(routes!(routes::reports::pdf)),
        state,
        Group::Reports,
    );

    // SendGrid posts events in batches of up to several hundred kilobytes.
    let (schemas, paths, sendgrid) = routes!(routes::email_events::sendgrid);
    let sendgrid = (
        schemas,
        paths,
        sendgrid.layer(DefaultBodyLimit::max(1024 * 1024)),
    );
    let start = limited(
        OpenApiRouter::new().routes(routes!(routes::sessions::start::start)),
        state,
        Group::Sessions,
    );
    let sessions = OpenApiRouter::new()
        .merge(start)
        .routes(routes!(routes::sessions::events::add_event))
        .routes(routes!(routes::sessions::completion::complete))
        .routes(routes!(
            routes::unsubscribe::confirm,
            routes::unsubscribe::apply
        ))
        .routes(routes!(routes::email_events::generic))
        .routes(routes!(routes::preferences::get, routes::preferences::put))
        .routes(routes!(
            routes::preferences::page,
            routes::preferences::page_save
        ))
        .routes(sendgrid);

    public
        .merge(admin)
        .merge(stats)
        .merge(reports)
        .merge(sessions)
}

/// The routes behind the admin key, each answering 401 without it.
fn admin(state: &AppState) -> OpenApiRouter<AppState> {
    let mut admin = OpenApiRouter::new()
        .routes(routes!(routes::actors::list))
        .routes(routes!(routes::audit::list))
        .routes(routes!(routes::replicas::list))
        .routes(routes!(routes::rate_limits::reset))
        .routes(routes!(
            routes::email_admin::throttle_state,
            routes::email_admin::throttle_reset
        ))
        .routes(routes!(routes::email_admin::email_logs))
        .routes(routes!(routes::email_retry::retry))
        .routes(routes!(routes::email_retry::retry_failed))
        .routes(routes!(routes::email_admin::preview_report))
        .routes(routes!(routes::email_admin::preview_digest))
        .routes(routes!(
            routes::suppressions::list,
            routes::suppressions::add
        ))
        .routes(routes!(routes::suppressions::lift))
        .routes(routes!(routes::recipients::show, routes::recipients::erase))
        .routes(routes!(routes::jobs::list))
        .routes(routes!(routes::ops::snapshot))
        .routes(routes!(routes::jobs::run))
        .routes(routes!(routes::jobs::runs))
        .routes(routes!(
            routes::rate_limits::list,
            routes::rate_limits::update
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_key,
        ));
    openapi::admin_answers(admin.get_openapi_mut());
    admin
}

/// Every admin route as (method, path template), read from the router itself.
pub fn admin_routes(state: &AppState) -> Vec<(String, String)> {
    let document = admin(state).into_openapi();
    let mut routes = Vec::new();
    for (path, item) in &document.paths.paths {
        for (method, operation) in [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ] {
            if operation.is_some() {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

/// Puts `routes` behind the rate limit of `group`.
fn limited(
    routes: OpenApiRouter<AppState>,
    state: &AppState,
    group: Group,
) -> OpenApiRouter<AppState> {
    let mut routes = routes.route_layer(RateLimitLayer::new(state.clone(), group));
    openapi::limited_answers(routes.get_openapi_mut());
    routes
}

/// Applies the edge layers.
fn with_edge(routes: Router<AppState>, state: AppState) -> Router {
    let mut router = routes
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ));
    if let Some(cors) = cors(&state.config.server.cors_origins) {
        router = router.layer(cors);
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                http::header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-session-access-token"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            // What a browser client needs to read: the request's id for a support ticket,
            // when it may try again (the rate-limit headers, not only on a 429), and whether
            // an answer is to a request sent before.
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotent-replayed"),
                http::header::RETRY_AFTER,
                limit::RATELIMIT,
                limit::RATELIMIT_POLICY,
            ]),
    )
}
