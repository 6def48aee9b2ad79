//! Weekly digest at scale (see BENCHMARKS.md).
//!
//! `cargo bench --bench digest -- [recipients] [sessions_per_recipient]`
//! `cargo bench --bench digest -- [recipients] [sessions_per_recipient] opted-out=P`: the
//! same, with P per cent of the recipients having turned digests off.
//! `cargo bench --bench digest -- zones [recipients] [sessions_per_recipient]`: the same
//! recipients spread over 40 zones; each zone's dry run (local delivery) and all 40 of them,
//! beside one dry run of everyone (global delivery), in one run.
//!
//! Seeds a fresh SQLite database with the recipients' completed sessions (one answer event
//! each) in one week, then, in the same run: the bare SQL aggregate the digest is built on
//! (fully fetched), the digest run itself (aggregate, decide, queue every digest through
//! the throttle and the outbox ledger), and the send-time work of every digest (read the
//! recipient's two weeks, build the digest, render its templates). Reports wall times and the
//! process's peak RSS.

use std::time::{Duration, Instant};

use herald::jobs::digest::{self, DigestRun};
use herald::store::Store;
use sqlx::Row;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let recipients = args.first().copied().unwrap_or(100_000);
    let per = args.get(1).copied().unwrap_or(10);
    let opted_out: u64 = std::env::args()
        .find_map(|a| a.strip_prefix("opted-out=").and_then(|p| p.parse().ok()))
        .unwrap_or(0);
    herald::install_tls_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::args().any(|a| a == "zones") {
        runtime.block_on(zones(recipients, per));
        return;
    }
    runtime.block_on(async move {
        let (_dir, url, store) = fresh_store().await;
        let (week, from) = bench_week();

        let seeding = Instant::now();
        let total = recipients * per;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
             INSERT INTO sessions (id, access_token_hash, learner_name, subject, parent_email, started_at, completed_at) \
             SELECT printf('s%09d', i), 'x', 'Ada', CASE i % 3 WHEN 0 THEN 'Fractions' WHEN 1 THEN 'Decimals' ELSE 'Reading' END, \
                    printf('parent%07d@example.com', i % $2), $3 + (i % 500000) * 1000, $3 + (i % 500000) * 1000 + 600000 FROM n",
        )
        .bind(total as i64)
        .bind(recipients as i64)
        .bind(from)
        .execute(store.writer())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO session_events (id, session_id, kind, correct, created_at) \
             SELECT 'e' || substr(id, 2), id, 'answer', (CAST(substr(id, 2) AS INTEGER) % 2), started_at FROM sessions",
        )
        .execute(store.writer())
        .await
        .unwrap();
        if opted_out > 0 {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
                 INSERT INTO email_preferences (email, recipient_key, weekly_digest_enabled, weekly_digest_unsubscribed_at, created_at, updated_at) \
                 SELECT printf('parent%07d@example.com', i), printf('%032x', i), 0, $3, $3, $3 FROM n WHERE i % 100 < $2",
            )
            .bind(recipients as i64)
            .bind(opted_out as i64)
            .bind(from)
            .execute(store.writer())
            .await
            .unwrap();
        }
        println!("seeded {recipients} recipients ({opted_out}% with digests turned off), {total} sessions and {total} events in {:.1} s", seeding.elapsed().as_secs_f64());

        let rss_before = status_kb("VmRSS:");
        let bare = Instant::now();
        let rows = sqlx::query(
            "SELECT s.parent_email, COUNT(*), CAST(SUM(s.completed_at - s.started_at) AS BIGINT), MAX(s.completed_at - s.started_at) \
             FROM sessions s WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL \
             GROUP BY s.parent_email ORDER BY s.parent_email",
        )
        .bind(from)
        .bind(from + digest::WEEK_MS)
        .fetch_all(store.reader())
        .await
        .unwrap();
        let bare_time = bare.elapsed();
        let groups = rows.len();
        let first: i64 = rows.first().map(|r| r.try_get(1).unwrap()).unwrap_or(0);
        drop(rows);

        let config = herald::config::Config::from_lookup(&|k| match k {
            "DATABASE_URL" => Some(url.clone()),
            "API_ACCESS_KEY" => Some("bench".into()),
            "SECRET_KEY" => Some("bench".into()),
            _ => None,
        })
        .unwrap();
        let (context, root) = herald::startup::offline_jobs(&config, store.clone()).await.unwrap();
        let dry = Instant::now();
        let dry_report = digest::run(DigestRun {
            store: &context.store,
            throttle: Some(&context.throttle),
            week_start: week,
            timezone: chrono_tz::UTC,
            dry_run: true,
            now_ms: chrono::Utc::now().timestamp_millis(),
            throttle_rule: context.digest_throttle,
            zone: None,
        })
        .await
        .unwrap();
        println!(
            "dry run (aggregate + read-only decisions, writes nothing): {:.2} s for {} recipients",
            dry.elapsed().as_secs_f64(),
            dry_report.recipients_with_activity
        );
        let run = Instant::now();
        let report = digest::run(DigestRun {
            store: &context.store,
            throttle: Some(&context.throttle),
            week_start: week,
            timezone: chrono_tz::UTC,
            dry_run: false,
            now_ms: chrono::Utc::now().timestamp_millis(),
            throttle_rule: context.digest_throttle,
            zone: None,
        })
        .await
        .unwrap();
        let run_time = run.elapsed();
        root.shutdown(Duration::from_secs(5)).await;

        // What the dispatcher does for each queued digest when it sends it: the recipient's
        // two weeks read, the digest built (a section per learner, the days, the week
        // before) and the three templates rendered.
        let templates = herald::templates::Templates::shipped("herald", "");
        let rendering = Instant::now();
        let mut bytes = 0usize;
        for i in 0..recipients {
            let email = format!("parent{i:07}@example.com");
            let digest = herald::store::activity::recipient_digest(&store, &email, week, chrono_tz::UTC)
                .await
                .unwrap()
                .expect("every recipient had a session");
            let shown = templates
                .weekly_digest(
                    &digest,
                    herald::templates::Links {
                        unsubscribe: "https://herald.example.org/u/v1.x.y",
                        preferences: "https://herald.example.org/p/v1.x.y",
                    },
                )
                .unwrap();
            bytes += shown.html.len() + shown.text.len();
        }
        let render_time = rendering.elapsed();
        println!(
            "rendering every digest as sent (read, build, templates): {:.2} s, {:.0} µs each, {:.1} kB of HTML and text each; peak RSS of the process {:.0} MB",
            render_time.as_secs_f64(),
            render_time.as_secs_f64() * 1e6 / recipients as f64,
            bytes as f64 / recipients as f64 / 1024.0,
            status_kb("VmHWM:") as f64 / 1024.0
        );
        println!(
            "bare SQL aggregate (sessions per recipient, fully fetched): {:.2} s for {groups} groups ({first} sessions in the first)",
            bare_time.as_secs_f64()
        );
        println!(
            "digest run (aggregate + decide + queue): {:.2} s; {} recipients, {} queued, {} unsubscribed; RSS before {:.0} MB, peak RSS of the process {:.0} MB",
            run_time.as_secs_f64(),
            report.recipients_with_activity,
            report.queued,
            report.unsubscribed,
            rss_before as f64 / 1024.0,
            status_kb("VmHWM:") as f64 / 1024.0
        );
    });
}

