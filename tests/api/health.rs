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

/// `/admin/replicas` lists the replica answering (alone here, agreeing with itself); it
/// removes its row as it stops.
async fn admin_replicas_lists_this_one_until_it_stops(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let instance = app.state.config.server.instance.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let body: serde_json::Value = app.get_admin("/admin/replicas").await.json().await.unwrap();
        if body["replicas"].as_array().is_some_and(|r| !r.is_empty()) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(body["instance"], instance.as_str());
    let replicas = body["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{body}");
    assert_eq!(replicas[0]["instance"], instance.as_str());
    assert_eq!(replicas[0]["this"], true);
    assert_eq!(replicas[0]["differing"], serde_json::json!([]));

    let url = app.state.config.storage.database_url.expose().to_owned();
    app.stop().await;
    let store = herald::store::Store::connect(&url).await.unwrap();
    let left = herald::store::replicas::live(&store, 0).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    store.close().await;
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
    admin_replicas_lists_this_one_until_it_stops,
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

#[tokio::test]
async fn every_documented_route_is_served() {
    // The router registers each handler with its documentation (utoipa-axum), so nothing
    // can be served undocumented; this checks the other way: each documented operation
    // reaches a handler, not the router's 404 or 405 fallback.
    let app = spawn_app(Backend::Sqlite).await;
    let spec = app.openapi().await;
    let mut count = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{email}", "nobody@example.com")
            .replace("{name}", "weekly_digest")
            .replace("{token}", "v1.x.y");
        for method in item.as_object().unwrap().keys() {
            count += 1;
            let answer = app
                .client
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_ne!(answer.status(), 405, "{method} {path}");
            if answer.status() == 404 {
                let body = answer.text().await.unwrap();
                assert!(!body.contains("No such route"), "{method} {path}: {body}");
            }
        }
    }
    assert!(count >= 28, "{count} operations documented");
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
    // The audit log's `action` filter documents every action herald records, and no other.
    let action = spec["paths"]["/admin/audit"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "action")
        .expect("the action parameter");
    let pattern = action["schema"]["pattern"].as_str().unwrap();
    let mut documented: Vec<String> = pattern
        .strip_prefix("^(")
        .and_then(|p| p.strip_suffix(")$"))
        .unwrap_or_else(|| panic!("{pattern}"))
        .split('|')
        .map(|a| a.replace("\\.", "."))
        .collect();
    documented.sort();
    assert_eq!(documented, herald::store::audit::ACTIONS);
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
