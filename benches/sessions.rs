//! Session figures (see BENCHMARKS.md).
//!
//! `cargo bench --bench sessions -- flow sqlite|postgres [seconds] [workers]`
//!     start + 3 events + complete per second, over real HTTP, release build
//! `cargo bench --bench sessions -- pdf`  time to render one report PDF

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald::reports::{EventRecord, SessionRecord, pdf, summarize};
use serde_json::{Value, json};
use sqlx::Connection;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn database(backend: &str) -> (String, Option<tempfile::TempDir>) {
    if backend == "postgres" {
        let base = std::env::var("HERALD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("herald_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .expect("PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (server, _) = base.rsplit_once('/').unwrap();
        (format!("{server}/{name}"), None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        (
            format!("sqlite://{}/herald.db", dir.path().display()),
            Some(dir),
        )
    }
}

async fn one_flow(client: &reqwest::Client, base: &str) -> Result<(), reqwest::Error> {
    // A parent per flow: one parent's sixth report in a day is refused by the email
    // throttle, which is not what this measures.
    static PARENTS: AtomicU64 = AtomicU64::new(0);
    let parent = format!(
        "parent{}@example.com",
        PARENTS.fetch_add(1, Ordering::Relaxed)
    );
    let started: Value = client
        .post(format!("{base}/api/v1/sessions/start"))
        .json(&json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": parent}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = started["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let token = started["session_access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for event in [
        json!({"kind": "step"}),
        json!({"kind": "hint"}),
        json!({"kind": "answer", "correct": true}),
    ] {
        client
            .post(format!("{base}/api/v1/sessions/{id}/events"))
            .header("X-Session-Access-Token", &token)
            .json(&event)
            .send()
            .await?
            .error_for_status()?;
    }
    client
        .post(format!("{base}/api/v1/sessions/{id}/complete"))
        .header("X-Session-Access-Token", &token)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn flow(backend: &str, seconds: u64, workers: usize) {
    herald::install_tls_provider();
    let (url, _dir) = database(backend).await;
    let drop_after =
        (backend == "postgres").then(|| url.rsplit('/').next().unwrap_or_default().to_owned());
    let serving = common::Serving::start(common::build(&[("DATABASE_URL", url)]).await);
    let base = serving.base.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(workers)
        .build()
        .unwrap();
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (client, base, done, failed) =
                (client.clone(), base.clone(), done.clone(), failed.clone());
            tasks.spawn(async move {
                while Instant::now() < deadline {
                    match one_flow(&client, &base).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        let started = Instant::now();
        while tasks.join_next().await.is_some() {}
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        println!(
            "  round: {rate:.0} flows/s ({} failed)",
            failed.load(Ordering::Relaxed)
        );
        rounds.push(rate);
    }
    println!(
        "{backend}: median {:.0} flows/s (start + 3 events + complete = 5 requests each, {workers} concurrent workers, 3 rounds of {seconds} s)",
        median(rounds)
    );
    serving.stop().await;
    if let Some(name) = drop_after {
        let base = std::env::var("HERALD_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

fn pdf_render() {
    let session = SessionRecord {
        id: uuid::Uuid::new_v4().to_string(),
        learner_name: Some("Ada".into()),
        subject: Some("Fractions".into()),
        started_at_ms: 1_700_000_000_000,
        completed_at_ms: Some(1_700_000_754_000),
    };
    let events: Vec<EventRecord> = ["step", "step", "hint", "answer", "answer", "explanation"]
        .iter()
        .enumerate()
        .map(|(i, k)| EventRecord {
            kind: (*k).into(),
            correct: Some(true),
            at_ms: 1_700_000_000_000 + i as i64 * 60_000,
        })
        .collect();
    let summary = summarize(&session, &events, 0);
    pdf::warm_up();
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..2_000 {
        let started = Instant::now();
        size = pdf::render(&summary, chrono_tz::UTC, &pdf::Labels::shipped()).len();
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // The whole report email as it goes to the mail server: text, HTML and the PDF.
    let url = "https://herald.example.org/api/v1/email/unsubscribe/v1.x.y?type=session_reports";
    let email = herald::email::message::build(herald::email::message::Parts {
        from: &"noreply@herald.localhost".parse().unwrap(),
        reply_to: None,
        feedback_id: None,
        to: "parent@example.com",
        message_id: "<bench@herald.localhost>",
        unsubscribe_url: url,
        reference: "v1.0.0",
        rendered: herald::templates::Templates::shipped("herald", "")
            .session_report(
                &summary,
                herald::templates::Links {
                    unsubscribe: url,
                    preferences: url,
                },
            )
            .unwrap(),
        pdf: Some((
            "report.pdf".into(),
            pdf::render(&summary, chrono_tz::UTC, &pdf::Labels::shipped()),
        )),
    })
    .unwrap()
    .formatted()
    .len();
    println!("report email with its PDF: {email} bytes");
    // Every render with glyphs of its own: the font subsets are made, not found kept.
    let (greek, cyrillic) = (
        "αβγδεζηθικλμνξοπρστυφχψω",
        "абвгдежзийклмнопрстуфхцчшщъыьэюя",
    );
    let mut fresh = Vec::new();
    for i in 0..2_000usize {
        let mut one = summary.clone();
        let name: String = [
            greek.chars().nth(i % 24).unwrap(),
            cyrillic.chars().nth(i / 24 % 32).unwrap(),
        ]
        .iter()
        .collect();
        one.learner_name = Some(name);
        let started = Instant::now();
        let _ = pdf::render(&one, chrono_tz::UTC, &pdf::Labels::shipped());
        fresh.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "PDF render with a glyph set not seen before: median {:.0} µs over 2,000 renders",
        median(fresh)
    );
    println!(
        "PDF render: median {:.0} µs, p99 {:.0} µs over 2,000 renders ({size} bytes each, fonts embedded)",
        median(times.clone()),
        {
            times.sort_by(f64::total_cmp);
            times[times.len() * 99 / 100]
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("flow") => {
            let backend = args.get(1).map_or("sqlite", String::as_str);
            let seconds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
            let workers = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
            runtime.block_on(flow(backend, seconds, workers));
        }
        Some("pdf") | None => pdf_render(),
        Some(other) => eprintln!("unknown mode {other}; use flow sqlite|postgres or pdf"),
    }
}
