//! The scheduler and its jobs over real HTTP, with the hand-driven clock.

use std::time::Duration;

use chrono::{DateTime, NaiveDate};
use mailparse::MailHeaderMap;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, TABLES, TestApp, TestDatabase, assert_error, run_ok, spawn_app_at, spawn_app_on,
    spawn_app_with,
};
use crate::on_both_backends;
use crate::smtp::SmtpServer;

fn ms(rfc3339: &str) -> u64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis() as u64
}

async fn run_job(app: &TestApp, name: &str, body: Value) -> reqwest::Response {
    app.post_admin(&format!("/admin/jobs/{name}/run"), Some(&body))
        .await
}

/// Waits until no run of `name` is running and at least `n` exist.
pub(crate) async fn wait_runs(app: &TestApp, name: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let runs = app.job_runs(name).await;
        if runs.len() >= n && runs.iter().all(|r| r["status"] != "running") {
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs of {name}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn counts(app: &TestApp) -> Vec<i64> {
    let mut out = Vec::new();
    for table in TABLES {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(app.state.store.reader())
            .await
            .unwrap();
        out.push(n);
    }
    out
}

/// A completed session for `parent`, with `answers` answers of which `correct` right,
/// lasting `minutes`, completed at the clock's current time.
async fn session(
    app: &TestApp,
    parent: &str,
    subject: &str,
    minutes: u64,
    answers: usize,
    correct: usize,
) {
    let s = app
        .new_session(json!({"parent_email": parent, "learner_name": "Ada", "subject": subject}))
        .await;
    for i in 0..answers {
        app.add_event(
            &s.id,
            Some(&s.token),
            json!({"kind": "answer", "correct": i < correct}),
        )
        .await;
    }
    app.add_event(&s.id, Some(&s.token), json!({"kind": "hint"}))
        .await;
    app.clock.advance_ms(minutes * 60_000);
    let done = app.complete(&s.id, Some(&s.token), Some(json!({}))).await;
    assert!(
        done.status() == 200 || done.status() == 429,
        "{}",
        done.status()
    );
}

/// Tuesday 17 November 2026, 10:00 UTC: the week of 2026-11-09 is the one before, and well
/// inside what the send log keeps (a week it no longer holds is not run again).
const AFTER_THE_WEEK: u64 = 1_794_909_600_000;

/// Two parents active in the week of 2026-11-09 and one only the week before. They turned
/// session reports off, so only digests go out.
async fn seed(app: &TestApp) {
    for (i, parent) in [
        "early@example.com",
        "ada.parent@example.com",
        "bo.parent@example.com",
    ]
    .iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO email_preferences (email, recipient_key, session_reports_enabled, created_at, updated_at) VALUES ($1, $2, 0, 0, 0)",
        )
        .bind(*parent)
        .bind(format!("{i:032x}"))
        .execute(app.state.store.writer())
        .await
        .unwrap();
    }
    app.clock.set_ms(ms("2026-11-03T10:00:00Z"));
    session(app, "early@example.com", "Fractions", 10, 1, 1).await;
    app.clock.set_ms(ms("2026-11-10T10:00:00Z"));
    session(app, "ada.parent@example.com", "Fractions", 30, 4, 3).await;
    session(app, "ada.parent@example.com", "Decimals", 15, 2, 1).await;
    app.clock.set_ms(ms("2026-11-12T18:00:00Z"));
    session(app, "ada.parent@example.com", "Fractions", 5, 0, 0).await;
    session(app, "bo.parent@example.com", "Reading", 20, 1, 0).await;
    app.clock.set_ms(AFTER_THE_WEEK);
}

fn mail_vars(
    smtp: &SmtpServer,
) -> impl FnOnce(&mut std::collections::HashMap<String, String>) + '_ {
    move |vars| {
        smtp.configure(vars);
        vars.insert("SESSION_REPORT_LIMIT".to_owned(), "100".to_owned());
    }
}

