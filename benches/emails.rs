//! Emails per second end to end (see BENCHMARKS.md).
//!
//! `cargo bench --bench emails -- [count] [workers] [rounds]`
//! `cargo bench --bench emails -- replicas [count] [workers] [rounds]`: one herald against
//! three on one PostgreSQL database (`HERALD_BENCH_POSTGRES_URL`, default the local `test`),
//! completions spread over them, alternating rounds: the cost of coordinating replicas.
//! `BENCH_ONE_POOL` and `BENCH_THREE_POOL` set each process's `DATABASE_MAX_CONNECTIONS`
//! on either side (10 for the one, 4 for each of the three by default: about the same
//! connections in all, as DEPLOYMENT.md advises).
//! `cargo bench --bench emails -- floor [count] [workers] [rounds]`: what any service that
//! takes the request over HTTP can reach against the bare baseline: the bare run with one
//! empty HTTP round trip per email (the same client, an axum handler answering the summary),
//! and with that handler also writing the email's ledger row through herald's group commit
//! (SQLite, WAL, `synchronous = FULL`), beside herald and the bare run, alternating rounds.
//! `cargo bench --bench emails -- dkim [count] [workers] [rounds]`: the cost of DKIM signing
//! (RSA 2048 and Ed25519, keys made by `openssl genpkey`), per email alone and end to end
//! beside unsigned runs, alternating rounds.
//! `cargo bench --bench emails -- herald [count] [workers] [rounds]`: herald's runs alone,
//! without the baselines, to profile them (`perf record`).
//!
//! Sessions are started first; then the clock runs while `POST /complete` calls go in and
//! report emails (HTML + text + PDF) come out at an SMTP sink on 127.0.0.1, the durable
//! ledger included. Beside it, in the same run, a bare lettre pool sends the same number of
//! equally built messages to the same sink: the ratio is herald's cost over the transport.
//! Each round runs both, one after the other; the figures are medians over the rounds, and
//! the ratio is given both of the medians and as the median of each round's own ratio (the
//! steadier one when the machine's speed drifts during the run).
//! Each timed phase also reports the CPU time and the context switches it cost per email,
//! summed over the process's threads (from procfs, on Linux).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald::email::message::{self, Parts};
use herald::reports::{EventRecord, SessionRecord, pdf, summarize};
use herald::templates;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The links of a bench email.
fn bench_links(unsubscribe: &str) -> templates::Links<'_> {
    templates::Links {
        unsubscribe,
        preferences: "https://herald.example.org/api/v1/email/preferences/page/v1.x.y",
    }
}

/// The shipped email templates, loaded once.
fn shipped_templates() -> &'static templates::Templates {
    static TEMPLATES: std::sync::OnceLock<templates::Templates> = std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| templates::Templates::shipped("herald", ""))
}

/// The session every bare email reports: Ada's 90 seconds of fractions.
fn ada_session() -> SessionRecord {
    SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        learner_name: Some("Ada".into()),
        subject: Some("Fractions".into()),
        started_at_ms: 0,
        completed_at_ms: Some(90_000),
    }
}

/// Accepts everything, counts messages.
async fn sink() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                let _ = write.write_all(b"220 sink\r\n").await;
                let mut line = String::new();
                let mut in_data = false;
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            counter.fetch_add(1, Ordering::Relaxed);
                            let _ = write.write_all(b"250 ok\r\n").await;
                        }
                        continue;
                    }
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("DATA") {
                        in_data = true;
                        b"354 go\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, count)
}

/// CPU time and context switches of every thread of this process so far, from procfs;
/// `None` where procfs is missing. A thread that ends inside a timed phase takes its share
/// with it, so the figures are a floor.
fn usage() -> Option<Usage> {
    let mut total = Usage::default();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread may end between the listing and the reads: it is skipped.
        let (Ok(schedstat), Ok(status)) = (
            std::fs::read_to_string(task.path().join("schedstat")),
            std::fs::read_to_string(task.path().join("status")),
        ) else {
            continue;
        };
        total.cpu_ns += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
        total.switches += status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu_ns: u64,
    switches: u64,
}