/// Forty zones from Pago Pago (−11) to Kiritimati (+14).
const ZONES: [&str; 40] = [
    "Pacific/Pago_Pago",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Halifax",
    "America/Sao_Paulo",
    "America/St_Johns",
    "Atlantic/Azores",
    "Atlantic/Cape_Verde",
    "UTC",
    "Europe/London",
    "Europe/Lisbon",
    "Europe/Berlin",
    "Europe/Paris",
    "Africa/Lagos",
    "Europe/Athens",
    "Africa/Cairo",
    "Europe/Moscow",
    "Asia/Tehran",
    "Asia/Dubai",
    "Asia/Kabul",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Dhaka",
    "Asia/Yangon",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Australia/Eucla",
    "Asia/Tokyo",
    "Australia/Adelaide",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Noumea",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
];

/// A migrated SQLite database in a directory of its own (kept while the directory lives),
/// its URL and the store on it.
async fn fresh_store() -> (tempfile::TempDir, String, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (dir, url, store)
}

/// The week every run reports, and its first instant (UTC).
fn bench_week() -> (chrono::NaiveDate, i64) {
    let week = digest::parse_date("2026-11-09").unwrap();
    (week, digest::day_start_ms(week, chrono_tz::UTC))
}

async fn zones(recipients: u64, per: u64) {
    let (_dir, _, store) = fresh_store().await;
    let (week, from) = bench_week();
    let seeding = Instant::now();
    // Sessions on the Wednesday and Thursday of the week, inside every zone's local week.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
         INSERT INTO sessions (id, access_token_hash, learner_name, subject, parent_email, started_at, completed_at) \
         SELECT printf('s%09d', i), 'x', 'Ada', 'Fractions', printf('parent%07d@example.com', i % $2), \
                $3 + 2 * 86400000 + (i % 86400) * 1000, $3 + 2 * 86400000 + (i % 86400) * 1000 + 600000 FROM n",
    )
    .bind((recipients * per) as i64)
    .bind(recipients as i64)
    .bind(from)
    .execute(store.writer())
    .await
    .unwrap();
    let mut tx = store.writer().begin().await.unwrap();
    for (n, zone) in ZONES.iter().enumerate() {
        sqlx::query(
            "WITH RECURSIVE r(i) AS (SELECT $1 UNION ALL SELECT i + 40 FROM r WHERE i + 40 < $2) \
             INSERT INTO email_preferences (email, recipient_key, timezone, created_at, updated_at) \
             SELECT printf('parent%07d@example.com', i), printf('%032x', i), $3, 0, 0 FROM r",
        )
        .bind(n as i64)
        .bind(recipients as i64)
        .bind(*zone)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    println!(
        "seeded {recipients} recipients over {} zones and {} sessions in {:.1} s",
        ZONES.len(),
        recipients * per,
        seeding.elapsed().as_secs_f64()
    );
    let dry = |zone: Option<chrono_tz::Tz>| {
        let store = store.clone();
        async move {
            let tz = zone.unwrap_or(chrono_tz::UTC);
            let started = Instant::now();
            let report = digest::run(DigestRun {
                store: &store,
                throttle: None,
                week_start: week,
                timezone: tz,
                dry_run: true,
                now_ms: chrono::Utc::now().timestamp_millis(),
                throttle_rule: herald_actors::throttle::ThrottleRule::new(
                    1,
                    Duration::from_secs(7 * 86_400),
                ),
                zone: zone.map(|zone| herald::store::activity::ZoneScope {
                    zone,
                    default: chrono_tz::UTC,
                    moved_since_ms: from,
                }),
            })
            .await
            .unwrap();
            (started.elapsed(), report.recipients_with_activity)
        }
    };
    let (global, everyone) = dry(None).await;
    println!(
        "one dry run of everyone (global delivery): {:.2} s, {everyone} recipients; peak RSS {:.0} MB",
        global.as_secs_f64(),
        status_kb("VmHWM:") as f64 / 1024.0
    );
    let mut times = Vec::new();
    let mut covered = 0;
    for zone in ZONES {
        let (took, n) = dry(Some(zone.parse().unwrap())).await;
        times.push(took.as_secs_f64());
        covered += n;
    }
    let total: f64 = times.iter().sum();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "40 zones' dry runs (local delivery): {total:.2} s in all, each {:.2} s median ({:.2}–{:.2} s), {covered} recipients in all; peak RSS of the process {:.0} MB",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        status_kb("VmHWM:") as f64 / 1024.0
    );
}