async fn the_weekly_digest_aggregates_the_week_and_sends_through_the_outbox(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(backend, mail_vars(&smtp), None).await;
    seed(&app).await;
    let reports = 0;

    let started = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"})).await;
    assert_eq!(started.status(), 202);
    let run_id = started.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runs = wait_runs(&app, "weekly_digest", 1).await;
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");
    let stats = &runs[0]["stats"];
    assert_eq!(stats["week_start"], "2026-11-09");
    assert_eq!(stats["recipients_with_activity"], 2);
    assert_eq!(stats["queued"], 2);
    assert_eq!(
        stats["skipped_no_activity"], 1,
        "early@ had nothing that week"
    );

    let received = smtp.wait_for(reports + 2).await;
    let digests: Vec<_> = received[reports..]
        .iter()
        .map(|m| mailparse::parse_mail(&m.data).unwrap())
        .collect();
    let ada = digests
        .iter()
        .find(|m| {
            m.headers
                .iter()
                .any(|h| h.get_key() == "To" && h.get_value().contains("ada.parent"))
        })
        .expect("ada's digest");
    let subject = ada.headers.get_first_value("Subject").unwrap();
    assert_eq!(
        subject,
        "Weekly learning digest for Ada: 3 sessions (week of 2026-11-09)"
    );
    // A section for the learner, the week day by day, and the week before (none here).
    let text = ada.subparts[0].get_body().unwrap().replace("\r\n", "\n");
    for expected in [
        "The week of 2026-11-09 to 2026-11-15.",
        "Ada\n  3 sessions, 50 min, 67% of answers right",
        "Subjects: Fractions, Decimals",
        "Mon    0 min\n",
        "Tue   45 min ####################\n",
        "Thu    5 min ##\n",
        "Sessions: 3 (new)",
        "Minutes:  50 (new)",
    ] {
        assert!(text.contains(expected), "{expected:?} not in {text}");
    }
    assert!(
        text.lines().all(|line| !line.ends_with(' ')),
        "no line ends in a space: {text:?}"
    );
    let html = ada.subparts[1].get_body().unwrap();
    for expected in [
        "<h2 class=\"learner\"",
        ">Ada</h2>",
        "height=\"60\" style=\"height:60px",
        "Tue<br>45'",
        "href=\"http",
    ] {
        assert!(html.contains(expected), "{expected:?} not in {html}");
    }
    let unsubscribe = ada.headers.get_first_value("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe
            .split_whitespace()
            .collect::<String>()
            .ends_with("?type=weekly_digest>")
    );

    // The same week again: each digest is a duplicate, nothing more is sent.
    assert_eq!(
        run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"}))
            .await
            .status(),
        409
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"job_runs_total{job="weekly_digest",outcome="succeeded"} "#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"job_last_success_timestamp_seconds{job="weekly_digest"}"#));
}

async fn a_dry_run_reports_and_changes_no_table(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(backend, mail_vars(&smtp), None).await;
    seed(&app).await;
    // Bo turned digests off: a dry run says so.
    sqlx::query("UPDATE email_preferences SET weekly_digest_enabled = 0 WHERE email = 'bo.parent@example.com'")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    let before = counts(&app).await;
    let response = run_job(
        &app,
        "weekly_digest",
        json!({"dry_run": true, "start_date": "2026-11-09"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["recipients_with_activity"], 2);
    assert_eq!(report["queued"], 1);
    assert_eq!(report["unsubscribed"], 1);
    assert_eq!(
        report["sample"]["unsubscribed"],
        json!(["bo***@example.com"])
    );
    assert_eq!(counts(&app).await, before, "a dry run writes nothing");
    let bad = run_job(
        &app,
        "weekly_digest",
        json!({"dry_run": true, "start_date": "09/11/2026"}),
    )
    .await;
    assert_eq!(
        assert_error(bad, 422, "VALIDATION_ERROR").await["field"],
        "start_date"
    );
    // The send log keeps 180 days (to 21 May, 10:00): the week of 4 May, whose digest was
    // due on 11 May, may have had its digests sent with the rows since purged, so it is not
    // run again, for real or dry; the week of 18 May (due 25 May) still runs.
    for dry_run in [false, true] {
        let old = run_job(
            &app,
            "weekly_digest",
            json!({"dry_run": dry_run, "start_date": "2026-05-04"}),
        )
        .await;
        let error = assert_error(old, 409, "WEEK_TOO_OLD").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("RETENTION_SEND_LOG_DAYS=180"),
            "{error}"
        );
    }
    assert_eq!(counts(&app).await, before, "a refused week writes nothing");
    let kept = run_job(
        &app,
        "weekly_digest",
        json!({"dry_run": true, "start_date": "2026-05-18"}),
    )
    .await;
    assert_eq!(kept.status(), 200);
    assert_error(
        run_job(&app, "nightly_backup", json!({})).await,
        404,
        "JOB_NOT_FOUND",
    )
    .await;

    // A bounce event, kept as long as the send ledger.
    herald::store::suppressions::record_event(
        &app.state.store,
        &herald::store::suppressions::Event {
            id: "bounce-1",
            email: "gone@example.com",
            kind: "hard_bounce",
            source: "webhook",
            detail: None,
            at_ms: app.clock.now_ms_i64(),
        },
    )
    .await
    .unwrap();
    // The purge's dry run counts what a run would delete, and deletes nothing.
    app.clock.advance_ms(400 * 86_400_000);
    // A session started within RETENTION_SESSIONS_DAYS stays, with its events.
    let recent = app.new_session(json!({"learner_name": "Noor"})).await;
    app.add_event(&recent.id, Some(&recent.token), json!({"kind": "step"}))
        .await;
    let (stored, started) = (app.rows("session_events").await, app.rows("sessions").await);
    assert!(stored > 1 && started > 1);
    let before = counts(&app).await;
    let dry = run_job(&app, "purge_old", json!({"dry_run": true})).await;
    assert_eq!(dry.status(), 200);
    let report: Value = dry.json().await.unwrap();
    assert_eq!(report["session_events"], stored - 1, "{report}");
    assert_eq!(report["sessions"], started - 1, "{report}");
    assert_eq!(report["email_events"], 1, "{report}");
    assert_eq!(counts(&app).await, before, "a dry run deletes nothing");
    assert_eq!(run_job(&app, "purge_old", json!({})).await.status(), 202);
    wait_runs(&app, "purge_old", 1).await;
    assert_eq!(
        (app.rows("session_events").await, app.rows("sessions").await),
        (1, 1)
    );
    assert_eq!(app.report_summary(&recent.id).await.status(), 200);
}

/// A preview renders an email as the dispatcher would, over HTTP and from the shell, and
/// writes and sends nothing.
async fn an_email_preview_renders_without_writing_or_sending(backend: Backend) {
    use base64::Engine;
    let app = spawn_app_with(backend, |_| {}, None).await;
    seed(&app).await;
    let before = counts(&app).await;

    let digest = app
        .get_admin(
            "/admin/email/preview/weekly_digest?email=ada.parent@example.com&week=2026-11-09",
        )
        .await;
    assert_eq!(digest.status(), 200);
    let digest: Value = digest.json().await.unwrap();
    assert_eq!(digest["type"], "weekly_digest");
    assert!(
        digest["text"].as_str().unwrap().contains("Fractions"),
        "{digest}"
    );
    assert!(
        digest["html"]
            .as_str()
            .unwrap()
            .contains("/api/v1/email/unsubscribe/")
    );
    assert!(digest["pdf_base64"].is_null());
    assert_error(
        app.get_admin(
            "/admin/email/preview/weekly_digest?email=ada.parent@example.com&week=2020-01-06",
        )
        .await,
        404,
        "NO_ACTIVITY",
    )
    .await;
    // A year of other than four digits is no date a week could start on (the one before the
    // first chrono can count back from, say).
    for week in ["-262143-01-01", "+10000-01-01", "262142-12-27"] {
        assert_error(
            app.get_admin(&format!(
                "/admin/email/preview/weekly_digest?email=ada.parent@example.com&week={week}"
            ))
            .await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
    }

    let session_id: String =
        sqlx::query_scalar("SELECT id FROM sessions ORDER BY started_at LIMIT 1")
            .fetch_one(app.state.store.reader())
            .await
            .unwrap();
    let report = app
        .get_admin(&format!(
            "/admin/email/preview/session_reports?session_id={session_id}"
        ))
        .await;
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.unwrap();
    assert!(
        report["subject"]
            .as_str()
            .unwrap()
            .contains("session report")
    );
    let pdf = base64::engine::general_purpose::STANDARD
        .decode(report["pdf_base64"].as_str().unwrap())
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let missing = app.get_admin("/admin/email/preview/session_reports").await;
    assert_eq!(
        assert_error(missing, 422, "VALIDATION_ERROR").await["field"],
        "session_id"
    );
    assert_error(
        app.get_admin("/admin/email/preview/newsletter").await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(counts(&app).await, before, "a preview writes nothing");

    // The same from the shell.
    let preview = |out: &std::path::Path| {
        let mut command = crate::helpers::herald();
        command
            .args([
                "email",
                "preview",
                "report",
                "--session-id",
                &session_id,
                "--out",
            ])
            .arg(out)
            .env("DATABASE_URL", app.database_url())
            .env("SECRET_KEY", "test-signing-secret")
            .env("LOG_LEVEL", "error");
        command
    };
    let dir = tempfile::tempdir().unwrap();
    let shown = run_ok(&mut preview(dir.path()));
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.starts_with("Subject: ") && stdout.contains("finished a session"),
        "{stdout}"
    );
    assert!(
        std::fs::read(dir.path().join("report.pdf"))
            .unwrap()
            .starts_with(b"%PDF-")
    );
    assert!(
        std::fs::read_to_string(dir.path().join("email.html"))
            .unwrap()
            .contains("<html")
    );
    // A reader that goes away at once (`| head -1`) neither stops the files nor fails it.
    let cut_short = tempfile::tempdir().unwrap();
    let mut child = preview(cut_short.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop((child.stdout.take(), child.stderr.take()));
    assert!(child.wait().unwrap().success());
    for name in ["email.html", "report.pdf"] {
        assert!(cut_short.path().join(name).exists(), "{name}");
    }
    assert_eq!(counts(&app).await, before, "nor does the shell's");
}

/// A digest's preview is the email its recipient gets: its days are the recipient's own
/// zone's (a session at 01:00 on a Sunday in Auckland is Saturday's in UTC), its default
/// week is the seven days before today there, and its subject and text are those of the
/// digest the zone's run sends.
async fn a_digest_preview_counts_the_days_of_the_recipients_own_zone_like_the_sent_digest(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(backend, mail_vars(&smtp), None).await;
    let parent = "kiwi.parent@example.com";
    // Session reports off: the only emails are digests.
    app.set_preferences(
        parent,
        json!({"timezone": "Pacific/Auckland", "session_reports_enabled": false}),
    )
    .await;
    // Saturday 14 November in UTC; Sunday 15 November, 01:00 in Auckland.
    app.clock.set_ms(ms("2026-11-14T12:00:00Z"));
    session(&app, parent, "Fractions", 20, 2, 1).await;

    let preview = |week: &'static str| {
        let app = &app;
        async move {
            app.get_admin(&format!(
                "/admin/email/preview/weekly_digest?email={parent}{week}"
            ))
            .await
        }
    };
    let empty = assert_error(preview("&week=2026-11-08").await, 404, "NO_ACTIVITY").await;
    assert!(
        !empty["message"]
            .as_str()
            .unwrap()
            .contains("last whole week")
    );
    // Asked without a week on the session's own day, the seven days before it: none, and
    // the answer says which week it looked at and that another can be named.
    let empty = assert_error(preview("").await, 404, "NO_ACTIVITY").await;
    let message = empty["message"].as_str().unwrap();
    assert!(
        message.contains("the week of 2026-11-08 (the last whole week")
            && message.contains("name a week"),
        "{message}"
    );
    let chosen = preview("&week=2026-11-15").await;
    assert_eq!(chosen.status(), 200);
    let chosen: Value = chosen.json().await.unwrap();
    let text = chosen["text"].as_str().unwrap();
    assert!(text.contains("\n  Sun   20 min #"), "{text}");
    // Sunday 22 November, 01:00 in Auckland (still Saturday in UTC): the week before is
    // Auckland's 15 to 21 November.
    app.clock.set_ms(ms("2026-11-21T12:00:00Z"));
    let default: Value = preview("").await.json().await.unwrap();
    assert_eq!(default, chosen);

    let run = run_job(
        &app,
        "weekly_digest@Pacific%2FAuckland",
        json!({"start_date": "2026-11-15"}),
    )
    .await;
    assert_eq!(run.status(), 202, "{:?}", run.text().await);
    let received = smtp.wait_for(1).await;
    let sent = mailparse::parse_mail(&received[0].data).unwrap();
    let subject = sent.headers.get_first_value("Subject").unwrap();
    assert_eq!(subject, chosen["subject"].as_str().unwrap());
    assert_eq!(
        sent.subparts[0].get_body().unwrap().replace("\r\n", "\n"),
        text
    );
}

/// With global delivery everyone's digest reports the week of `DIGEST_TIMEZONE`, also for
/// a recipient with a zone of their own: the week the run chose them for is the week their
/// digest shows, and its preview shows the same.
async fn with_global_delivery_a_digest_reports_the_services_week_whatever_the_recipients_zone(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(
        backend,
        |vars| {
            mail_vars(&smtp)(vars);
            vars.insert("DIGEST_DELIVERY".to_owned(), "global".to_owned());
        },
        None,
    )
    .await;
    let parent = "tokyo.parent@example.com";
    app.set_preferences(
        parent,
        json!({"timezone": "Asia/Tokyo", "session_reports_enabled": false}),
    )
    .await;
    // Saturday 14 November in UTC, the service's zone; Sunday 15 November, 05:00 in Tokyo.
    app.clock.set_ms(ms("2026-11-14T20:00:00Z"));
    session(&app, parent, "Fractions", 20, 2, 1).await;

    let preview = app
        .get_admin(&format!(
            "/admin/email/preview/weekly_digest?email={parent}&week=2026-11-08"
        ))
        .await;
    assert_eq!(preview.status(), 200);
    let preview: Value = preview.json().await.unwrap();
    let text = preview["text"].as_str().unwrap();
    assert!(text.contains("\n  Sat   20 min #"), "{text}");

    // No zone has a digest job of its own.
    assert_error(
        run_job(&app, "weekly_digest@Asia%2FTokyo", json!({"dry_run": true})).await,
        404,
        "JOB_NOT_FOUND",
    )
    .await;
    let run = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-08"})).await;
    assert_eq!(run.status(), 202);
    let runs = wait_runs(&app, "weekly_digest", 1).await;
    assert_eq!(runs[0]["stats"]["queued"], 1, "{runs:?}");
    let received = smtp.wait_for(1).await;
    let sent = mailparse::parse_mail(&received[0].data).unwrap();
    assert_eq!(
        sent.subparts[0].get_body().unwrap().replace("\r\n", "\n"),
        text
    );
    let rows = crate::email::wait_ledger(&app, parent, "the digest sent", |rows| {
        rows.iter().any(|r| r["status"] == "sent")
    })
    .await;
    let digests: Vec<_> = rows
        .iter()
        .filter(|r| r["email_type"] == "weekly_digest")
        .map(|r| r["status"].as_str())
        .collect();
    assert_eq!(digests, [Some("sent")], "{rows:?}");
}

async fn two_simultaneous_triggers_run_once(backend: Backend) {
    let app = spawn_app_at(backend, |_| {}, AFTER_THE_WEEK).await;
    let (a, b) = tokio::join!(
        run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"})),
        run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"})),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409]);
    let runs = wait_runs(&app, "weekly_digest", 1).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
}

async fn after_three_missed_weeks_exactly_one_catch_up_runs(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let store = herald::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let schedule = herald_actors::scheduler::Schedule::parse("0 9 * * SUN", "UTC").unwrap();
    let latest = schedule.latest_at_or_before(now).unwrap();
    let three_weeks_ago = latest - 3 * 7 * 86_400_000;
    sqlx::query(
        "INSERT INTO job_runs (id, job, scheduled_for, status, started_at, finished_at) VALUES ('old', 'weekly_digest', $1, 'succeeded', $1, $1)",
    )
    .bind(three_weeks_ago)
    .execute(store.writer())
    .await
    .unwrap();
    store.close().await;

    let app = spawn_app_on(db, |_| {}).await;
    let runs = wait_runs(&app, "weekly_digest", 2).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        DateTime::parse_from_rfc3339(runs[0]["scheduled_for"].as_str().unwrap())
            .unwrap()
            .timestamp_millis(),
        latest,
        "the latest missed occurrence"
    );
    // Starting again catches up nothing more.
    let app = app.restart().await;
    app.wake_scheduler().await;
    assert_eq!(runs_len(&app).await, 2);
    let listed: Value = app.get_admin("/admin/jobs").await.json().await.unwrap();
    let digest = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "weekly_digest")
        .unwrap()
        .clone();
    assert_eq!(digest["schedule"], "0 9 * * SUN");
    assert_eq!(digest["timezone"], "UTC");
    assert!(digest["next_run"].as_str().unwrap() > runs[0]["scheduled_for"].as_str().unwrap());
    assert_eq!(digest["last_run"]["status"], "succeeded");
}

async fn runs_len(app: &TestApp) -> usize {
    app.job_runs("weekly_digest").await.len()
}

async fn a_failing_job_is_recorded_and_the_next_one_still_runs(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}, None).await;
    sqlx::query("DROP TABLE audit_log")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    assert_eq!(run_job(&app, "purge_old", json!({})).await.status(), 202);
    let failed = wait_runs(&app, "purge_old", 1).await;
    assert_eq!(failed[0]["status"], "failed");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("audit_log"),
        "{failed:?}"
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"job_runs_total{job="purge_old",outcome="failed"} "#)
    );

    app.clock.advance_ms(1);
    assert_eq!(
        run_job(&app, "weekly_digest", json!({})).await.status(),
        202
    );
    assert_eq!(
        wait_runs(&app, "weekly_digest", 1).await[0]["status"],
        "succeeded"
    );
}

