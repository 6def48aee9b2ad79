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
    let app = spawn_app(backend).await;
    let routes = secured_paths(&app.openapi().await);
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

on_both_backends!(
    every_admin_route_refuses_a_missing_or_wrong_key,
    the_right_key_opens_admin_routes,
    a_client_key_is_not_an_admin_key,
);