/// One timed phase: emails per second, and per email the CPU milliseconds and context
/// switches it took (if procfs could tell).
#[derive(Debug, Clone, Copy)]
struct Run {
    rate: f64,
    cpu_ms: Option<f64>,
    switches: Option<f64>,
}

impl Run {
    fn measure(n: usize, started: Instant, before: Option<Usage>) -> Self {
        let rate = n as f64 / started.elapsed().as_secs_f64();
        let spent = before.zip(usage()).map(|(before, after)| Usage {
            cpu_ns: after.cpu_ns.saturating_sub(before.cpu_ns),
            switches: after.switches.saturating_sub(before.switches),
        });
        Self {
            rate,
            cpu_ms: spent.map(|s| s.cpu_ns as f64 / 1e6 / n as f64),
            switches: spent.map(|s| s.switches as f64 / n as f64),
        }
    }

    fn describe(&self) -> String {
        match (self.cpu_ms, self.switches) {
            (Some(cpu), Some(switches)) => format!(
                "{:.0} emails/s ({cpu:.2} ms CPU, {switches:.1} context switches per email)",
                self.rate
            ),
            _ => format!("{:.0} emails/s", self.rate),
        }
    }
}

/// The median of each figure over the rounds.
fn median(runs: &[Run]) -> Run {
    fn mid(mut values: Vec<f64>) -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }
    let all = |f: fn(&Run) -> Option<f64>| runs.iter().map(f).collect::<Option<Vec<f64>>>();
    Run {
        rate: mid(runs.iter().map(|r| r.rate).collect()),
        cpu_ms: all(|r| r.cpu_ms).map(mid),
        switches: all(|r| r.switches).map(mid),
    }
}

async fn wait_count(count: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while count.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} arrived",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn herald_run(n: usize, workers: usize, smtp_port: u16, count: Arc<AtomicUsize>) -> Run {
    herald_run_with(n, workers, smtp_port, count, &[]).await
}