/// A run that failed (its table away for a moment) is run again by herald once the cause is
/// gone: the same occurrence, one row, succeeded.
async fn a_failed_run_is_run_again_and_succeeds_once_its_cause_is_gone(backend: Backend) {
    let (app, failed) = purge_fails_with_its_table_away(backend).await;
    app.clock.advance_ms(1_000);
    rerun_succeeds(&app, &failed).await;
}

/// The ledger counts a failed run's attempts, so a process that starts after the one that
/// ran it (a restart, or the next replica of a rolling update) runs it again.
async fn a_failed_run_is_run_again_by_the_process_that_starts_next(backend: Backend) {
    let (app, failed) = purge_fails_with_its_table_away(backend).await;
    let app = app.restart().await;
    app.clock.advance_ms(1_000);
    rerun_succeeds(&app, &failed).await;
    // The shell shows the run went through on its second attempt.
    let list = run_ok(
        crate::helpers::herald()
            .env("DATABASE_URL", app.database_url())
            .env("LOG_LEVEL", "error")
            .args(["jobs", "list"]),
    );
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("purge_old")
            && l.contains("succeeded at")
            && l.contains("(attempt 2)")),
        "{text}"
    );
}

/// Runs `purge_old` with `audit_log` renamed away, so it fails; puts the table back, the
/// clock not moved, so its rerun (after `JOB_RETRY_SECONDS=1`) has not come yet (when the
/// turns come, `herald-actors`' `scheduler::watch` tests).
async fn purge_fails_with_its_table_away(backend: Backend) -> (TestApp, Value) {
    let app = spawn_app_with(
        backend,
        |vars| {
            vars.insert("JOB_RETRY_SECONDS".into(), "1".into());
        },
        None,
    )
    .await;
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    let writer = app.state.store.writer();
    sqlx::query(&rename("audit_log", "audit_log_away"))
        .execute(writer)
        .await
        .unwrap();
    assert_eq!(run_job(&app, "purge_old", json!({})).await.status(), 202);
    let failed = wait_runs(&app, "purge_old", 1).await;
    assert_eq!(failed[0]["status"], "failed");
    assert_eq!(failed[0]["attempts"], 1);
    sqlx::query(&rename("audit_log_away", "audit_log"))
        .execute(writer)
        .await
        .unwrap();
    (app, failed[0].clone())
}

