//! The HTTP edge over real HTTP: request ids, security headers, the error format for every
//! kind of failure, timeouts, panics, CORS and graceful shutdown. Test routes are mounted
//! behind the same layers as herald's own.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use herald::http::AppState;
use herald::http::extract::Json;

use crate::helpers::{Backend, TestApp, assert_error, spawn_app, spawn_app_with};

#[derive(serde::Deserialize)]
struct Echo {
    name: String,
    count: u32,
}

fn test_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/test/echo",
            post(|Json(body): Json<Echo>| async move { format!("{}:{}", body.name, body.count) }),
        )
        .route(
            "/test/panic",
            get(|| async {
                panic!("secret detail for parent@example.com");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .route(
            "/test/hang",
            get(|| async {
                std::future::pending::<()>().await;
                ""
            }),
        )
}

async fn spawn_edge_app(
    configure: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> TestApp {
    spawn_app_with(Backend::Sqlite, configure, Some(test_routes())).await
}

fn assert_security_headers(response: &reqwest::Response) {
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(
        headers["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_request_id_is_generated_or_propagated_on_every_response() {
    let app = spawn_app(Backend::Sqlite).await;
    let generated = app.healthz().await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let propagated = app
        .client
        .get(app.url("/nope"))
        .header("X-Request-ID", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(propagated.headers()["x-request-id"], "client-chosen-42");

    let hostile = app
        .client
        .get(app.url("/healthz"))
        .header("X-Request-ID", "x".repeat(500))
        .send()
        .await
        .unwrap();
    assert_ne!(hostile.headers()["x-request-id"].len(), 500);
}

#[tokio::test]
async fn security_headers_are_on_successes_and_errors_alike() {
    let app = spawn_app(Backend::Sqlite).await;
    for response in [
        app.healthz().await,
        app.get("/nope").await,
        app.get("/admin/actors").await,
    ] {
        assert_security_headers(&response);
    }
    assert!(
        !app.healthz()
            .await
            .headers()
            .contains_key("strict-transport-security")
    );
}

#[tokio::test]
async fn hsts_is_sent_when_configured() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |v| {
            v.insert("HSTS_MAX_AGE".into(), "31536000".into());
        },
        None,
    )
    .await;
    let response = app.healthz().await;
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_the_json_error_format() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_error(app.get("/api/v1/nothing-here").await, 404, "NOT_FOUND").await;
    let wrong_method = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_security_headers(&wrong_method);
    assert_error(wrong_method, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn bad_json_bodies_get_400_naming_the_field_415_and_413() {
    let app = spawn_edge_app(|v| {
        v.insert("MAX_BODY_BYTES".into(), "1024".into());
    })
    .await;
    let url = app.url("/test/echo");

    let ok = app
        .client
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "a:2");

    let wrong_type = app
        .client
        .post(&url)
        .json(&serde_json::json!({"name": "a", "count": "two"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(wrong_type, 400, "VALIDATION_ERROR").await;
    assert_eq!(body["field"], "count");

    let missing = app
        .client
        .post(&url)
        .json(&serde_json::json!({"count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(missing, 400, "VALIDATION_ERROR").await["field"],
        "name"
    );

    let malformed = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_error(malformed, 400, "VALIDATION_ERROR").await;

    let not_json = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("name=a")
        .send()
        .await
        .unwrap();
    assert_error(not_json, 415, "UNSUPPORTED_MEDIA_TYPE").await;

    let huge = serde_json::json!({"name": "x".repeat(4096), "count": 1});
    let too_large = app.client.post(&url).json(&huge).send().await.unwrap();
    assert_error(too_large, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn a_panicking_handler_gives_a_500_without_details_and_the_server_keeps_serving() {
    let app = spawn_edge_app(|_| {}).await;
    let response = app.get("/test/panic").await;
    assert_security_headers(&response);
    let body = assert_error(response, 500, "INTERNAL").await;
    let text = body.to_string();
    assert!(
        !text.contains("secret detail") && !text.contains("parent@"),
        "{text}"
    );
    assert_eq!(app.healthz().await.status(), 200);
}

#[tokio::test]
async fn a_handler_that_overruns_the_timeout_gets_a_504() {
    let app = spawn_edge_app(|v| {
        v.insert("REQUEST_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let response = app.get("/test/hang").await;
    assert_security_headers(&response);
    assert_error(response, 504, "TIMEOUT").await;
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = spawn_app_with(
        Backend::Sqlite,
        |v| {
            v.insert("CORS_ORIGINS".into(), "https://app.example.com".into());
        },
        None,
    )
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/health"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    // A page on the allowed origin can read the request's id and its rate-limit headers.
    let limited = app
        .client
        .get(app.url("/api/v1/stats/dashboard"))
        .header("Origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(limited.headers().contains_key("ratelimit"));
    let exposed = limited.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in [
        "x-request-id",
        "idempotent-replayed",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
    ] {
        assert!(
            exposed.split(',').any(|h| h.trim() == name),
            "{name}: {exposed}"
        );
    }
    // A page may send an event with its session token and an Idempotency-Key.
    let preflight = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            app.url("/api/v1/sessions/00000000-0000-4000-8000-000000000000/events"),
        )
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,idempotency-key,x-session-access-token",
        )
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for name in ["content-type", "idempotency-key", "x-session-access-token"] {
        assert!(
            allowed.split(',').any(|h| h.trim() == name),
            "{name}: {allowed}"
        );
    }
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let entered = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (signal, gate) = (entered.clone(), release.clone());
    let routes = Router::new().route(
        "/test/slow",
        get(move || async move {
            signal.notify_one();
            // In flight until the test lets it finish, after shutdown has begun.
            gate.notified().await;
            "done"
        }),
    );
    let mut app = spawn_app_with(Backend::Sqlite, |_| {}, Some(routes)).await;
    let client = app.client.clone();
    let url = app.url("/test/slow");
    let address = app.address.trim_start_matches("http://").to_owned();
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::timeout(Duration::from_secs(5), entered.notified())
        .await
        .expect("handler entered");

    let stopping = tokio::spawn(async move { app.stop().await });
    // Shutdown has begun once new connections are refused; only then may the request end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&address).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    release.notify_one();
    assert_eq!(stopping.await.unwrap(), herald::startup::Stopped::Graceful);
    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
}
