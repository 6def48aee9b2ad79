//! A bounded load run against the real binary on loopback: 256 connections for
//! `HERALD_LOAD_SECONDS` (10 by default) over a mix of what clients and operators call —
//! sessions started, events recorded, sessions completed with a report email, the public
//! dashboard, a report summary, health and metrics. No answer may be a 5xx, memory must stay
//! bounded, and the latencies are printed (p50, p99). A 429 is an answer, not a failure: the
//! limited groups are limited.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::start_binary;
use crate::helpers::API_KEY;

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One client's round: a whole session and the reads around it. Each request's status and
/// latency.
async fn round(client: &reqwest::Client, base: &str, i: usize) -> Vec<(u16, Duration)> {
    let mut out = Vec::new();
    let timed =
        |started: Instant, status: reqwest::StatusCode| (status.as_u16(), started.elapsed());
    let started = Instant::now();
    let Ok(response) = client
        .post(format!("{base}/api/v1/sessions/start"))
        .json(&json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": format!("p{}@example.com", i % 500)}))
        .send()
        .await
    else {
        return vec![(0, started.elapsed())];
    };
    out.push(timed(started, response.status()));
    let Ok(started_session) = response.json::<serde_json::Value>().await else {
        return out;
    };
    let (Some(id), Some(token)) = (
        started_session["session_id"].as_str(),
        started_session["session_access_token"].as_str(),
    ) else {
        return out;
    };
    for (path, method, body, key) in [
        (
            format!("/api/v1/sessions/{id}/events"),
            "POST",
            Some(json!({"kind": "answer", "correct": true})),
            None,
        ),
        (
            format!("/api/v1/sessions/{id}/complete"),
            "POST",
            None,
            None,
        ),
        ("/api/v1/stats/dashboard".to_owned(), "GET", None, None),
        (
            format!("/api/v1/reports/session/{id}/summary"),
            "GET",
            None,
            Some(API_KEY),
        ),
        ("/healthz".to_owned(), "GET", None, None),
        ("/metrics".to_owned(), "GET", None, None),
    ] {
        let started = Instant::now();
        let mut request = match method {
            "POST" => client.post(format!("{base}{path}")),
            _ => client.get(format!("{base}{path}")),
        }
        .header("X-Session-Access-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        match request.send().await {
            Ok(response) => out.push(timed(started, response.status())),
            Err(_) => out.push((0, started.elapsed())),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_load_run_answers_without_a_5xx_and_memory_stays_bounded() {
    let seconds: u64 = std::env::var("HERALD_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // The load takes the whole session path: no report throttle, no limit on starts.
    let running = start_binary(&[
        ("LOG_LEVEL", "error"),
        ("SESSION_REPORT_LIMIT", "100000"),
        ("RATE_LIMIT_SESSIONS_MAX_REQUESTS", "1000000"),
    ]);
    herald::install_tls_provider();
    let pid = running.child.id();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Warm up, then take the resident memory as the baseline.
    round(&client, &running.base, 0).await;
    let before = resident_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..256 {
        let (client, base, stop) = (client.clone(), running.base.clone(), stop.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                results.extend(round(&client, &base, i).await);
                i += 256;
            }
            results
        });
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    while let Some(done) = workers.join_next().await {
        results.extend(done.unwrap());
    }
    let after = resident_kib(pid);

    let failed: Vec<u16> = results
        .iter()
        .map(|(status, _)| *status)
        .filter(|s| *s == 0 || *s >= 500)
        .collect();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let limited = results.iter().filter(|(s, _)| *s == 429).count();
    eprintln!(
        "{} requests in {seconds} s over 256 connections: p50 {:?}, p99 {:?}, {limited} answered 429, {} 5xx or unanswered; resident memory {} MiB before, {} MiB after",
        results.len(),
        at(0.5),
        at(0.99),
        failed.len(),
        before / 1024,
        after / 1024
    );
    assert!(results.len() > 1_000, "only {} requests", results.len());
    assert!(
        failed.is_empty(),
        "{} 5xx or unanswered: {failed:?}",
        failed.len()
    );
    assert!(
        after < before + 256 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
}
