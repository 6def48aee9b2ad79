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
pub mod state;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use http::{HeaderName, HeaderValue, Method};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::require_admin_key;

use crate::ratelimit::Group;
pub use limit::RateLimitLayer;
pub use state::AppState;

/// Every route herald serves, plus `extra` when given, with the edge layers applied.
pub fn router(state: AppState, extra: Option<Router<AppState>>) -> Router {
    let admin = Router::new()
        .route("/admin/actors", get(routes::actors::list))
        .route("/admin/rate_limits/reset", post(routes::rate_limits::reset))
        .route(
            "/admin/throttles/{email}",
            get(routes::email_admin::throttle_state).delete(routes::email_admin::throttle_reset),
        )
        .route("/admin/email/logs", get(routes::email_admin::email_logs))
        .route("/admin/suppressions", get(routes::suppressions::list))
        .route(
            "/admin/suppressions/{email}",
            delete(routes::suppressions::lift),
        )
        .route("/admin/jobs", get(routes::jobs::list))
        .route("/api/v1/ops/metrics", get(routes::ops::snapshot))
        .route("/admin/jobs/{name}/run", post(routes::jobs::run))
        .route("/admin/jobs/{name}/runs", get(routes::jobs::runs))
        .route(
            "/api/v1/ops/rate_limits",
            get(routes::rate_limits::list).put(routes::rate_limits::update),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin_key,
        ));

    let public = Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/health", get(routes::health::health))
        .route("/health/ready", get(routes::health::ready))
        .route("/metrics", get(routes::metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json));

    let stats = limited(
        Router::new()
            .route("/api/v1/stats/dashboard", get(routes::stats::dashboard))
            .route("/api/v1/stats/summary", get(routes::stats::summary)),
        &state,
        Group::Stats,
    );

    let reports = limited(
        Router::new()
            .route(
                "/api/v1/reports/session/{id}/summary",
                get(routes::reports::summary),
            )
            .route(
                "/api/v1/reports/session/{id}/pdf",
                get(routes::reports::pdf),
            ),
        &state,
        Group::Reports,
    );

    let sessions = Router::new()
        .route("/api/v1/sessions/start", post(routes::sessions::start))
        .route(
            "/api/v1/sessions/{id}/events",
            post(routes::sessions::add_event),
        )
        .route(
            "/api/v1/sessions/{id}/complete",
            post(routes::sessions::complete),
        )
        .route(
            "/api/v1/email/unsubscribe/{token}",
            get(routes::unsubscribe::confirm).post(routes::unsubscribe::apply),
        )
        .route("/api/v1/email/events", post(routes::email_events::generic))
        .route(
            "/api/v1/email/events/sendgrid",
            // SendGrid posts events in batches of up to several hundred kilobytes.
            post(routes::email_events::sendgrid).layer(DefaultBodyLimit::max(1024 * 1024)),
        );

    let mut routes = public
        .merge(admin)
        .merge(stats)
        .merge(reports)
        .merge(sessions);
    if let Some(extra) = extra {
        routes = routes.merge(extra);
    }
    with_edge(routes, state)
}

/// Puts `routes` behind the rate limit of `group`.
fn limited(routes: Router<AppState>, state: &AppState, group: Group) -> Router<AppState> {
    routes.route_layer(RateLimitLayer::new(state.clone(), group))
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
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                http::header::RETRY_AFTER,
            ]),
    )
}
