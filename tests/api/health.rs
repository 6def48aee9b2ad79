use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;

async fn healthz_answers_ok(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.healthz().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

async fn health_reports_every_component(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.health().await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["db"], "ok");
    assert_eq!(body["email"], "console");
    assert_eq!(body["actors"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["migrations"]["status"], "ok");
    assert!(body["uptime_seconds"].as_u64().is_some());
}

async fn health_degrades_when_the_database_is_gone_but_healthz_does_not(backend: Backend) {
    let app = spawn_app(backend).await;
    app.state.store.close().await;

    let response = app.health().await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["db"], "error");

    let ready = app.ready().await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert!(body["reasons"].to_string().contains("database unreachable"));

    assert_eq!(app.healthz().await.status(), 200);
}

async fn ready_once_migrated_and_not_ready_while_migrations_are_pending(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.ready().await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    let response = app.ready().await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("migrations pending"),
        "{body}"
    );
    assert_eq!(app.health().await.status(), 503);
}

async fn admin_actors_shows_the_supervision_tree(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.actors().await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["supervisor"], "root");
    assert_eq!(body["alive"], true);
    assert!(body["children"].is_array());
}

async fn shutdown_stops_serving_gracefully(backend: Backend) {
    let mut app = spawn_app(backend).await;
    assert_eq!(app.healthz().await.status(), 200);
    assert_eq!(app.stop().await, herald::startup::Stopped::Graceful);
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());
}

on_both_backends!(
    healthz_answers_ok,
    health_reports_every_component,
    health_degrades_when_the_database_is_gone_but_healthz_does_not,
    ready_once_migrated_and_not_ready_while_migrations_are_pending,
    admin_actors_shows_the_supervision_tree,
    shutdown_stops_serving_gracefully,
);

#[tokio::test]
async fn metrics_are_labelled_by_matched_route_and_can_require_a_token() {
    let app = spawn_app(Backend::Sqlite).await;
    app.get("/admin/actors").await;
    let text = app.metrics().await;
    assert!(text.contains("# HELP http_requests_total"));
    assert!(
        text.contains(r#"route="/admin/actors",status="401""#),
        "{text}"
    );
    assert!(text.contains("herald_build_info{version="));
    assert!(text.contains("process_resident_memory_bytes"));
    app.client
        .post(app.url("/api/v1/sessions/start"))
        .send()
        .await
        .unwrap();
    app.dashboard().await;
    let text = app.metrics().await;
    for name in [
        "sessions_started_total",
        "rate_limit_checks_total",
        "rate_limit_keys",
        "http_request_duration_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }

    let guarded = crate::helpers::spawn_app_with(
        Backend::Sqlite,
        |v| {
            v.insert("METRICS_TOKEN".into(), "scrape-token".into());
        },
        None,
    )
    .await;
    crate::helpers::assert_error(guarded.get("/metrics").await, 401, "UNAUTHORIZED").await;
    let ok = guarded
        .client
        .get(guarded.url("/metrics"))
        .bearer_auth("scrape-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// Every (method, path) the router declares, read from the router's own source: each
/// `.route("…", get(…).post(…))` in `src/http/mod.rs`.
fn router_routes() -> Vec<(String, String)> {
    routes_in(include_str!("../../src/http/mod.rs"))
}

/// The routes declared by the admin router (the block that ends in the admin-key layer).
pub(crate) fn admin_routes() -> Vec<(String, String)> {
    let source = include_str!("../../src/http/mod.rs");
    let start = source
        .find("let admin = Router::new()")
        .expect("the admin router");
    let end = start
        + source[start..]
            .find(".route_layer(")
            .expect("its key layer");
    routes_in(&source[start..end])
}

/// The `.route(…)` declarations in `source`.
fn routes_in(source: &str) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let open = rest.find('"').unwrap();
        let close = open + 1 + rest[open + 1..].find('"').unwrap();
        let path = &rest[open + 1..close];
        let end = rest.find(".route").unwrap_or(rest.len());
        let handlers = &rest[close..end];
        for method in ["get", "post", "put", "delete", "patch"] {
            let called = [
                format!(" {method}("),
                format!(".{method}("),
                format!("\n{method}("),
            ];
            if called.iter().any(|c| handlers.contains(c.as_str()))
                || handlers
                    .trim_start_matches([',', ' ', '\n'])
                    .starts_with(&format!("{method}("))
            {
                routes.push((method.to_owned(), path.to_owned()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_of_the_router() {
    let app = spawn_app(Backend::Sqlite).await;
    let spec = app.openapi().await;
    let routes = router_routes();
    assert!(routes.len() >= 25, "{routes:?}");
    for (method, path) in &routes {
        assert!(
            spec["paths"][path].get(method).is_some(),
            "{method} {path} is served but missing from /openapi.json"
        );
    }
    // And nothing is documented that the router does not serve.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} is documented but not served"
            );
        }
    }
    // Every reference resolves: a client generated from the document needs each schema.
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, inner) in map {
                    match (key.as_str(), inner.as_str()) {
                        ("$ref", Some(target)) => out.push(target.to_owned()),
                        _ => refs(inner, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut targets = Vec::new();
    refs(&spec, &mut targets);
    for target in &targets {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} points outside the schemas"));
        assert!(
            spec["components"]["schemas"].get(name).is_some(),
            "{target} does not resolve"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
    assert!(
        spec["paths"]["/admin/actors"]["get"]["responses"]
            .get("401")
            .is_some()
    );
}

#[tokio::test]
async fn the_ops_snapshot_has_the_seed_shape() {
    let app = spawn_app(Backend::Sqlite).await;
    let started: serde_json::Value = app
        .client
        .post(app.url("/api/v1/sessions/start"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = app.get_admin("/api/v1/ops/metrics?days=7").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["timestamp"].is_string());
    let metrics = &body["metrics"];
    for key in [
        "period_days",
        "sessions_started",
        "sessions_completed",
        "emails_sent",
        "emails_suppressed",
        "emails_throttled",
        "emails_failed",
        "rate_limit_hits",
        "avg_sql_latency_ms",
    ] {
        assert!(metrics.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(metrics["period_days"], 7);
    assert_eq!(metrics["sessions_started"], 1, "{started}");
    let bad = app.get_admin("/api/v1/ops/metrics?days=999").await;
    crate::helpers::assert_error(bad, 422, "VALIDATION_ERROR").await;
}

#[tokio::test]
async fn an_actor_that_keeps_failing_degrades_health_then_escalates_to_a_non_zero_exit() {
    let mut app = crate::helpers::spawn_app_with(
        Backend::Sqlite,
        |v| {
            v.insert("EMAIL_POLL_INTERVAL_MS".into(), "50".into());
        },
        None,
    )
    .await;
    // The dispatcher cannot claim without its table: it fails on every tick.
    sqlx::query("DROP TABLE email_send_logs")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut saw_restarts = false;
    loop {
        if let Ok(response) = app
            .client
            .get(app.url("/admin/actors"))
            .header("X-API-Key", crate::helpers::API_KEY)
            .send()
            .await
        {
            let tree: serde_json::Value = response.json().await.unwrap_or_default();
            let restarts = tree["children"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["id"] == "email_dispatcher")
                .and_then(|c| c["restarts"].as_u64())
                .unwrap_or(0);
            saw_restarts |= restarts > 0;
        } else {
            break; // the server has stopped
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the root supervisor never gave up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        saw_restarts,
        "the dispatcher was restarted before the escalation"
    );
    assert_eq!(app.stop().await, herald::startup::Stopped::Escalated);
}