/// [`herald_run`] with more configuration.
async fn herald_run_with(
    n: usize,
    workers: usize,
    smtp_port: u16,
    count: Arc<AtomicUsize>,
    extra: &[(&'static str, String)],
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    herald_on(&url, 1, n, workers, smtp_port, count, extra).await
}

/// `replicas` heralds on the database at `url`, completions spread over them.
async fn herald_on(
    url: &str,
    replicas: usize,
    n: usize,
    workers: usize,
    smtp_port: u16,
    count: Arc<AtomicUsize>,
    extra: &[(&'static str, String)],
) -> Run {
    let mut servings = Vec::new();
    for _ in 0..replicas {
        let mut vars = vec![
            ("DATABASE_URL", url.to_owned()),
            ("EMAIL_PROVIDER", "smtp".into()),
            ("SMTP_HOST", "127.0.0.1".into()),
            ("SMTP_PORT", smtp_port.to_string()),
            ("SMTP_TLS", "none".into()),
            (
                "EMAIL_POLL_INTERVAL_MS",
                std::env::var("BENCH_POLL_MS").unwrap_or_else(|_| "20".into()),
            ),
        ];
        vars.extend(extra.iter().cloned());
        let app = common::build(&vars).await;
        servings.push(common::Serving::start(app));
    }
    let bases: Vec<String> = servings.iter().map(|s| s.base.clone()).collect();
    let client = reqwest::Client::new();
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let base = &bases[i % bases.len()];
        let started: Value = client
            .post(format!("{base}/api/v1/sessions/start"))
            .json(&json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": format!("parent{i}@example.com")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sessions.push((
            base.clone(),
            started["session_id"].as_str().unwrap().to_owned(),
            started["session_access_token"].as_str().unwrap().to_owned(),
        ));
    }
    let queue = Arc::new(std::sync::Mutex::new(sessions));
    let before = count.load(Ordering::Relaxed);
    let used = usage();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (client, queue) = (client.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let Some((base, id, token)) = queue.lock().unwrap().pop() else {
                    break;
                };
                let response = client
                    .post(format!("{base}/api/v1/sessions/{id}/complete"))
                    .header("X-Session-Access-Token", token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    wait_count(&count, before + n).await;
    let run = Run::measure(n, started, used);
    for serving in servings {
        serving.stop().await;
    }
    run
}

/// The median of each round's own ratio of `runs` to `baseline` (the steadier figure when
/// the machine's speed drifts during a run).
fn median_ratio(runs: &[Run], baseline: &[Run]) -> f64 {
    let mut ratios: Vec<f64> = runs
        .iter()
        .zip(baseline)
        .map(|(r, b)| r.rate / b.rate)
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// A fresh PostgreSQL database for one run; dropped by the next run's clean-up.
async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let base = std::env::var("HERALD_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = format!("herald_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

async fn replicas(n: usize, workers: usize, rounds: usize) {
    let (port, count) = sink().await;
    let (mut one, mut three) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let on_postgres = |replicas: usize| {
            let count = count.clone();
            // Each process's connections (`DATABASE_MAX_CONNECTIONS`), per side: one replica
            // at the default, three sharing about as many, as DEPLOYMENT.md advises.
            let pool = if replicas == 1 {
                std::env::var("BENCH_ONE_POOL").unwrap_or_else(|_| "10".into())
            } else {
                std::env::var("BENCH_THREE_POOL").unwrap_or_else(|_| "4".into())
            };
            async move {
                let url = fresh_postgres().await;
                let extra = [("DATABASE_MAX_CONNECTIONS", pool)];
                herald_on(&url, replicas, n, workers, port, count, &extra).await
            }
        };
        let a = on_postgres(1).await;
        let b = on_postgres(3).await;
        println!(
            "  round {round}: one replica {}, three replicas {}, ratio {:.2}",
            a.describe(),
            b.describe(),
            b.rate / a.rate
        );
        one.push(a);
        three.push(b);
    }
    let (a, b) = (median(&one), median(&three));
    println!(
        "median of {rounds} rounds, {n} emails each, {workers} concurrent clients, PostgreSQL: one replica {}, three replicas {}, ratio of the medians {:.2}, median of the rounds' ratios {:.2}",
        a.describe(),
        b.describe(),
        b.rate / a.rate,
        median_ratio(&three, &one)
    );
}

/// How the baseline hands a message to the SMTP sink.
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    /// herald's own SMTP provider (`EMAIL_PROVIDER=smtp`): its pooled connections and its
    /// one-pass DATA writer, the code herald sends with. Like with like.
    Herald,
    /// lettre's transport `send`, which writes DATA through its byte-at-a-time codec.
    Lettre,
}

/// The same emails herald sends, built by the same code (templates, PDF, MIME) and written
/// to the sink by `writer`, with nothing of the service around them: no HTTP, no ledger, no
/// actors.
async fn bare_run(
    n: usize,
    workers: usize,
    smtp_port: u16,
    count: Arc<AtomicUsize>,
    writer: Writer,
) -> Run {
    bare_run_after(n, workers, smtp_port, count, writer, None).await
}

/// [`bare_run`], each email preceded, when `request` names a base URL, by a `POST` to its
/// `/complete` (answered by [`floor_server`]).
async fn bare_run_after(
    n: usize,
    workers: usize,
    smtp_port: u16,
    count: Arc<AtomicUsize>,
    writer: Writer,
    request: Option<String>,
) -> Run {
    let client = reqwest::Client::new();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(smtp_port)
        .pool_config(PoolConfig::new().max_size(16))
        .build();
    let config = herald::config::Config::from_lookup(&|k| match k {
        "API_ACCESS_KEY" => Some("bench".into()),
        "SECRET_KEY" => Some("bench".into()),
        "EMAIL_PROVIDER" => Some("smtp".into()),
        "SMTP_HOST" => Some("127.0.0.1".into()),
        "SMTP_PORT" => Some(smtp_port.to_string()),
        "SMTP_TLS" => Some("none".into()),
        _ => None,
    })
    .unwrap();
    let mailer = Arc::new(herald::email::Mailer::from_config(&config.email).unwrap());
    let session = ada_session();
    let events: Vec<EventRecord> = ["step", "hint", "answer"]
        .iter()
        .enumerate()
        .map(|(i, k)| EventRecord {
            kind: (*k).into(),
            correct: Some(true),
            at_ms: i as i64 * 20_000,
        })
        .collect();
    let summary = summarize(&session, &events, 0);
    // Parsed once, as herald's configuration does.
    let from: lettre::message::Mailbox = "noreply@herald.localhost".parse().unwrap();
    let before = count.load(Ordering::Relaxed);
    let next = Arc::new(AtomicUsize::new(0));
    let used = usage();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (transport, mailer, next, summary, from, client, request) = (
            transport.clone(),
            mailer.clone(),
            next.clone(),
            summary.clone(),
            from.clone(),
            client.clone(),
            request.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Some(base) = &request {
                    let response = client
                        .post(format!("{base}/api/v1/sessions/{i}/complete"))
                        .header("X-Session-Access-Token", "t")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
                // The same work a real email needs: template, PDF, MIME, SMTP.
                let url = format!("https://herald.example.org/api/v1/email/unsubscribe/v1.{:032x}.{:032x}?type=session_reports", i, i);
                let rendered = shipped_templates().session_report(&summary, bench_links(&url)).unwrap();
                let to = format!("parent{i}@example.com");
                let id = message::message_id(&format!("{to}:session_reports:{i}"), "herald.localhost");
                let outgoing = message::Outgoing {
                    from: from.clone(),
                    reply_to: None,
                    feedback_id: None,
                    to,
                    message_id: id,
                    unsubscribe_url: url,
                    reference: "v1.0.0".into(),
                    rendered,
                    pdf: Some(("report.pdf".into(), pdf::render(&summary, chrono_tz::UTC, &pdf::Labels::shipped()))),
                };
                match writer {
                    Writer::Herald => {
                        let sent = mailer.send(outgoing, None).await;
                        assert!(
                            matches!(sent, herald_actors::dispatcher::Attempt::Sent { .. }),
                            "{sent:?}"
                        );
                    }
                    Writer::Lettre => {
                        transport.send(outgoing.into_message().unwrap()).await.unwrap();
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    wait_count(&count, before + n).await;
    Run::measure(n, started, used)
}

/// The floor runs' server on 127.0.0.1: `POST /api/v1/sessions/{id}/complete` answers a
/// session summary as JSON, having first written the email's ledger row through herald's
/// group commit when `durable` holds. Returns its base URL.
async fn floor_server(durable: Option<herald::store::Store>) -> String {
    use axum::extract::{Path, State};
    use herald::store::group_commit::GroupCommit;
    use herald::store::outbox::{self, LedgerKey};
    let writes = durable.map(GroupCommit::spawn);
    let session = ada_session();
    let summary = Arc::new(summarize(&session, &[], 0));
    let app = axum::Router::new()
        .route(
            "/api/v1/sessions/{id}/complete",
            axum::routing::post(
                |State((writes, summary)): State<(
                    Option<GroupCommit>,
                    Arc<herald::reports::SessionSummary>,
                )>,
                 Path(id): Path<String>| async move {
                    if let Some(writes) = writes {
                        let email = format!("parent{id}@example.com");
                        let key = LedgerKey {
                            idempotency_key: &format!("{id}:floor"),
                            email: &email,
                            email_type: "session_reports",
                            session_id: Some(&id),
                            week_start: None,
                            zone: None,
                        };
                        let now = herald::store::now_ms();
                        writes
                            .run(outbox::enqueue_statements(&key, now, now))
                            .await
                            .unwrap();
                    }
                    axum::Json(summary.as_ref().clone())
                },
            ),
        )
        .with_state((writes, summary));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Served by herald's own accept loop, as herald's requests are.
    let limits = herald::http::serve::Limits {
        idle: std::time::Duration::from_secs(75),
        connections: 10_000,
        drain: std::time::Duration::from_secs(1),
    };
    tokio::spawn(herald::http::serve::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    base
}

/// Herald beside the bare run, the bare run after an empty HTTP round trip, and after a
/// round trip that writes the ledger row: how much of the gap any HTTP service must pay.
async fn floor(n: usize, workers: usize, rounds: usize) {
    let (port, count) = sink().await;
    let http = floor_server(None).await;
    let dir = tempfile::tempdir().unwrap();
    let store =
        herald::store::Store::connect(&format!("sqlite://{}/floor.db", dir.path().display()))
            .await
            .unwrap();
    store.migrate().await.unwrap();
    let durable = floor_server(Some(store)).await;
    let mut runs: [Vec<Run>; 4] = Default::default();
    for round in 0..rounds {
        let bare = bare_run(n, workers, port, count.clone(), Writer::Herald).await;
        let after = |base: &String| {
            bare_run_after(
                n,
                workers,
                port,
                count.clone(),
                Writer::Herald,
                Some(base.clone()),
            )
        };
        let with_http = after(&http).await;
        let with_ledger = after(&durable).await;
        let herald = herald_run(n, workers, port, count.clone()).await;
        println!(
            "  round {round}: bare {}; with an HTTP round trip {} ({:.2}); with the round trip and a ledger row {} ({:.2}); herald {} ({:.2})",
            bare.describe(),
            with_http.describe(),
            with_http.rate / bare.rate,
            with_ledger.describe(),
            with_ledger.rate / bare.rate,
            herald.describe(),
            herald.rate / bare.rate,
        );
        for (all, run) in runs.iter_mut().zip([bare, with_http, with_ledger, herald]) {
            all.push(run);
        }
    }
    let [bare, with_http, with_ledger, herald] = runs;
    println!(
        "median of {rounds} rounds, {n} emails each, {workers} concurrent clients: bare {}; with an HTTP round trip {} (ratio of the medians {:.2}, median of the rounds' ratios {:.2}); with the round trip and a ledger row {} ({:.2}, {:.2}); herald {} ({:.2}, {:.2})",
        median(&bare).describe(),
        median(&with_http).describe(),
        median(&with_http).rate / median(&bare).rate,
        median_ratio(&with_http, &bare),
        median(&with_ledger).describe(),
        median(&with_ledger).rate / median(&bare).rate,
        median_ratio(&with_ledger, &bare),
        median(&herald).describe(),
        median(&herald).rate / median(&bare).rate,
        median_ratio(&herald, &bare),
    );
}

/// A DKIM key of `kind` (`RSA` 2048 bits or `ed25519`) made by openssl in `dir`.
fn dkim_key(kind: &str, dir: &std::path::Path) -> String {
    let path = dir.join(format!("{kind}.pem")).display().to_string();
    let mut args = vec!["genpkey", "-algorithm", kind, "-out", &path];
    if kind == "RSA" {
        args.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
    }
    let status = std::process::Command::new("openssl")
        .args(&args)
        .status()
        .unwrap();
    assert!(status.success(), "openssl genpkey {kind}");
    path
}

/// The cost of DKIM signing: per email alone (a full report email, PDF attached), and end to
/// end with signing off, RSA 2048 and Ed25519 in alternating rounds.
async fn dkim(n: usize, workers: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        ("RSA 2048", dkim_key("RSA", dir.path())),
        ("Ed25519", dkim_key("ed25519", dir.path())),
    ];
    let settings = |key: &str| -> Vec<(&'static str, String)> {
        vec![
            ("DKIM_DOMAIN", "herald.localhost".into()),
            ("DKIM_SELECTOR", "bench".into()),
            ("DKIM_PRIVATE_KEY_FILE", key.to_owned()),
        ]
    };
    let session = ada_session();
    let summary = summarize(&session, &[], 0);
    let url = "https://herald.example.org/api/v1/email/unsubscribe/v1.x.y?type=session_reports";
    let formatted = message::build(Parts {
        from: &"noreply@herald.localhost".parse().unwrap(),
        reply_to: None,
        feedback_id: None,
        to: "parent@example.com",
        message_id: "<bench@herald.localhost>",
        unsubscribe_url: url,
        reference: "v1.0.0",
        rendered: shipped_templates()
            .session_report(&summary, bench_links(url))
            .unwrap(),
        pdf: Some((
            "report.pdf".into(),
            pdf::render(&summary, chrono_tz::UTC, &pdf::Labels::shipped()),
        )),
    })
    .unwrap()
    .formatted();
    for (name, key) in &keys {
        let mut vars: HashMap<String, String> = settings(key)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        vars.insert("API_ACCESS_KEY".into(), "k".into());
        vars.insert("SECRET_KEY".into(), "s".into());
        let config = herald::config::Config::from_lookup(&move |k| vars.get(k).cloned()).unwrap();
        let signer = config.email.dkim.unwrap();
        let mut per_sign = Vec::new();
        for _ in 0..rounds {
            let times = 200;
            let started = Instant::now();
            for _ in 0..times {
                std::hint::black_box(herald::email::dkim::sign(&signer, &formatted, 0));
            }
            per_sign.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(times));
        }
        per_sign.sort_by(f64::total_cmp);
        println!(
            "signing one {} kB report email, {name}: {:.0} µs (median of {rounds} rounds of 200)",
            formatted.len() / 1024,
            per_sign[per_sign.len() / 2]
        );
    }
    let (port, count) = sink().await;
    let mut runs: [Vec<Run>; 3] = Default::default();
    for round in 0..rounds {
        let off = herald_run(n, workers, port, count.clone()).await;
        let rsa = herald_run_with(n, workers, port, count.clone(), &settings(&keys[0].1)).await;
        let ed = herald_run_with(n, workers, port, count.clone(), &settings(&keys[1].1)).await;
        println!(
            "  round {round}: unsigned {}, RSA 2048 {}, Ed25519 {}",
            off.describe(),
            rsa.describe(),
            ed.describe()
        );
        for (all, run) in runs.iter_mut().zip([off, rsa, ed]) {
            all.push(run);
        }
    }
    let [off, rsa, ed] = runs;
    println!(
        "median of {rounds} rounds, {n} emails each: unsigned {}, RSA 2048 {} (ratio {:.2}), Ed25519 {} (ratio {:.2})",
        median(&off).describe(),
        median(&rsa).describe(),
        median_ratio(&rsa, &off),
        median(&ed).describe(),
        median_ratio(&ed, &off)
    );
}

fn main() {
    let replicas_mode = std::env::args().any(|a| a == "replicas");
    let dkim_mode = std::env::args().any(|a| a == "dkim");
    let floor_mode = std::env::args().any(|a| a == "floor");
    let herald_mode = std::env::args().any(|a| a == "herald");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(3_000);
    let workers = args.get(1).copied().unwrap_or(32);
    let rounds = args.get(2).copied().unwrap_or(5).max(1);
    herald::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    pdf::warm_up();
    if replicas_mode {
        runtime.block_on(replicas(n, workers, rounds));
        return;
    }
    if dkim_mode {
        runtime.block_on(dkim(n, workers, rounds));
        return;
    }
    if floor_mode {
        runtime.block_on(floor(n, workers, rounds));
        return;
    }
    if herald_mode {
        runtime.block_on(async {
            let (port, count) = sink().await;
            for round in 0..rounds {
                let herald = herald_run(n, workers, port, count.clone()).await;
                println!("  round {round}: herald {}", herald.describe());
            }
        });
        return;
    }
    runtime.block_on(async {
        let (port, count) = sink().await;
        let (mut herald_runs, mut bare_runs, mut lettre_runs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let bare = bare_run(n, workers, port, count.clone(), Writer::Herald).await;
            let herald = herald_run(n, workers, port, count.clone()).await;
            let lettre = bare_run(n, workers, port, count.clone(), Writer::Lettre).await;
            println!(
                "  round {round}: herald {}, bare (herald's SMTP writer) {}, ratio {:.2}; bare through lettre's send {}, writer ratio {:.2}",
                herald.describe(),
                bare.describe(),
                herald.rate / bare.rate,
                lettre.describe(),
                bare.rate / lettre.rate
            );
            herald_runs.push(herald);
            bare_runs.push(bare);
            lettre_runs.push(lettre);
        }
        let (herald, bare, lettre) = (median(&herald_runs), median(&bare_runs), median(&lettre_runs));
        println!(
            "median of {rounds} rounds, {n} emails each, {workers} concurrent clients: herald {} (complete -> SMTP sink, SQLite ledger), bare with herald's SMTP writer {}, ratio of the medians {:.2}, median of the rounds' ratios {:.2}",
            herald.describe(),
            bare.describe(),
            herald.rate / bare.rate,
            median_ratio(&herald_runs, &bare_runs)
        );
        println!(
            "the DATA writer: bare with herald's writer {} against bare through lettre's send {}: ratio of the medians {:.2}, median of the rounds' ratios {:.2}",
            bare.describe(),
            lettre.describe(),
            bare.rate / lettre.rate,
            median_ratio(&bare_runs, &lettre_runs)
        );
    });
}
