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
    // The id a request sent with `sent` (none: without the header) is answered with.
    let answered = async |sent: Option<&str>| {
        let mut request = app.client.get(app.url("/healthz"));
        if let Some(sent) = sent {
            request = request.header("X-Request-ID", sent);
        }
        let response = request.send().await.unwrap();
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let generated = answered(None).await;
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert_eq!(answered(Some("client-chosen-42")).await, "client-chosen-42");
    // A hostile id, or one made of a parent's address (which would put the address,
    // unmasked, in every log line and Sentry event of the request): a new id instead.
    for refused in ["x".repeat(500), "report-parent@example.com-7".to_owned()] {
        let id = answered(Some(&refused)).await;
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{refused}: {id}");
    }
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
    // Too large comes first, whatever the type, as on the routes that read the body before
    // they check their caller.
    let too_large = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("x".repeat(4096))
        .send()
        .await
        .unwrap();
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

/// A raw connection to the app, for what a client library would not do.
async fn raw_connection(app: &TestApp) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection, within `within`; what it sent before.
async fn closed_by_the_server(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut read = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut read))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&read).into_owned()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n";

/// A client that opens connections and sends nothing, or its headers a little at a time,
/// holds them only for `HTTP_IDLE_TIMEOUT_SECONDS`; as does one idle after its request.
#[tokio::test]
async fn a_connection_without_a_whole_request_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut app = spawn_edge_app(|vars| {
        vars.insert("HTTP_IDLE_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let mut silent = raw_connection(&app).await;
    let mut slow = raw_connection(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut answered = raw_connection(&app).await;
    answered.write_all(HEALTHZ).await.unwrap();
    for line in ["Host: herald\r\n", "Accept: */*\r\n"] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        slow.write_all(line.as_bytes()).await.unwrap();
    }
    // Open still, 600 ms on: the timeout is the setting's, not sooner.
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut silent, &mut byte)
        )
        .await
        .is_err(),
        "closed before the idle timeout"
    );
    assert_eq!(
        closed_by_the_server(&mut silent, Duration::from_secs(5)).await,
        ""
    );
    assert_eq!(
        closed_by_the_server(&mut slow, Duration::from_secs(5)).await,
        ""
    );
    let before = closed_by_the_server(&mut answered, Duration::from_secs(5)).await;
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    // A client that sends its request in time is served as before.
    let mut prompt = raw_connection(&app).await;
    prompt.write_all(HEALTHZ).await.unwrap();
    let answer = closed_by_the_server(&mut prompt, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A connection idle after its request does not hold up a shutdown.
    let mut idle = raw_connection(&app).await;
    idle.write_all(HEALTHZ).await.unwrap();
    let mut buffer = [0u8; 512];
    tokio::io::AsyncReadExt::read(&mut idle, &mut buffer)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_millis(900), app.stop())
        .await
        .expect("stops with an idle connection open");
}

/// Past `HTTP_MAX_CONNECTIONS` a new connection waits in the listen queue, and is served as
/// soon as one closes: connections cannot take every file descriptor herald has.
#[tokio::test]
async fn a_connection_past_the_limit_waits_for_one_to_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut app = spawn_edge_app(|vars| {
        vars.insert("HTTP_MAX_CONNECTIONS".into(), "2".into());
        vars.insert("REQUEST_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        // Answered, so accepted; kept alive.
        let mut connection = raw_connection(&app).await;
        connection.write_all(HEALTHZ).await.unwrap();
        let mut buffer = [0u8; 512];
        let read = connection.read(&mut buffer).await.unwrap();
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(connection);
    }
    let mut waiting = raw_connection(&app).await;
    waiting.write_all(HEALTHZ).await.unwrap();
    let mut buffer = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buffer))
            .await
            .is_err(),
        "a third connection was served beside two"
    );
    drop(held.pop());
    let read = tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buffer))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    // A connection halfway through its request head holds up a shutdown no longer than a
    // request may take (here 1 s; the idle timeout is 75 s).
    drop((held, waiting));
    let mut halfway = raw_connection(&app).await;
    halfway
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(5), app.stop())
        .await
        .expect("stops with a request head halfway");
}

/// A request head past `MAX_HEAD_BYTES` is answered 431 and its connection closed; one within
/// it is served.
#[tokio::test]
async fn a_request_head_past_its_limit_is_refused_with_431() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_edge_app(|_| {}).await;
    for (size, answer) in [
        (herald::http::serve::MAX_HEAD_BYTES / 2, "HTTP/1.1 200"),
        (herald::http::serve::MAX_HEAD_BYTES + 1, "HTTP/1.1 431"),
    ] {
        let mut connection = raw_connection(&app).await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        );
        connection.write_all(head.as_bytes()).await.unwrap();
        let read = closed_by_the_server(&mut connection, Duration::from_secs(5)).await;
        assert!(read.starts_with(answer), "{size} bytes: {read}");
    }
}