/// The failed occurrence `failed` is run again and succeeds: one row, its second attempt.
async fn rerun_succeeds(app: &TestApp, failed: &Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let runs = app.job_runs("purge_old").await;
        if runs[0]["status"] == "succeeded" {
            break runs;
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["scheduled_for"], failed["scheduled_for"]);
    assert_eq!(runs[0]["attempts"], 2, "{runs:?}");
    assert!(runs[0]["error"].is_null(), "{runs:?}");
    // Which replica ran it, by its name.
    let instance = format!("{}/", app.state.config.server.instance);
    assert!(
        runs[0]["run_by"]
            .as_str()
            .is_some_and(|by| by.starts_with(&instance)),
        "{runs:?}"
    );
}

/// An old week run by hand on a fresh install does not make herald start the occurrence
/// the install began after (a fresh install waits for its first one), also after a restart;
/// that first one runs as ever.
async fn an_old_week_run_by_hand_on_a_fresh_install_starts_no_skipped_occurrence(backend: Backend) {
    // Wednesday 18 November 2026, 12:00 UTC: installed after Sunday's 09:00.
    let app = spawn_app_at(backend, |_| {}, 1_795_003_200_000).await;
    let old_week = json!({"start_date": "2026-11-02"});
    assert_eq!(run_job(&app, "weekly_digest", old_week).await.status(), 202);
    wait_runs(&app, "weekly_digest", 1).await;
    app.wake_scheduler().await;
    let app = app.restart().await;
    app.wake_scheduler().await;
    let runs = app.job_runs("weekly_digest").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    // Sunday 22 November, 09:00.
    let first = 1_795_338_000_000;
    app.clock.set_ms(first as u64 + 1_000);
    app.wake_scheduler().await;
    let runs = wait_runs(&app, "weekly_digest", 2).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let scheduled = DateTime::parse_from_rfc3339(runs[0]["scheduled_for"].as_str().unwrap());
    assert_eq!(scheduled.unwrap().timestamp_millis(), first);
}

