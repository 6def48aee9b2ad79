//! Sentry, end to end: the DSN points at a listener on 127.0.0.1; a handler panic, an
//! actor failure, a failed job and a 5xx each arrive as an event, tagged, with no secret
//! and no raw email address in them.
//!
//! A test binary of its own, because the Sentry client is process-wide.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use herald::http::AppState;

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use helpers::{API_KEY, Backend, spawn_app_with};

async fn listener() -> (String, Arc<Mutex<Vec<String>>>) {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let store = received.clone();
    let app = Router::new().route(
        "/api/{project}/envelope/",
        post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                store
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                "{}"
            }
        }),
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(socket, app).await });
    (format!("http://public-key@127.0.0.1:{port}/1"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_actor_failures_job_failures_and_5xx_reach_sentry_scrubbed() {
    herald::install_tls_provider();
    let (dsn, received) = listener().await;
    let routes: Router<AppState> = Router::new().route(
        "/test/panic",
        get(|| async {
            panic!("cannot render for parent@example.com");
            #[allow(unreachable_code)]
            ""
        }),
    );
    let app = spawn_app_with(
        Backend::Sqlite,
        |vars| {
            vars.insert("SENTRY_DSN".into(), dsn.clone());
        },
        Some(routes),
    )
    .await;
    let config = helpers::config_from({
        let mut vars = helpers::config_vars("sqlite::memory:");
        vars.insert("SENTRY_DSN".into(), dsn.clone());
        vars
    });
    let guard = herald::telemetry::init_sentry(&config).expect("Sentry starts with a DSN");

    // A panic in a handler (500), with a secret header and an address in the message.
    let panicked = app
        .client
        .get(app.url("/test/panic"))
        .header("X-API-Key", API_KEY)
        .header("X-Request-ID", "req-sentry-1")
        .send()
        .await
        .unwrap();
    assert_eq!(panicked.status(), 500);
    // An actor failure.
    app.state
        .limiter
        .crash_shard_of(herald_actors::limiter::key(1, "127.0.0.1"));
    // A failed job.
    sqlx::query("DROP TABLE audit_log")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    let ran = app
        .client
        .post(app.url("/admin/jobs/purge_old/run"))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), 202);
    // A 5xx from the database.
    sqlx::query("DROP TABLE sessions")
        .execute(app.state.store.writer())
        .await
        .ok();
    let failed = app
        .client
        .get(app.url("/api/v1/stats/dashboard"))
        .header("X-Request-ID", "req-sentry-2")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    // Performance monitoring: requests and job runs become transactions (sampled at 1.0 in
    // development), named by route template and job.
    assert_eq!(app.healthz().await.status(), 200);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let wanted = [
        "handler panicked",
        "actor shard-",
        "job purge_old failed",
        "GET /api/v1/stats/dashboard",
        "\"type\":\"transaction\"",
        "\"transaction\":\"GET /healthz\"",
        "\"transaction\":\"job purge_old\"",
    ];
    loop {
        guard.flush(Some(Duration::from_millis(500)));
        let all = received.lock().unwrap().join("\n");
        if wanted.iter().all(|w| all.contains(w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing events; received:\n{all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = received.lock().unwrap().join("\n");
    for secret in [API_KEY, "test-signing-secret", "parent@example.com"] {
        assert!(!all.contains(secret), "{secret} reached Sentry:\n{all}");
    }
    assert!(
        all.contains("pa***@example.com"),
        "addresses are masked, not dropped"
    );
    for tag in [
        "\"request_id\":\"req-sentry-1\"",
        "\"request_id\":\"req-sentry-2\"",
        "\"job\":\"purge_old\"",
        "\"actor\":\"shard-",
    ] {
        assert!(all.contains(tag), "{tag} missing:\n{all}");
    }
}
