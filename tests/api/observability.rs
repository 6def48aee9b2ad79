//! The observability files against the real tools: promtool checks the Prometheus config,
//! the alert rules and their unit tests and the /metrics output; a real Prometheus scrapes
//! a herald that served traffic, and every Grafana panel's query must return data.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, spawn_app_with, tool_present};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tool, or `None` (with a note) on a machine without it. CI installs it and must run.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    tool_present(found.is_some(), name, "apt-get install prometheus");
    found
}

/// What a tool that must succeed printed, on stdout and stderr.
fn run_ok(command: &mut Command) -> String {
    let output = crate::helpers::run_ok(command);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn promtool_accepts_the_config_and_rules_and_every_alert_passes_its_unit_test() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    run_ok(
        Command::new(&promtool)
            .current_dir(root())
            .args(["check", "config", "prometheus.yml"]),
    );
    let rules = run_ok(Command::new(&promtool).current_dir(root()).args([
        "check",
        "rules",
        "prometheus/alerts.yml",
    ]));
    assert!(rules.contains("12 rules found"), "{rules}");
    let tests = run_ok(
        Command::new(&promtool)
            .current_dir(root().join("prometheus"))
            .args(["test", "rules", "alerts_test.yml"]),
    );
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert has a unit test.
    let alerts = std::fs::read_to_string(root().join("prometheus/alerts.yml")).unwrap();
    let unit_tests = std::fs::read_to_string(root().join("prometheus/alerts_test.yml")).unwrap();
    for line in alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            unit_tests.contains(&format!("alertname: {line}")),
            "{line} has no unit test"
        );
    }
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a `purge_old` run through the admin API.
async fn start_purge(app: &crate::helpers::TestApp) {
    let ran = app
        .client
        .post(app.url("/admin/jobs/purge_old/run"))
        .header("X-API-Key", crate::helpers::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ran.status(), 202);
}

async fn query(client: &reqwest::Client, base: &str, expr: &str) -> Value {
    // Until Prometheus listens, an answer is "not yet".
    let Ok(response) = client
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
    else {
        return json!({"status": "starting"});
    };
    response
        .json()
        .await
        .unwrap_or_else(|_| json!({"status": "starting"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_every_dashboard_panel_has_data_in_a_real_prometheus() {
    let (Some(promtool), Some(prometheus)) = (tool("promtool"), tool("prometheus")) else {
        return;
    };
    let app = spawn_app_with(Backend::Sqlite, |_| {}, None).await;

    // Traffic of every kind the dashboard shows.
    for _ in 0..3 {
        let s = app
            .new_session(json!({"parent_email": "parent@example.com", "subject": "Fractions"}))
            .await;
        app.add_event(
            &s.id,
            Some(&s.token),
            json!({"kind": "answer", "correct": true}),
        )
        .await;
        app.complete(&s.id, Some(&s.token), None).await;
    }
    for _ in 0..22 {
        app.dashboard().await;
    }
    app.state
        .limiter
        .crash_shard_of(herald_actors::limiter::key(1, "127.0.0.1"));
    start_purge(&app).await;
    app.health().await;

    let text = app.metrics().await;
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let target = app.address.trim_start_matches("http://").to_owned();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: [\"{target}\"]\n"),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _prometheus = Prometheus(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("grafana/dashboards/herald.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(exprs.len() >= 15);

    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pending = exprs.clone();
    while !pending.is_empty() {
        // Keep traffic flowing so rates have samples to work on.
        app.dashboard().await;
        let mut still = Vec::new();
        for expr in pending {
            let answer =
                match tokio::time::timeout(Duration::from_secs(5), query(&client, &base, &expr))
                    .await
                {
                    Ok(answer) => answer,
                    Err(_) => json!({"status": "timeout"}),
                };
            if answer["status"] == "error" {
                panic!("panel query {expr} is invalid: {answer}");
            }
            let has_data = answer["status"] == "success"
                && answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty());
            if !has_data {
                still.push(expr);
            }
        }
        pending = still;
        if !pending.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "panels with no data: {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test]
async fn a_fresh_instance_exports_every_known_series_from_the_first_scrape() {
    // The recorder is shared by every test of this binary, so values here may come from
    // other tests: what is checked is that each series exists before anything happened to
    // it in this app. The zeros themselves are checked where the recorder is this test's
    // alone (the library's metrics tests).
    let app = spawn_app_with(Backend::Sqlite, |_| {}, None).await;
    let text = app.metrics().await;
    let value = |series: &str| crate::helpers::metric_value(&text, series);
    for actor in [
        "rate_limiter",
        "email_throttle",
        "email_dispatcher",
        "scheduler",
    ] {
        let series = format!("actor_restarts_total{{actor=\"{actor}\"}}");
        assert!(value(&series).is_some(), "{series} in:\n{text}");
    }
    assert!(
        value("actor_restarts_total{actor=\"shard-0\"}").is_some(),
        "the limiter's shards are counted too:\n{text}"
    );
    for job in ["weekly_digest", "purge_old"] {
        for outcome in ["succeeded", "failed"] {
            let series = format!("job_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}}");
            assert!(value(&series).is_some(), "{series} in:\n{text}");
        }
        let series = format!("job_last_success_timestamp_seconds{{job=\"{job}\"}}");
        assert!(value(&series).is_some(), "{series} in:\n{text}");
    }
    assert!(
        value("process_start_time_seconds").is_some_and(|v| v > 0.0),
        "the alert rules use the process start time:\n{text}"
    );
    assert!(
        value("replica_settings_differ").is_some(),
        "compared with the other replicas before serving:\n{text}"
    );

    // A success recorded in the ledger is what a replica exports when it starts.
    start_purge(&app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = app.job_runs("purge_old").await;
        if runs.iter().any(|run| run["status"] == "succeeded") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // What a replica exports as the last success at start (the gauge itself is shared by
    // every test of this binary, so the ledger's answer is checked here).
    let last = herald::store::jobs::last_success(&app.state.store, "purge_old")
        .await
        .unwrap()
        .expect("a success in the ledger");
    assert!(last > 0, "{last}");
    let never = herald::store::jobs::last_success(&app.state.store, "weekly_digest")
        .await
        .unwrap();
    assert_eq!(
        never, None,
        "a job that never succeeded has no last success"
    );
}

/// A client may send any token as a method; each label value would be a series kept for the
/// life of the process, so a flood of invented methods could grow the exporter without end.
/// They are counted as `other`.
#[tokio::test]
async fn invented_methods_are_counted_as_other_not_a_series_each() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}, None).await;
    for i in 0..20 {
        let method = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        for path in ["/health", "/nowhere"] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error(), "{path}");
        }
    }
    let text = app.metrics().await;
    assert!(!text.contains("INVENTED"), "{text}");
    for route in ["/health", "unmatched"] {
        let series = format!("http_requests_total{{method=\"other\",route=\"{route}\",status=\"");
        assert!(text.contains(&series), "{series} in:\n{text}");
    }
    let get = r#"http_requests_total{method="GET",route="/metrics",status="200"}"#;
    assert!(
        crate::helpers::metric_value(&app.metrics().await, get).is_some(),
        "{get}"
    );
}