/// A week whose digest failed and was left for an operator (its reruns spent) is run again
/// by hand, as RUNBOOK's *A job failed* says, from the API and from the shell: the same
/// occurrence, one attempt more. One that succeeded is not.
async fn a_failed_occurrence_left_for_an_operator_is_run_again_by_hand(backend: Backend) {
    let app = after_the_week_without_catch_up(backend).await;
    let now = app.clock.now_ms_i64();
    for (id, date, status) in [
        ("given-up", "2026-11-09", "failed"),
        ("done", "2026-11-02", "succeeded"),
    ] {
        sqlx::query(
            "INSERT INTO job_runs (id, job, scheduled_for, status, started_at, finished_at, attempts, owner) \
             VALUES ($1, 'weekly_digest', $2, $3, $4, $4, 6, 'gone')",
        )
        .bind(id)
        .bind(digest_occurrence(date))
        .bind(status)
        .bind(now - 3_600_000)
        .execute(app.state.store.writer())
        .await
        .unwrap();
    }
    let again = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"})).await;
    assert_eq!(again.status(), 202, "{:?}", again.text().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rerun = loop {
        let runs = app.job_runs("weekly_digest").await;
        let rerun = runs
            .iter()
            .find(|r| r["id"] != "given-up" && r["id"] != "done")
            .cloned();
        if let Some(rerun) = rerun.filter(|r| r["status"] == "succeeded") {
            break rerun;
        }
        assert!(tokio::time::Instant::now() < deadline, "{runs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(rerun["attempts"], 7, "{rerun:?}");
    assert_eq!(app.job_runs("weekly_digest").await.len(), 2);
    let done = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-02"})).await;
    assert_error(done, 409, "ALREADY_RAN").await;
}

/// An app on a clock after the week of 9 November that catches no occurrence up as it
/// starts: a caught-up digest running when a test's request arrives would answer it
/// JOB_RUNNING, whatever the ledger holds.
async fn after_the_week_without_catch_up(backend: Backend) -> TestApp {
    spawn_app_at(
        backend,
        |vars| {
            vars.insert("MISSED_RUN_POLICY".into(), "skip".into());
        },
        AFTER_THE_WEEK,
    )
    .await
}

/// The digest occurrence (UTC) that reports the week starting on `week`.
fn digest_occurrence(week: &str) -> i64 {
    let week = NaiveDate::parse_from_str(week, "%Y-%m-%d").unwrap();
    herald::jobs::digest::day_start_ms(week + chrono::Duration::days(7), chrono_tz::UTC)
}

async fn a_run_left_running_by_a_dead_process_is_taken_over(backend: Backend) {
    let app = after_the_week_without_catch_up(backend).await;
    let occurrence = digest_occurrence("2026-11-09");
    let now = app.clock.now_ms_i64();
    for (id, lease) in [("dead", now - 1_000), ("alive", now + 600_000)] {
        let at = if id == "dead" {
            occurrence
        } else {
            occurrence + 7 * 86_400_000
        };
        sqlx::query(
            "INSERT INTO job_runs (id, job, scheduled_for, status, started_at, lease_until, owner) VALUES ($1, 'weekly_digest', $2, 'running', $3, $4, 'gone')",
        )
        .bind(id)
        .bind(at)
        .bind(now - 60_000)
        .bind(lease)
        .execute(app.state.store.writer())
        .await
        .unwrap();
    }
    let taken = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-09"})).await;
    assert_eq!(taken.status(), 202, "an expired lease is not a live run");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !app
        .job_runs("weekly_digest")
        .await
        .iter()
        .any(|r| r["status"] == "succeeded")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the taken-over run never finished"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let live = run_job(&app, "weekly_digest", json!({"start_date": "2026-11-16"})).await;
    assert_error(live, 409, "JOB_RUNNING").await;
}

/// Parents who turned digests off and asked to be forgotten: when a backend names the
/// address again, under other capitals, their week is still not mailed to them, nor under a
/// spelling herald kept apart before the erasure; a dry run and a real run agree, in what
/// they count as in what they send.
async fn an_erased_parents_digest_opt_out_holds_when_the_address_comes_back(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(backend, mail_vars(&smtp), None).await;
    seed(&app).await;
    // Cy is known under a second spelling too, whose report was sent.
    let kept_apart = "CY.PARENT@example.com";
    app.clock.set_ms(ms("2026-11-12T18:00:00Z"));
    session(&app, "cy.parent@example.com", "Reading", 10, 1, 1).await;
    session(&app, kept_apart, "Reading", 10, 1, 1).await;
    session(&app, "di.parent@example.com", "Reading", 10, 1, 1).await;
    for parent in ["cy.parent@example.com", "di.parent@example.com"] {
        let off = app
            .put_preferences(parent, &json!({"weekly_digest_enabled": false}))
            .await;
        assert_eq!(off.status(), 200);
    }
    sqlx::query("UPDATE email_preferences SET weekly_digest_enabled = 0 WHERE email = 'bo.parent@example.com'")
        .execute(app.state.store.writer())
        .await
        .unwrap();
    for erased in [
        "bo.parent@example.com",
        "cy.parent@example.com",
        "di.parent@example.com",
    ] {
        let erased: Value = app
            .delete_admin(&format!("/admin/recipients/{erased}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(erased["opt_outs_kept"]["weekly_digest"], true, "{erased}");
        assert_eq!(erased["erased"]["sessions"], 1, "{erased}");
    }
    // The spelling kept apart now carries the opt-out, recorded as the erasure's.
    let record = app
        .admin_json(&format!("/admin/recipients/{kept_apart}"))
        .await;
    let changes = record["preference_changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["source"] == "erasure"
            && c["field"] == "weekly_digest_enabled"
            && c["new_value"] == "false"),
        "{record}"
    );
    // Bo comes back through a session, Di through the preferences API first.
    let (returned, set_first) = ("Bo.Parent@example.com", "Di.Parent@example.com");
    let zone = app
        .put_preferences(set_first, &json!({"timezone": "UTC"}))
        .await;
    assert_eq!(zone.status(), 200);
    session(&app, returned, "Reading", 20, 1, 0).await;
    session(&app, set_first, "Reading", 5, 1, 1).await;
    app.clock.set_ms(AFTER_THE_WEEK);

    let week = json!({"start_date": "2026-11-09"});
    let mut dry = week.clone();
    dry["dry_run"] = json!(true);
    let report: Value = run_job(&app, "weekly_digest", dry)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["recipients_with_activity"], 4, "{report}");
    assert_eq!(report["queued"], 1, "{report}");
    assert_eq!(report["unsubscribed"], 3, "{report}");
    assert_eq!(run_job(&app, "weekly_digest", week).await.status(), 202);
    // The real run counts them as the dry run did.
    let runs = wait_runs(&app, "weekly_digest", 1).await;
    let stats = &runs[0]["stats"];
    for field in ["recipients_with_activity", "queued", "unsubscribed"] {
        assert_eq!(stats[field], report[field], "{field}: {runs:?}");
    }
    let digest = |rows: &[Value]| {
        rows.iter()
            .find(|row| {
                row["email_type"] == "weekly_digest"
                    && !["pending", "sending"].contains(&row["status"].as_str().unwrap())
            })
            .cloned()
    };
    for spelling in [returned, set_first, kept_apart, "ada.parent@example.com"] {
        let rows =
            crate::email::wait_ledger(&app, spelling, "the digest", |rows| digest(rows).is_some())
                .await;
        let wanted = if spelling.starts_with("ada") {
            "sent"
        } else {
            "suppressed"
        };
        assert_eq!(
            digest(&rows).unwrap()["status"],
            wanted,
            "{spelling}: {rows:?}"
        );
    }
}

on_both_backends!(
    the_weekly_digest_aggregates_the_week_and_sends_through_the_outbox,
    a_dry_run_reports_and_changes_no_table,
    an_erased_parents_digest_opt_out_holds_when_the_address_comes_back,
    an_email_preview_renders_without_writing_or_sending,
    a_digest_preview_counts_the_days_of_the_recipients_own_zone_like_the_sent_digest,
    with_global_delivery_a_digest_reports_the_services_week_whatever_the_recipients_zone,
    two_simultaneous_triggers_run_once,
    after_three_missed_weeks_exactly_one_catch_up_runs,
    a_failing_job_is_recorded_and_the_next_one_still_runs,
    a_failed_run_is_run_again_and_succeeds_once_its_cause_is_gone,
    a_failed_run_is_run_again_by_the_process_that_starts_next,
    an_old_week_run_by_hand_on_a_fresh_install_starts_no_skipped_occurrence,
    a_run_left_running_by_a_dead_process_is_taken_over,
    a_failed_occurrence_left_for_an_operator_is_run_again_by_hand,
);

#[test]
fn the_cli_lists_runs_and_dry_runs_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let herald = || {
        let mut command = crate::helpers::herald();
        command.env("DATABASE_URL", &url).env("LOG_LEVEL", "error");
        command
    };
    run_ok(herald().arg("migrate"));
    // The command keeps time by the machine's clock.
    let weeks_ago =
        |weeks: i64| (chrono::Utc::now().date_naive() - chrono::Duration::weeks(weeks)).to_string();
    let dry = run_ok(herald().args(["digest", "--dry-run", "--start-date", &weeks_ago(4)]));
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        (report["dry_run"].as_bool(), report["week_start"].as_str()),
        (Some(true), Some(weeks_ago(4).as_str()))
    );
    // A week older than the send log keeps is refused, dry run or not.
    for args in [
        &["digest", "--start-date", &weeks_ago(30)][..],
        &["digest", "--dry-run", "--start-date", &weeks_ago(30)][..],
    ] {
        let old = herald()
            .args(args)
            .env("RETENTION_SEND_LOG_DAYS", "180")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&old.stderr);
        assert_eq!(old.status.code(), Some(2), "{said}");
        assert!(said.contains("RETENTION_SEND_LOG_DAYS=180"), "{said}");
    }

    let run = run_ok(
        herald()
            .args(["jobs", "run", "purge_old"])
            .env("HERALD_INSTANCE", "ops-box"),
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("purge_old succeeded"));

    // A week's digest runs once by hand; once its run has failed, it runs again.
    let week = ["digest", "--start-date", &weeks_ago(4)];
    run_ok(herald().args(week));
    assert_eq!(herald().args(week).output().unwrap().status.code(), Some(3));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "UPDATE job_runs SET status = 'failed', attempts = 6 WHERE job = 'weekly_digest'",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let again = run_ok(herald().args(week));
    assert!(String::from_utf8_lossy(&again.stdout).contains("weekly_digest succeeded"));
    let list = run_ok(herald().args(["jobs", "list"]));
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("weekly_digest ") && l.contains("(attempt 7)")),
        "{text}"
    );

    let list = herald().args(["jobs", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("weekly_digest") && text.contains("0 9 * * SUN"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("purge_old") && l.contains("succeeded")),
        "{text}"
    );
    // Which shell ran it, by its instance's name.
    assert!(
        text.lines()
            .any(|l| l.starts_with("purge_old") && l.contains(" by cli@ops-box")),
        "{text}"
    );
    // The audit log has each run by hand (the week's twice: it ran, failed, ran again), and
    // not the refused one.
    let audit = run_ok(herald().args(["audit", "--action", "job.run"]));
    let text = String::from_utf8_lossy(&audit.stdout);
    let week_runs = format!("weekly_digest week {}", weeks_ago(4));
    assert_eq!(
        text.lines().filter(|l| l.contains(&week_runs)).count(),
        2,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("cli@ops-box") && l.contains("purge_old run ")),
        "{text}"
    );
    assert!(text.contains("3 of 3 shown"), "{text}");

    let unknown = herald()
        .args(["jobs", "run", "nightly_backup"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let bad_date = herald()
        .args(["digest", "--dry-run", "--start-date", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(bad_date.status.code(), Some(2));

    // With a recipient in Tokyo, the list shows Tokyo's digest job and whom it covers.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO email_preferences (email, recipient_key, timezone, created_at, updated_at) \
             VALUES ('tokyo@example.com', '0123456789abcdef0123456789abcdef', 'Asia/Tokyo', 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let list = run_ok(herald().args(["jobs", "list"]));
    let text = String::from_utf8_lossy(&list.stdout);
    let tokyo = text
        .lines()
        .find(|l| l.starts_with("weekly_digest@Asia/Tokyo "))
        .unwrap_or_else(|| panic!("no Tokyo job in {text}"));
    let cells: Vec<&str> = tokyo.split_whitespace().collect();
    assert_eq!(
        cells[1..7],
        ["0", "9", "*", "*", "SUN", "Asia/Tokyo"],
        "{tokyo}"
    );
    assert_eq!(cells[8..], ["1", "never"], "{tokyo}");

    // One zone's dry run; the report lists every zone's next digest.
    let zone = run_ok(herald().args(["digest", "--dry-run", "--zone", "Asia/Tokyo"]));
    let report: Value = serde_json::from_slice(&zone.stdout).unwrap();
    // Soonest first: which of the two that is depends on the hour the test runs.
    let mut upcoming: Vec<(&str, i64)> = report["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["job"].as_str().unwrap(),
                u["recipients"].as_i64().unwrap(),
            )
        })
        .collect();
    upcoming.sort_unstable();
    assert_eq!(
        upcoming,
        [("weekly_digest", 0), ("weekly_digest@Asia/Tokyo", 1)],
        "{report}"
    );
    assert_eq!(report["skipped_no_activity"], 1, "{report}");
    let bad_zone = herald()
        .args(["digest", "--dry-run", "--zone", "Mars/Olympus_Mons"])
        .output()
        .unwrap();
    assert_eq!(bad_zone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_zone.stderr).contains("--zone"));
    // With global delivery a zone has no digest of its own to run.
    let global_zone = herald()
        .args(["digest", "--zone", "Asia/Tokyo"])
        .env("DIGEST_DELIVERY", "global")
        .output()
        .unwrap();
    assert_eq!(global_zone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&global_zone.stderr).contains("DIGEST_DELIVERY=local"));
}
