//! Actors failing under load, with the fault hook built in (`herald_actors::fault`, the
//! `fault-injection` feature; never in the default build):
//! `cargo test --features fault-injection --test api faults`.
//!
//! Every N-th message an actor handles makes it panic (`HERALD_FAULT_EVERY`). herald keeps
//! answering; a caller whose message was lost gets a 503 and, retrying, succeeds; the
//! restarts are counted; no email is lost. Past the restart intensity the process exits 70
//! with a clear line, and does not loop.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::cli::{complete, email_logs, slow_smtp, start_binary, start_session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_failing_under_load_lose_no_email_and_callers_see_503_at_worst() {
    const SESSIONS: usize = 200;
    const WORKERS: usize = 6;
    let (smtp, mut vars) = slow_smtp(5).await;
    vars.extend([
        // One message in 150 per actor: a few failures a run, under the intensity limit
        // (more than 5 restarts in 10 s).
        ("HERALD_FAULT_EVERY", "150".to_owned()),
        ("RATE_LIMIT_MAX_REQUESTS", "1000000".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
    ]);
    let mut running = start_binary(&vars);
    herald::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    let base = running.base.clone();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let client = client.clone();
        let base = base.clone();
        workers.spawn(async move {
            let mut unavailable = 0;
            for i in (worker..SESSIONS).step_by(WORKERS) {
                let session =
                    start_session(&client, &base, &format!("parent{i}@example.com")).await;
                // The dashboard goes through the rate limiter's shards.
                let dashboard = client
                    .get(format!("{base}/api/v1/stats/dashboard"))
                    .header("X-API-Key", crate::helpers::API_KEY)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                assert!(
                    [200, 503].contains(&dashboard),
                    "dashboard answered {dashboard}"
                );
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let (status, body) = complete(&client, &base, &session).await;
                    match status {
                        200 => {
                            assert!(
                                ["queued", "duplicate"]
                                    .contains(&body["report_email"].as_str().unwrap()),
                                "{body}"
                            );
                            break;
                        }
                        503 => {
                            assert_eq!(body["error"], "SERVICE_UNAVAILABLE", "{body}");
                            unavailable += 1;
                        }
                        other => panic!("completion answered {other}: {body}"),
                    }
                    assert!(Instant::now() < deadline, "never completed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            unavailable
        });
    }
    let mut unavailable = 0;
    while let Some(done) = workers.join_next().await {
        unavailable += done.unwrap();
    }

    // Every report arrives: some may arrive twice (in flight when the dispatcher failed).
    let deadline = Instant::now() + Duration::from_secs(30);
    let recipients = loop {
        let recipients: HashSet<String> = smtp
            .received()
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
        if recipients.len() == SESSIONS || Instant::now() > deadline {
            break recipients;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if recipients.len() != SESSIONS {
        let mut missing = Vec::new();
        for i in 0..SESSIONS {
            let address = format!("parent{i}@example.com");
            if !recipients.iter().any(|r| r.contains(&address)) {
                missing.push(email_logs(&client, &base, &address).await);
            }
        }
        panic!("reports lost: {missing:#?}");
    }
    let ids: HashSet<String> = smtp
        .received()
        .iter()
        .map(crate::replicas::message_id)
        .collect();
    assert_eq!(
        ids.len(),
        SESSIONS,
        "a report sent twice carries its Message-ID both times"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restarts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("actor_restarts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        restarts >= 2.0,
        "the injected failures were restarted and counted ({restarts})\n{metrics}"
    );
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "herald kept serving"
    );
    let per_actor: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("actor_restarts_total{") && !l.ends_with(" 0"))
        .collect();
    eprintln!(
        "{per_actor:?}\n{SESSIONS} reports, {restarts} actor restarts, {unavailable} completions answered 503 and retried, {} messages received",
        smtp.received().len()
    );
}

#[tokio::test]
async fn a_restart_storm_exits_70_with_a_clear_line() {
    let running = start_binary(&[("HERALD_FAULT_EVERY", "1"), ("LOG_LEVEL", "info")]);
    let mut child = running;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still running: a restart storm must end the process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(70));
    let mut stdout = String::new();
    use std::io::Read;
    if let Some(mut out) = child.child.stdout.take() {
        out.read_to_string(&mut stdout).unwrap();
    }
    let stderr = child.stderr();
    let log = format!("{stdout}{stderr}");
    assert!(
        log.contains("restart intensity exceeded"),
        "the exit names its cause:\n{log}"
    );
}
