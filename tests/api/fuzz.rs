//! Hostile request bodies over real HTTP: arbitrary JSON (any shape, wrong types, control
//! characters, huge numbers) and bytes that are not JSON, sent to every endpoint that reads a
//! body. Each gets an answer that is not a 5xx, and every error is herald's JSON error format.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::{API_KEY, Backend, spawn_app};

/// Any JSON, with the field names herald reads among the random ones.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "(\\PC|[\r\n\t\u{0}<>&\"'])*".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                "learner_name|subject|parent_email|kind|detail|correct|dry_run|start_date|stats|reports|max_requests|window_seconds|tiers|[a-z_]{1,10}",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn samples(n: usize) -> Vec<Value> {
    let mut runner = TestRunner::deterministic();
    let strategy = any_json();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_never_get_a_5xx_and_errors_keep_their_format() {
    let app = spawn_app(Backend::Sqlite).await;
    let session = app.new_session(json!({})).await;
    let targets: Vec<(reqwest::Method, String, bool)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/sessions/start".into(),
            false,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/sessions/{}/events", session.id),
            false,
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/sessions/{}/complete", session.id),
            false,
        ),
        (reqwest::Method::PUT, "/api/v1/ops/rate_limits".into(), true),
        (
            reqwest::Method::POST,
            "/admin/jobs/weekly_digest/run".into(),
            true,
        ),
        (
            reqwest::Method::POST,
            "/admin/rate_limits/reset".into(),
            true,
        ),
    ];
    let mut bodies: Vec<Vec<u8>> = samples(120)
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    bodies.extend([
        b"{".to_vec(),
        b"\xff\xfe not utf-8".to_vec(),
        b"[]]".to_vec(),
        b"{\"learner_name\": \"x\", \"learner_name\": 1}".to_vec(),
        br#"{"parent_email": "a@b.c\r\nBcc: victim@example.com"}"#.to_vec(),
        vec![b'['; 10_000],
    ]);
    let mut answered = 0;
    for body in &bodies {
        for (method, path, admin) in &targets {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .header("Content-Type", "application/json")
                .header("X-Session-Access-Token", &session.token)
                .body(body.clone());
            if *admin {
                request = request.header("X-API-Key", API_KEY);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(
                status.as_u16() < 500,
                "{method} {path} answered {status} to {}: {text}",
                String::from_utf8_lossy(body)
            );
            if status.is_client_error() {
                let error: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                assert!(
                    error["error"].is_string() && error["message"].is_string(),
                    "{text}"
                );
            }
            answered += 1;
        }
    }
    assert_eq!(answered, bodies.len() * targets.len());
}
