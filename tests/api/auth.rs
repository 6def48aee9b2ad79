use crate::helpers::{API_KEY, Backend, assert_error, spawn_app};
use crate::on_both_backends;

/// Every path the OpenAPI document marks as needing the key.
fn secured_paths(spec: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn concrete(path: &str) -> String {
    // Any placeholder value will do: the key check runs before the handler.
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn every_admin_route_refuses_a_missing_or_wrong_key(backend: Backend) {
    let app = crate::helpers::spawn_app_with(
        backend,
        |vars| {
            // Enough failures for the whole walk; the limit has a test of its own.
            vars.insert("RATE_LIMIT_AUTH_FAILURES".into(), "10000".into());
            vars.insert("API_KEYS".into(), "client-key-1:pro".into());
        },
        None,
    )
    .await;
    // Every route of the admin router, read from the router itself; the document marks
    // each as needing a key (it also marks the routes that take any client key).
    let routes = herald::http::admin_routes(&app.state);
    let documented = secured_paths(&app.openapi().await);
    for route in &routes {
        assert!(
            documented.contains(route),
            "{route:?} is not documented as secured"
        );
    }
    assert!(
        routes.iter().any(|(_, p)| p == "/admin/actors"),
        "{routes:?}"
    );
    for (method, path) in routes {
        let url = app.url(&concrete(&path));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let missing = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert_error(missing, 401, "UNAUTHORIZED").await;
        let wrong = app
            .client
            .request(method.clone(), &url)
            .header("X-API-Key", format!("{API_KEY}x"))
            .send()
            .await
            .unwrap();
        assert_error(wrong, 401, "UNAUTHORIZED").await;
        let client_key = app
            .client
            .request(method.clone(), &url)
            .header("X-API-Key", "client-key-1")
            .send()
            .await
            .unwrap();
        assert_error(client_key, 401, "UNAUTHORIZED").await;
        let in_query = app
            .client
            .request(
                method,
                format!("{url}?api_key={API_KEY}&x_api_key={API_KEY}"),
            )
            .send()
            .await
            .unwrap();
        assert_error(in_query, 401, "UNAUTHORIZED").await;
    }
}

async fn the_right_key_opens_admin_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get_admin("/admin/actors").await.status(), 200);
}

async fn a_client_key_is_not_an_admin_key(backend: Backend) {
    let app = crate::helpers::spawn_app_with(
        backend,
        |vars| {
            vars.insert("API_KEYS".into(), "client-key-1:pro".into());
        },
        None,
    )
    .await;
    let response = app
        .client
        .get(app.url("/admin/actors"))
        .header("X-API-Key", "client-key-1")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "UNAUTHORIZED").await;
}

/// With `SESSION_START_AUTH=key` only a caller with a key starts sessions (a client's or
/// the admin's); a missing or wrong one is refused before anything is made, and the
/// session's own token carries on as before.
async fn a_deployment_can_require_a_key_to_start_a_session(backend: Backend) {
    let app = crate::helpers::spawn_app_with(
        backend,
        |vars| {
            vars.insert("API_KEYS".into(), "backend-key-0123456789:backend".into());
            vars.insert("SESSION_START_AUTH".into(), "key".into());
        },
        None,
    )
    .await;
    let start = |key: Option<&'static str>| {
        let mut request = app
            .client
            .post(app.url("/api/v1/sessions/start"))
            .json(&serde_json::json!({"parent_email": "parent@example.com"}));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        request.send()
    };
    assert_error(start(None).await.unwrap(), 401, "UNAUTHORIZED").await;
    assert_error(
        start(Some("made-up-key-0123456789")).await.unwrap(),
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert_eq!(app.rows("sessions").await, 0);
    for key in ["backend-key-0123456789", API_KEY] {
        let started = start(Some(key)).await.unwrap();
        assert_eq!(started.status(), 201);
        let started: serde_json::Value = started.json().await.unwrap();
        let id = started["session_id"].as_str().unwrap();
        let token = started["session_access_token"].as_str().unwrap();
        assert_eq!(app.complete(id, Some(token), None).await.status(), 200);
    }
    assert_eq!(app.rows("sessions").await, 2);
}

/// Guessing keys is slow: after `RATE_LIMIT_AUTH_FAILURES` failures in a minute a client
/// gets 429 with `Retry-After`, the right key still works, and no presented key is logged.
#[tokio::test]
async fn repeated_failures_are_rate_limited_and_no_key_is_logged() {
    let mut running = crate::cli::start_binary(&[
        ("RATE_LIMIT_AUTH_FAILURES", "5"),
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
    ]);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("{}/admin/actors", running.base);
    // A client route that takes a client's key (a recipient's preferences, personal data)
    // shares the budget: guessing there is no faster.
    let client_route = format!(
        "{}/api/v1/email/preferences/parent@example.com",
        running.base
    );
    let mut statuses = Vec::new();
    for guess in 0..8 {
        let response = client
            .get(if guess % 2 == 0 { &url } else { &client_route })
            .header("X-API-Key", format!("guess-{guess}-secret-attempt"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    let right = client
        .get(&url)
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200, "the right key is not locked out");
    let _ = running.child.kill();
    let _ = running.child.wait();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut running.child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("too many failed authentications"), "{out}");
    for secret in ["guess-", "secret-attempt", API_KEY] {
        assert!(!out.contains(secret), "{secret} in the logs:\n{out}");
    }
}

on_both_backends!(
    a_deployment_can_require_a_key_to_start_a_session,
    every_admin_route_refuses_a_missing_or_wrong_key,
    the_right_key_opens_admin_routes,
    a_client_key_is_not_an_admin_key,
);
