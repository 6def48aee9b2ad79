//! The contract: `schemathesis` (PyPI) reads `/openapi.json` and sends what the document
//! allows and what it forbids to every route, with the admin key and a real session (its id
//! and token, so the summary and PDF routes are reached), and checks every answer against
//! the document (`--checks all`). Zero failures is the bar: a failure means the document or
//! a handler is wrong. CI installs schemathesis; elsewhere the test says it skipped.

use std::process::Stdio;

use serde_json::json;

use crate::email_events::sendgrid_keys;
use crate::helpers::{API_KEY, Backend, spawn_app_with, tool_present};

/// The run is reproducible: the same seed generates the same cases.
const SEED: &str = "20261206";

/// Gives each `Idempotency-Key` of a valid shape (16 characters or more, the shortest a
/// start takes) a random value of the same length before the request is sent.
const HOOKS: &str = r#"
import re
import secrets

import schemathesis

VALID = re.compile(r"^[\x21-\x7e]{16,255}$")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and VALID.match(value):
            headers[name] = secrets.token_hex((len(value) + 1) // 2)[: len(value)]
"#;

fn schemathesis() -> Option<&'static str> {
    let installed = std::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    tool_present(installed, "schemathesis", "pip install schemathesis").then_some("schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let (sendgrid_key, _) = sendgrid_keys();
    let app = spawn_app_with(
        Backend::Sqlite,
        |vars| {
            // Generous limits, so no route hides behind a 429.
            vars.insert("RATE_LIMIT_MAX_REQUESTS".into(), "1000000".into());
            vars.insert("RATE_LIMIT_AUTH_FAILURES".into(), "10000".into());
            // Both webhooks configured, so their signature checks are what answers.
            vars.insert(
                "EMAIL_EVENTS_SECRET".into(),
                "contract-events-secret".into(),
            );
            vars.insert("SENDGRID_WEBHOOK_PUBLIC_KEY".into(), sendgrid_key);
            vars.insert("EMAIL_PROVIDER".into(), "file".into());
        },
        None,
    )
    .await;
    let session = app
        .new_session(json!({"learner_name": "Ada", "subject": "math"}))
        .await;
    // A second session takes the generated events and completions.
    let open = app.new_session(json!({"learner_name": "Bo"})).await;
    app.add_step_and_two_answers(&session).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[operations]]
include-path-regex = "^/api/v1/reports/session/"
parameters = {{ "id" = "{id}", "X-Session-Access-Token" = "{token}" }}

[[operations]]
include-path-regex = "^/api/v1/sessions/[{{]id[}}]/"
parameters = {{ "id" = "{open_id}", "X-Session-Access-Token" = "{open_token}" }}
"#,
            id = session.id,
            token = session.token,
            open_id = open.id,
            open_token = open.token,
        ),
    )
    .unwrap();
    // A key a generated request carries is made its own: two requests that happen to draw
    // the same `Idempotency-Key` with other bodies are, rightly, refused as a reuse (422),
    // which schemathesis, judging each request alone, would count as a valid request
    // refused. Keys the document forbids (too short, spaces) are left as drawn, so their
    // refusal is still checked; a reuse is checked by the sessions tests.
    std::fs::write(dir.path().join("herald_hooks.py"), HOOKS).unwrap();
    // The policy route runs last and alone: its cases set policies as low as one request
    // a minute, which would hide every limited route behind a 429.
    const POLICIES: &str = "PUT /api/v1/ops/rate_limits";
    for selection in ["--exclude-name", "--include-name"] {
        let mut command = std::process::Command::new(schemathesis);
        command
            .arg("--config-file")
            .arg(&config)
            .args(["--no-color", "run"])
            .arg(app.url("/openapi.json"))
            .args(["--checks", "all", "--seed", SEED, "--max-examples", "40"])
            .args([selection, POLICIES])
            .args(["-H", &format!("X-API-Key: {API_KEY}")])
            .env("SCHEMATHESIS_HOOKS", "herald_hooks")
            .env("PYTHONPATH", dir.path())
            .current_dir(dir.path());
        // The server answers on this runtime's workers while schemathesis runs.
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis ({selection} {POLICIES}) found failures:\n{report}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            report.contains(" passed") && !report.contains("Unresolvable"),
            "{report}"
        );
    }
}
