//! Several herald processes on one PostgreSQL database and one Redis: every guarantee holds
//! across them. Each test starts the real binary three times on loopback ports. Skipped,
//! with a note, without PostgreSQL or Redis outside CI; in CI they must run.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{admin_json, complete, start_session};
use crate::helpers::{API_KEY, Backend, TestDatabase, postgres_available};
use crate::smtp::SmtpServer;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Whether the machine's Redis answers; in CI it must.
pub fn redis_available(test: &str) -> bool {
    let ok = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_ok();
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but Redis is not reachable at 127.0.0.1:6379"
        );
        eprintln!("skipped replicas::{test}: Redis not reachable at 127.0.0.1:6379");
    }
    ok
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One herald process; killed when dropped.
pub struct Replica {
    child: Child,
    pub base: String,
}

impl Replica {
    /// Starts `herald serve` on a free port with `vars`, and waits until it is ready.
    pub async fn start(vars: &HashMap<String, String>) -> Self {
        let port = free_port();
        let mut command = crate::helpers::herald();
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("API_ACCESS_KEY", API_KEY)
            .env("SECRET_KEY", "replica-test-secret")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in vars {
            command.env(k, v);
        }
        let child = command.spawn().expect("herald starts");
        let replica = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client
                .get(format!("{}/health/ready", replica.base))
                .send()
                .await
                && r.status() == 200
            {
                return replica;
            }
            assert!(Instant::now() < deadline, "a replica did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the process to finish its shutdown.
    pub fn stop(&mut self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let _ = self.child.wait();
    }

    /// SIGKILL: no shutdown, no clean-up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The settings every replica of one test shares: the database, Redis under a prefix of
/// the test's own, and quick policy reloads.
fn shared_vars(db: &TestDatabase) -> HashMap<String, String> {
    let prefix = format!("herald-test-{}:", uuid::Uuid::new_v4().simple());
    [
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", REDIS_URL),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("POLICY_REFRESH_MS", "200"),
        ("RATE_LIMIT_FAIL_MODE", "closed"),
        ("RATE_LIMIT_REDIS_TIMEOUT_MS", "1000"),
        // No digest caught up at start, running while a test triggers its own.
        ("MISSED_RUN_POLICY", "skip"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The shared settings, sending to `smtp` eight at a time with no report limit and no limit
/// on session starts (the test's one client starts every session), and `extra`.
fn mail_vars(
    db: &TestDatabase,
    smtp: &SmtpServer,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut vars = shared_vars(db);
    smtp.configure(&mut vars);
    for (k, v) in [
        ("SESSION_REPORT_LIMIT", "1000000"),
        ("RATE_LIMIT_SESSIONS_MAX_REQUESTS", "1000000"),
        ("EMAIL_SEND_CONCURRENCY", "8"),
    ]
    .iter()
    .chain(extra)
    {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars
}

/// Three replicas on one fresh PostgreSQL database; the first migrates it alone.
async fn three(vars: &HashMap<String, String>) -> Vec<Replica> {
    let first = Replica::start(vars).await;
    let (b, c) = tokio::join!(Replica::start(vars), Replica::start(vars));
    vec![first, b, c]
}

async fn ready(test: &str) -> bool {
    herald::install_tls_provider();
    postgres_available(test).await && redis_available(test)
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_requests_over_three_replicas_share_one_window() {
    if !ready("one_clients_requests_over_three_replicas_share_one_window").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let replicas = three(&shared_vars(&db)).await;
    let client = reqwest::Client::new();
    let get = |i: usize| {
        client
            .get(format!("{}/api/v1/stats/dashboard", replicas[i % 3].base))
            .send()
    };
    let started = Instant::now();
    for i in 0..20 {
        let response = get(i).await.unwrap();
        assert_eq!(response.status(), 200, "request {i} on replica {}", i % 3);
    }
    let refused = get(20).await.unwrap();
    assert_eq!(refused.status(), 429, "the 21st of 20 per 60 s");
    // What one process would say: the first admission leaves the window 60 s after it.
    let waited = started.elapsed().as_secs();
    let after = retry_after(&refused);
    assert!(
        (60 - waited - 1..=60).contains(&after),
        "Retry-After {after} after {waited} s"
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["retry_after"], after);
    for i in 0..3 {
        assert_eq!(get(i).await.unwrap().status(), 429, "replica {i} agrees");
    }

    // A reset on one replica clears the shared window for all.
    let reset = client
        .post(format!("{}/admin/rate_limits/reset", replicas[1].base))
        .header("X-API-Key", API_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(get(2).await.unwrap().status(), 200);

    // A policy changed on one replica is in force on the others within the refresh time.
    let changed = Instant::now();
    let put = client
        .put(format!("{}/api/v1/ops/rate_limits", replicas[0].base))
        .header("X-API-Key", API_KEY)
        .json(&serde_json::json!({"stats": {"max_requests": 7, "window_seconds": 30}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    loop {
        let response = get(2).await.unwrap();
        if response.headers()["ratelimit-policy"] == "\"stats\";q=7;w=30" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(3),
            "replica 2 still serves the old policy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "policy change seen by another replica after {} ms",
        changed.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_email_throttle_is_exact_across_replicas() {
    if !ready("the_email_throttle_is_exact_across_replicas").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let replicas = three(&shared_vars(&db)).await;
    let client = reqwest::Client::new();
    let parent = "new.parent@example.com";

    // Six sessions of one new parent, completed at once over the three replicas.
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(start_session(&client, &replicas[i % 3].base, parent).await);
    }
    let outcomes = futures_util::future::join_all(
        sessions
            .iter()
            .enumerate()
            .map(|(i, s)| complete(&client, &replicas[i % 3].base, s)),
    )
    .await;
    let queued = outcomes
        .iter()
        .filter(|(status, body)| *status == 200 && body["report_email"] == "queued")
        .count();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert_eq!((queued, refused.len()), (5, 1), "{outcomes:?}");
    assert_eq!(refused[0].1["limit"], 5);

    // A reset on one replica is honoured by another at once.
    let reset = client
        .delete(format!("{}/admin/throttles/{parent}", replicas[0].base))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let again = start_session(&client, &replicas[2].base, parent).await;
    let (status, body) = complete(&client, &replicas[2].base, &again).await;
    assert_eq!(
        (status, body["report_email"].as_str()),
        (200, Some("queued"))
    );

    // An unsubscribe through one replica is honoured by another at once.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let recipient_key: String =
        sqlx::query_scalar("SELECT recipient_key FROM email_preferences WHERE email = $1")
            .bind(parent)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let signer = herald::email::Signer::new(
        (1, herald::secret::Secret::new("replica-test-secret")),
        Vec::new(),
    );
    let unsubscribed = client
        .post(format!(
            "{}/api/v1/email/unsubscribe/{}?type=session_reports",
            replicas[1].base,
            signer.token(&recipient_key)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unsubscribed.status(), 200);
    let after = start_session(&client, &replicas[0].base, parent).await;
    let (status, body) = complete(&client, &replicas[0].base, &after).await;
    assert_eq!(
        (status, body["report_email"].as_str()),
        (200, Some("suppressed"))
    );

    // Fifty identical completions of one session over the three replicas: one email.
    let other = "identical@example.com";
    let session = start_session(&client, &replicas[1].base, other).await;
    let outcomes = futures_util::future::join_all(
        (0..50).map(|i| complete(&client, &replicas[i % 3].base, &session)),
    )
    .await;
    assert!(
        outcomes.iter().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    let queued = outcomes
        .iter()
        .filter(|(_, body)| body["report_email"] == "queued")
        .count();
    assert_eq!(queued, 1, "{outcomes:?}");
    let (rows, slots): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM email_send_logs WHERE email = $1), \
                (SELECT COUNT(*) FROM email_throttles WHERE email = $1)",
    )
    .bind(other)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((rows, slots), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_triggered_on_every_replica_runs_once() {
    if !ready("an_occurrence_triggered_on_every_replica_runs_once").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let replicas = three(&shared_vars(&db)).await;
    let client = reqwest::Client::new();
    runs_once_when_triggered_on_every_replica(&client, &replicas, "weekly_digest").await;
}

/// The same for one zone's digest (`weekly_digest@{zone}`): every replica has the zone's job
/// (the first from the preference that named it, the others from the database at start),
/// and an occurrence triggered on all three at once runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zones_digest_occurrence_triggered_on_every_replica_runs_once() {
    if !ready("a_zones_digest_occurrence_triggered_on_every_replica_runs_once").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let vars = shared_vars(&db);
    let first = Replica::start(&vars).await;
    let client = reqwest::Client::new();
    let set = client
        .put(format!(
            "{}/api/v1/email/preferences/parent@example.com",
            first.base
        ))
        .header("X-API-Key", API_KEY)
        .json(&serde_json::json!({"timezone": "Asia/Kolkata"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let (b, c) = tokio::join!(Replica::start(&vars), Replica::start(&vars));
    let replicas = [first, b, c];
    runs_once_when_triggered_on_every_replica(&client, &replicas, "weekly_digest@Asia%2FKolkata")
        .await;
}

/// Sends report emails through three replicas to one SMTP server taking ~5 ms a message,
/// SIGKILLs one replica midway when `kill` is set, and counts what arrived as a
/// total-queue checker does: none lost, and no duplicate unless it carries the same
/// Message-ID (a message in flight at the kill).
async fn deliver_over_three(total: usize, kill: bool) {
    let (db, smtp) = (
        TestDatabase::new(Backend::Postgres).await,
        SmtpServer::start().await,
    );
    smtp.slow(5);
    let vars = mail_vars(
        &db,
        &smtp,
        &[
            // Short enough that the killed replica's emails are taken over within the
            // test, long enough that a loaded machine's attempts end inside their lease.
            ("EMAIL_OUTBOX_LEASE_SECONDS", "20"),
            ("SMTP_TIMEOUT_SECONDS", "5"),
        ],
    );
    let mut replicas = three(&vars).await;
    let started = Instant::now();
    let client = reqwest::Client::new();
    let bases: Vec<String> = replicas.iter().map(|r| r.base.clone()).collect();
    // Queued in parallel, 16 at a time, round robin over the replicas.
    let mut queued = 0;
    let mut killed = false;
    for chunk in (0..total).collect::<Vec<_>>().chunks(16) {
        // Once one is killed, only the survivors take completions.
        let live = if killed { &bases[1..] } else { &bases[..] };
        let outcomes = futures_util::future::join_all(chunk.iter().map(|i| {
            let (client, base) = (&client, &live[i % live.len()]);
            async move {
                let parent = format!("parent{i}@example.com");
                let session = start_session(client, base, &parent).await;
                complete(client, base, &session).await
            }
        }))
        .await;
        for (status, body) in &outcomes {
            // A completion sent to the replica just killed may fail; the others queue.
            if *status == 200 && body["report_email"] == "queued" {
                queued += 1;
            }
        }
        if kill && !killed && smtp.received().len() > total / 4 {
            replicas[0].kill();
            killed = true;
        }
    }
    assert!(!kill || killed, "the kill happened while sending");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ids: HashSet<String> = smtp.received().iter().map(message_id).collect();
        if ids.len() >= queued {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {queued} distinct messages arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Count once no row is pending or sending: every attempt has ended (a row is marked
    // only after its SMTP transaction), so no message is still on its way.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM email_send_logs WHERE status IN ('pending', 'sending')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} emails never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = smtp.received();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for message in &received {
        *per_id.entry(message_id(message)).or_default() += 1;
    }
    let duplicated: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(
        per_id.len(),
        queued,
        "every queued email arrived, once per id"
    );
    if kill {
        // Only what the killed replica had in flight may go twice: at most its
        // concurrency.
        assert!(duplicated.len() <= 8, "{} duplicated", duplicated.len());
    } else {
        assert!(duplicated.is_empty(), "{duplicated:?}");
    }
    eprintln!(
        "{queued} queued, {} received, {} distinct, {} sent twice (kill: {kill}) in {:.1} s",
        received.len(),
        per_id.len(),
        duplicated.len(),
        started.elapsed().as_secs_f64()
    );
    drop(replicas);
}

pub(crate) fn message_id(message: &crate::smtp::Received) -> String {
    let parsed = mailparse::parse_mail(&message.data).expect("a parsable message");
    parsed
        .headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case("Message-ID"))
        .expect("a Message-ID")
        .get_value()
}

/// How many emails the delivery tests send (2,000 by default; `HERALD_REPLICA_EMAILS`).
fn emails() -> usize {
    std::env::var("HERALD_REPLICA_EMAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// A replica `SIGKILL`ed mid-send and started again under its name (`HERALD_INSTANCE`, as a
/// restarted container keeps its hostname) sends what it had in flight at once, not after
/// the two-minute lease: every email arrives, one arrives twice only if it was in flight
/// at the kill (with the same Message-ID), and the catch-up is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_under_its_name_sends_what_it_left_in_flight_at_once() {
    if !ready("a_replica_restarted_under_its_name_sends_what_it_left_in_flight_at_once").await {
        return;
    }
    const EMAILS: usize = 300;
    const CONCURRENCY: usize = 8;
    let (db, smtp) = (
        TestDatabase::new(Backend::Postgres).await,
        SmtpServer::start().await,
    );
    smtp.slow(20);
    let vars = mail_vars(&db, &smtp, &[("HERALD_INSTANCE", "replica-a")]);
    let mut first = Replica::start(&vars).await;
    let client = reqwest::Client::new();
    for chunk in (0..EMAILS).collect::<Vec<_>>().chunks(16) {
        let outcomes = futures_util::future::join_all(chunk.iter().map(|i| {
            let (client, base) = (&client, &first.base);
            async move {
                let session = start_session(client, base, &format!("parent{i}@example.com")).await;
                complete(client, base, &session).await
            }
        }))
        .await;
        assert!(outcomes.iter().all(|(status, _)| *status == 200));
    }
    while smtp.received().len() < EMAILS / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    let at_kill = smtp.received().len();
    let restarted = Instant::now();
    let _second = Replica::start(&vars).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let recipients: HashSet<String> = smtp
            .received()
            .iter()
            .flat_map(|m| m.rcpt_to.clone())
            .collect();
        if recipients.len() == EMAILS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {EMAILS} arrived",
            recipients.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up = restarted.elapsed();
    let received = smtp.received();
    let ids: Vec<String> = received.iter().map(message_id).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), EMAILS, "a repeat carries its Message-ID");
    let twice = received.len() - EMAILS;
    // A repeat is only of a message in flight at the kill: its first copy had arrived by
    // then, or was one of the sends under way.
    for (later, id) in ids.iter().enumerate() {
        if let Some(first) = ids[..later].iter().position(|earlier| earlier == id) {
            assert!(
                first < at_kill + CONCURRENCY,
                "{id} first arrived as message {first}, after the kill at {at_kill}: not in flight"
            );
        }
    }
    eprintln!(
        "{EMAILS} emails, killed after {at_kill}: all delivered {:.1} s after the restart (the lease is 120 s), {twice} sent twice",
        caught_up.as_secs_f64()
    );
    assert!(
        caught_up < Duration::from_secs(60),
        "the restart waited for the lease: {caught_up:?}"
    );
}

/// One test, two runs one after the other: three replicas on a 2-core machine already
/// contend for it, and six would turn the leases' margins into the thing measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_deliver_every_email_once_even_when_one_is_killed() {
    if !ready("three_replicas_deliver_every_email_once_even_when_one_is_killed").await {
        return;
    }
    deliver_over_three(emails(), false).await;
    deliver_over_three(emails(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_is_never_taken_over_and_a_dead_ones_is_finished_once() {
    if !ready("a_live_run_is_never_taken_over_and_a_dead_ones_is_finished_once").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let replicas = three(&shared_vars(&db)).await;
    let client = reqwest::Client::new();
    let parents = ["a@example.com", "b@example.com", "c@example.com"];
    for (i, parent) in parents.iter().enumerate() {
        let session = start_session(&client, &replicas[i % 3].base, parent).await;
        assert_eq!(
            complete(&client, &replicas[i % 3].base, &session).await.0,
            200
        );
    }
    // The week that includes today; its occurrence is the midnight (UTC) after it.
    let start = chrono::Utc::now().date_naive() - chrono::Duration::days(6);
    let occurrence = (start + chrono::Duration::days(7))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let now = chrono::Utc::now().timestamp_millis();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    // A replica is running this occurrence and renewing its lease.
    sqlx::query(
        "INSERT INTO job_runs (id, job, scheduled_for, status, started_at, lease_until, owner) \
         VALUES ('dead-run', 'weekly_digest', $1, 'running', $2, $3, 'replica-killed')",
    )
    .bind(occurrence)
    .bind(now - 10_000)
    .bind(now + 60_000)
    .execute(&mut conn)
    .await
    .unwrap();
    let run_everywhere = async || {
        let answers = futures_util::future::join_all(replicas.iter().map(|replica| {
            client
                .post(format!("{}/admin/jobs/weekly_digest/run", replica.base))
                .header("X-API-Key", API_KEY)
                .json(&serde_json::json!({"start_date": start.to_string()}))
                .send()
        }))
        .await;
        answers
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect::<Vec<u16>>()
    };
    assert_eq!(
        run_everywhere().await,
        [409, 409, 409],
        "a live run is not taken over"
    );

    // It was killed: its lease runs out without a renewal. One replica takes it over.
    sqlx::query("UPDATE job_runs SET lease_until = $1 WHERE id = 'dead-run'")
        .bind(now - 1)
        .execute(&mut conn)
        .await
        .unwrap();
    let statuses = run_everywhere().await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status: String = sqlx::query_scalar(
            "SELECT status FROM job_runs WHERE job = 'weekly_digest' AND scheduled_for = $1",
        )
        .bind(occurrence)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if status == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the digest run ended {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let digests: Vec<(String, i64)> = sqlx::query_as(
        "SELECT email, COUNT(*) FROM email_send_logs WHERE email_type = 'weekly_digest' \
         GROUP BY email ORDER BY email",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        digests,
        parents.map(|p| (p.to_owned(), 1)).to_vec(),
        "one digest per recipient"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_running_the_digest_is_killed_and_another_finishes_it() {
    if !ready("the_replica_running_the_digest_is_killed_and_another_finishes_it").await {
        return;
    }
    // Enough that the run is still going when its replica is killed, few enough that the
    // rest of the suite, running beside it, keeps its own timings.
    const RECIPIENTS: usize = 600;
    let db = TestDatabase::new(Backend::Postgres).await;
    // Sessions of last week, written straight into the database: the digest has work to do.
    {
        let replica = Replica::start(&shared_vars(&db)).await; // migrates the database
        drop(replica);
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let done = chrono::Utc::now().timestamp_millis() - 3 * 86_400_000;
    for chunk in (0..RECIPIENTS).collect::<Vec<_>>().chunks(500) {
        let mut sql = String::from(
            "INSERT INTO sessions (id, access_token_hash, learner_name, parent_email, started_at, completed_at) VALUES ",
        );
        for (n, i) in chunk.iter().enumerate() {
            if n > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('s{i}', 'x', 'Ada', 'parent{i}@example.com', {}, {done})",
                done - 60_000
            ));
        }
        sqlx::query(&sql).execute(&mut conn).await.unwrap();
    }
    // Every replica wakes for the digest every minute; a run is vouched for 2 s at a time.
    let mut vars = shared_vars(&db);
    vars.insert("DIGEST_SCHEDULE".into(), "* * * * *".into());
    vars.insert("JOB_LEASE_SECONDS".into(), "2".into());
    let mut replicas = three(&vars).await;

    // Wait for the occurrence and see which replica runs it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (scheduled_for, owner) = loop {
        let running: Option<(i64, String)> = sqlx::query_as(
            "SELECT scheduled_for, owner FROM job_runs WHERE job = 'weekly_digest' AND status = 'running'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some(running) = running {
            break running;
        }
        assert!(Instant::now() < deadline, "no digest run started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // `{HERALD_INSTANCE}/{pid}-{nonce}`.
    let (_, process) = owner.rsplit_once('/').expect("the run names its replica");
    let pid: u32 = process.split('-').next().unwrap().parse().unwrap();
    let runner = replicas
        .iter()
        .position(|r| r.pid() == pid)
        .expect("the run's owner is one of the replicas");
    // Kill it mid-run, as soon as it has queued its first digests.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM email_send_logs WHERE email_type = 'weekly_digest'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if queued > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the digest queued nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replicas[runner].kill();
    let queued_at_kill: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_send_logs WHERE email_type = 'weekly_digest'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        (queued_at_kill as usize) < RECIPIENTS,
        "the digest was already done when its replica was killed"
    );

    // Another replica takes the run over once its lease has run out, and finishes it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, now_owner, error): (String, String, Option<String>) = sqlx::query_as(
            "SELECT status, owner, error FROM job_runs WHERE job = 'weekly_digest' AND scheduled_for = $1",
        )
        .bind(scheduled_for)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if status == "succeeded" {
            assert_ne!(now_owner, owner, "finished by another replica");
            break;
        }
        assert!(status != "failed", "the run failed: {error:?}");
        assert!(
            Instant::now() < deadline,
            "the run was not finished: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rows, recipients): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT email) FROM email_send_logs WHERE email_type = 'weekly_digest'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (rows, recipients),
        (RECIPIENTS as i64, RECIPIENTS as i64),
        "one digest for each recipient ({queued_at_kill} queued when the runner was killed)"
    );
}

/// Triggers the week that began five weeks ago of `job` on every replica at once: one
/// starts it, the others hear it ran.
async fn runs_once_when_triggered_on_every_replica(
    client: &reqwest::Client,
    replicas: &[Replica],
    job: &str,
) {
    // The replicas keep time by the machine's clock, and the send log keeps 180 days.
    let week = chrono::Utc::now().date_naive() - chrono::Duration::days(35);
    let answers = futures_util::future::join_all(replicas.iter().map(|replica| {
        client
            .post(format!("{}/admin/jobs/{job}/run", replica.base))
            .header("X-API-Key", API_KEY)
            .json(&serde_json::json!({"start_date": week.to_string()}))
            .send()
    }))
    .await;
    let statuses: Vec<u16> = answers
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [202, 409].contains(s)),
        "{statuses:?}"
    );
}

/// What `/admin/replicas` on `replica` says: each replica serving, with the shared settings
/// it has otherwise than `replica`.
async fn replicas_seen_by(replica: &Replica) -> Vec<(String, Vec<String>)> {
    let seen = admin_json(&reqwest::Client::new(), &replica.base, "/admin/replicas").await;
    seen["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let differing = r["differing"].as_array().unwrap();
            (
                r["instance"].as_str().unwrap().to_owned(),
                differing
                    .iter()
                    .map(|d| d.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// Polls `/admin/replicas` on `replica` until it says `expected`.
async fn until_seen(replica: &Replica, expected: &[(&str, &[&str])]) {
    let expected: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(name, differing)| {
            let differing = differing.iter().map(|d| (*d).to_owned()).collect();
            ((*name).to_owned(), differing)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = replicas_seen_by(replica).await;
        if seen == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{} sees {seen:?}", replica.base);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A replica started with another value of a setting every replica must share (here the
/// report throttle, which would let a parent get more reports through it) is named, with
/// the setting, by every replica, and counted in its metrics; one that stops is no longer
/// listed. A replica's own settings (its log level) are not compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_other_shared_settings_is_named_by_every_replica() {
    if !ready("a_replica_started_with_other_shared_settings_is_named_by_every_replica").await {
        return;
    }
    let db = TestDatabase::new(Backend::Postgres).await;
    let vars = shared_vars(&db);
    let with_instance = |vars: &HashMap<String, String>, instance: &str| {
        let mut vars = vars.clone();
        vars.insert("HERALD_INSTANCE".into(), instance.into());
        vars
    };
    let a = Replica::start(&with_instance(&vars, "replica-a")).await;
    let mut other = with_instance(&vars, "replica-b");
    other.insert("SESSION_REPORT_LIMIT".into(), "7".into());
    other.insert("LOG_LEVEL".into(), "error".into());
    let mut b = Replica::start(&other).await;
    let c = Replica::start(&with_instance(&vars, "replica-c")).await;

    let limit: &[&str] = &["SESSION_REPORT_LIMIT"];
    until_seen(
        &a,
        &[("replica-a", &[]), ("replica-b", limit), ("replica-c", &[])],
    )
    .await;
    until_seen(
        &b,
        &[
            ("replica-a", limit),
            ("replica-b", &[]),
            ("replica-c", limit),
        ],
    )
    .await;
    // C compared as it started, A and B serving: one replica differs.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", c.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|l| l == "replica_settings_differ 1") {
            break;
        }
        assert!(Instant::now() < deadline, "C's gauge: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.stop();
    until_seen(&a, &[("replica-a", &[]), ("replica-c", &[])]).await;
}
