//! The email pipeline end to end: `/complete` in, a real SMTP conversation out.

use std::collections::HashMap;
use std::time::Duration;

use herald_actors::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, assert_error, spawn_app_with};
use crate::on_both_backends;
use crate::smtp::{SmtpServer, TlsMode};

const PARENT: &str = "parent@example.com";

fn mail_config(smtp: &SmtpServer) -> impl FnOnce(&mut HashMap<String, String>) + '_ {
    move |vars| {
        smtp.configure(vars);
        for (k, v) in [
            ("SMTP_TIMEOUT_SECONDS", "3".to_owned()),
            ("EMAIL_RETRY_BASE_MS", "2000".to_owned()),
            ("EMAIL_BREAKER_COOLDOWN_MS", "1000".to_owned()),
            ("API_BASE_URL", "https://herald.example.org".to_owned()),
            ("EMAIL_FROM", "reports@herald.example.org".to_owned()),
        ] {
            vars.insert(k.to_owned(), v);
        }
    }
}

async fn spawn_mail_app(backend: Backend, smtp: &SmtpServer) -> TestApp {
    spawn_mail_app_with(backend, smtp, &[]).await
}

/// The mail configuration with `extra` variables on top.
pub(crate) async fn spawn_mail_app_with(
    backend: Backend,
    smtp: &SmtpServer,
    extra: &[(&str, &str)],
) -> TestApp {
    let config = mail_config(smtp);
    let configure = |vars: &mut HashMap<String, String>| {
        config(vars);
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
    };
    spawn_app_with(backend, configure, None).await
}

/// Starts, records a few events in, and completes a session for `parent`.
pub(crate) async fn complete_for(app: &TestApp, parent: &str) -> (String, reqwest::Response) {
    let session = app
        .new_session(json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": parent}))
        .await;
    for event in [
        json!({"kind": "step"}),
        json!({"kind": "hint"}),
        json!({"kind": "answer", "correct": true}),
    ] {
        app.add_event(&session.id, Some(&session.token), event)
            .await;
    }
    app.clock.advance_ms(90_000);
    let response = app.complete(&session.id, Some(&session.token), None).await;
    (session.id, response)
}

async fn report_email(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["report_email"].as_str().unwrap().to_owned()
}

pub(crate) async fn ledger(app: &TestApp, email: &str) -> Vec<Value> {
    let response = app
        .get_admin(&format!("/admin/email/logs?email={email}"))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["entries"].as_array().unwrap().clone()
}

/// Polls the ledger until `check` holds (10 s at most).
pub(crate) async fn wait_ledger(
    app: &TestApp,
    email: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = ledger(app, email).await;
        if check(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `/metrics` until it shows `line` (10 s at most).
async fn wait_metrics(app: &TestApp, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !app.metrics().await.contains(line) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics never showed {line}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn statuses(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["status"].as_str().unwrap()).collect()
}

fn part_of<'a>(
    mail: &'a mailparse::ParsedMail<'a>,
    mime: &str,
) -> Option<&'a mailparse::ParsedMail<'a>> {
    if mail.ctype.mimetype == mime {
        return Some(mail);
    }
    mail.subparts.iter().find_map(|p| part_of(p, mime))
}

async fn a_completed_session_sends_one_report_with_text_html_pdf_and_unsubscribe_headers(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    let (session_id, response) = complete_for(&app, "Parent@Example.COM").await;
    assert_eq!(report_email(response).await, "queued");

    let received = smtp.wait_for(1).await;
    assert_eq!(received[0].rcpt_to, vec!["Parent@example.com".to_owned()]);
    let mail = mailparse::parse_mail(&received[0].data).unwrap();
    let header = |name: &str| {
        mail.headers
            .iter()
            .find(|h| h.get_key().eq_ignore_ascii_case(name))
            .map(|h| h.get_value())
    };
    assert_eq!(
        header("Subject").unwrap(),
        "Ada's session report: Fractions"
    );
    assert!(
        header("From")
            .unwrap()
            .contains("reports@herald.example.org")
    );
    let message_id = header("Message-ID").unwrap();
    assert!(message_id.ends_with("@herald.example.org>"), "{message_id}");
    // Long header values are folded; whitespace inside the brackets is not part of the URL.
    let unsubscribe: String = header("List-Unsubscribe")
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        unsubscribe.starts_with("<https://herald.example.org/api/v1/email/unsubscribe/v1."),
        "{unsubscribe}"
    );
    assert!(
        unsubscribe.ends_with("?type=session_reports>"),
        "{unsubscribe}"
    );
    assert_eq!(
        header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    // A reply goes to the sender unless EMAIL_REPLY_TO names another address.
    assert_eq!(header("Reply-To"), None);
    // No feedback-loop identifier unless EMAIL_FEEDBACK_ID gives the sender's.
    assert_eq!(header("Feedback-ID"), None);
    // Written by a machine, so vacation responders (RFC 3834) and Exchange do not answer it.
    assert_eq!(header("Auto-Submitted").unwrap(), "auto-generated");
    assert_eq!(
        header("X-Auto-Response-Suppress").unwrap(),
        "OOF, AutoReply"
    );
    assert!(
        !unsubscribe.contains("example.com"),
        "the link does not reveal the address"
    );

    let text = part_of(&mail, "text/plain")
        .expect("plain part")
        .get_body()
        .unwrap();
    assert!(
        text.contains("Answers correct: 1 of 1") && text.contains("Hints used: 1"),
        "{text}"
    );
    let html = part_of(&mail, "text/html")
        .expect("html part")
        .get_body()
        .unwrap();
    assert!(
        html.contains("<strong>1 of 1</strong>") && html.contains("Unsubscribe"),
        "{html}"
    );
    let pdf = part_of(&mail, "application/pdf")
        .expect("pdf attachment")
        .get_body_raw()
        .unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    if std::process::Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attached.pdf");
        std::fs::write(&path, &pdf).unwrap();
        let out = std::process::Command::new("pdftotext")
            .arg(&path)
            .arg("-")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("Learning session report") && text.contains(&session_id),
            "{text}"
        );
    }

    // The domain is stored lower-cased; the local part as given.
    let rows = wait_ledger(&app, "Parent@example.com", "sent", |rows| {
        statuses(rows) == ["sent"]
    })
    .await;
    assert_eq!(rows[0]["message_id"].as_str().unwrap(), message_id);
    assert_eq!(rows[0]["attempts"], 1);
    assert!(rows[0]["sent_at_ms"].is_i64());
    // Which replica sent it, by its name.
    assert_eq!(
        rows[0]["claimed_by"].as_str(),
        Some(app.state.config.server.instance.as_str())
    );
    assert!(
        app.metrics()
            .await
            .contains(r#"email_sends_total{type="session_reports",outcome="sent"}"#)
    );
}

async fn fifty_concurrent_identical_completes_send_one_email(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    let session = app.new_session(json!({"parent_email": PARENT})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/v1/sessions/{}/complete", session.id)),
            session.token.clone(),
        );
        tasks.spawn(async move {
            let response = client
                .post(url)
                .header("X-Session-Access-Token", token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["report_email"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "queued").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 49);
    // Duplicates that arrive while the first row commits are counted once it exists.
    let rows = wait_ledger(&app, PARENT, "sent, with every duplicate counted", |rows| {
        statuses(rows) == ["sent"] && rows[0]["duplicates"] == 49
    })
    .await;
    assert_eq!(
        rows[0]["duplicates"], 49,
        "the ledger says why the others sent nothing"
    );
    assert_eq!(smtp.received().len(), 1);
}

async fn the_sixth_report_in_a_day_is_throttled_and_goes_out_when_retried_later(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(app.new_session(json!({"parent_email": PARENT})).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for session in &sessions {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/api/v1/sessions/{}/complete", session.id)),
            session.token.clone(),
        );
        let id = session.id.clone();
        tasks.spawn(async move {
            (
                id,
                client
                    .post(url)
                    .header("X-Session-Access-Token", token)
                    .send()
                    .await
                    .unwrap(),
            )
        });
    }
    let (mut queued, mut throttled) = (0, Vec::new());
    while let Some(result) = tasks.join_next().await {
        let (id, response) = result.unwrap();
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "86400");
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body,
                json!({
                    "error": "RATE_LIMIT_EXCEEDED",
                    "message": "Too many session reports sent. Please try again later.",
                    "retry_after": 86400,
                    "limit": 5,
                    "window": "24 hours"
                })
            );
            throttled.push(id);
        } else {
            assert_eq!(report_email(response).await, "queued");
            queued += 1;
        }
    }
    assert_eq!((queued, throttled.len()), (5, 1));
    smtp.wait_for(5).await;

    let state: Value = app
        .get_admin(&format!("/admin/throttles/{PARENT}"))
        .await
        .json()
        .await
        .unwrap();
    let reports = &state["throttles"][0];
    assert_eq!(
        (
            reports["type"].as_str(),
            reports["used"].as_u64(),
            reports["remaining"].as_u64()
        ),
        (Some("session_reports"), Some(5), Some(0))
    );
    assert_eq!(reports["slots"].as_array().unwrap().len(), 5);

    let throttled_session = sessions.iter().find(|s| s.id == throttled[0]).unwrap();
    app.clock.advance_ms(86_400_000);
    let retried = app
        .complete(&throttled_session.id, Some(&throttled_session.token), None)
        .await;
    assert_eq!(report_email(retried).await, "queued");
    smtp.wait_for(6).await;
}

async fn a_recipient_who_unsubscribed_is_suppressed_and_the_link_works_like_a_person_expects(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    assert_eq!(
        report_email(complete_for(&app, PARENT).await.1).await,
        "queued"
    );
    let link = smtp.wait_for(1).await.remove(0).unsubscribe_url();
    let path = link
        .strip_prefix("https://herald.example.org")
        .unwrap()
        .to_owned();

    // A link scanner's GET changes nothing.
    let page = app.get(&path).await;
    assert_eq!(page.status(), 200, "{link} -> {path}");
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\"") && html.contains("session report emails"),
        "{html}"
    );
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, PARENT)
            .await
            .unwrap(),
        Some((true, true))
    );

    // RFC 8058 one-click POST applies it.
    let applied = app
        .client
        .post(app.url(&path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200);
    let done = applied.text().await.unwrap();
    assert!(done.contains("You are unsubscribed"));
    // The page offers the way back: the preference page of the same link.
    let token = path
        .trim_start_matches("/api/v1/email/unsubscribe/")
        .split('?')
        .next()
        .unwrap();
    // Relative to the page, so it holds behind a proxy that serves herald under a path.
    assert!(
        done.contains(&format!("href=\"../preferences/page/{token}\"")),
        "{done}"
    );
    let back = format!("/api/v1/email/preferences/page/{token}");
    assert_eq!(app.get(&back).await.status(), 200);
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, PARENT)
            .await
            .unwrap(),
        Some((true, false))
    );

    // Used again: the same page, nothing changes.
    let again = app
        .client
        .post(app.url(&path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(again, done);
    // A genuine link whose recipient herald no longer has (erased on request) is expired,
    // on its question and its answer alike, and says so: not "unsubscribed", which herald
    // would not have recorded.
    let stranger = herald::email::Signer::new(
        (1, herald::secret::Secret::new("test-signing-secret")),
        vec![],
    )
    .token("00000000000000000000000000000000");
    let unknown = app.unsubscribe(&stranger, "session_reports").await;
    assert_eq!(unknown.status(), 403);
    let said = unknown.text().await.unwrap();
    assert!(
        said.contains("expired") && !said.contains("no longer receive"),
        "{said}"
    );
    let question = app
        .get(&format!(
            "/api/v1/email/unsubscribe/{stranger}?type=session_reports"
        ))
        .await;
    assert_eq!(question.status(), 403);
    // A tampered token is refused with a clear page.
    let tampered = path.replacen("/v1.", "/v1.f", 1);
    let refused = app.get(&tampered).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("not valid"));
    // One of the right shape whose signature does not hold is forbidden.
    let (token_path, query) = path.split_once('?').unwrap_or((&path, ""));
    let flipped = if token_path.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flipped}?{query}", &token_path[..token_path.len() - 1]);
    let forbidden = app.get(&forged).await;
    assert_eq!(forbidden.status(), 403);
    assert!(forbidden.text().await.unwrap().contains("not valid"));

    let (_, response) = complete_for(&app, PARENT).await;
    assert_eq!(report_email(response).await, "suppressed");
    let rows = ledger(&app, PARENT).await;
    assert_eq!(rows[0]["status"], "suppressed");
    assert!(
        rows[0]["reason"]
            .as_str()
            .unwrap()
            .contains("session_reports disabled")
    );
    assert_eq!(smtp.received().len(), 1);
}

/// `parent`'s report fails its first attempt, counted, saying `said`, and goes out at its
/// retry, the second attempt.
async fn retried_once_then_sent(app: &TestApp, smtp: &SmtpServer, parent: &str, said: &str) {
    let received = smtp.received().len();
    complete_for(app, parent).await;
    let rows = wait_ledger(app, parent, "a retry", |rows| {
        rows[0]["attempts"] == 1 && rows[0]["status"] == "pending"
    })
    .await;
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains(said),
        "{rows:?}"
    );
    assert_eq!(smtp.received().len(), received);
    app.clock.advance_ms(2_000);
    let rows = wait_ledger(app, parent, "sent after retry", |rows| {
        rows[0]["status"] == "sent"
    })
    .await;
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(smtp.received().len(), received + 1);
}

async fn transient_failures_are_retried_and_permanent_ones_fail_once(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.script(&[451]);
    let app = spawn_mail_app(backend, &smtp).await;
    retried_once_then_sent(&app, &smtp, PARENT, "451").await;
    // A connection closed at the end of the message's DATA, with no answer (a server, or a
    // filter in front of it, failing on that message), counts as an attempt too: a message
    // that fails so each time ends after its attempts, instead of being tried for ever,
    // uncounted, as if the server were out of reach.
    smtp.drop_at_end_of_data(1);
    let dropped = "dropped.parent@example.com";
    retried_once_then_sent(&app, &smtp, dropped, "lost after the message was sent").await;

    smtp.script(&[550]);
    let other = "other.parent@example.com";
    complete_for(&app, other).await;
    let rows = wait_ledger(&app, other, "failed", |rows| rows[0]["status"] == "failed").await;
    assert_eq!(rows[0]["attempts"], 1);
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("550"),
        "{rows:?}"
    );
    app.clock.advance_ms(3_600_000);
    // Another email queued after the hour has passed goes out through the same claims,
    // which take due rows oldest first: once it is sent, a retry of the failed one would
    // have gone before it.
    let third = "third.parent@example.com";
    complete_for(&app, third).await;
    wait_ledger(&app, third, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!(
        smtp.received().len(),
        3,
        "a permanent failure is not retried"
    );
    let rows = ledger(&app, other).await;
    assert_eq!(
        (rows[0]["status"].as_str(), rows[0]["attempts"].as_i64()),
        (Some("failed"), Some(1))
    );
}

/// The backend reads what became of a session's report email from the session's summary,
/// with its own key: waiting after a failed attempt, sent, not sent and why, or none.
async fn the_report_summary_says_where_the_report_email_stands(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.script(&[451]);
    let app = spawn_mail_app(backend, &smtp).await;
    let report_email = |id: String| {
        let app = &app;
        async move {
            let response = app.report_summary(&id).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert!(
                body["events_total"].is_number(),
                "the summary is there: {body}"
            );
            body["report_email"].clone()
        }
    };
    let open = app
        .new_session(json!({"learner_name": "Ada", "parent_email": PARENT}))
        .await;
    assert_eq!(report_email(open.id).await, Value::Null, "not completed");

    let (id, _) = complete_for(&app, PARENT).await;
    wait_ledger(&app, PARENT, "a retry", |rows| rows[0]["attempts"] == 1).await;
    let waiting = report_email(id.clone()).await;
    assert_eq!(waiting["status"], "pending", "{waiting}");
    assert_eq!(waiting["attempts"], 1);
    assert!(waiting["next_attempt_at"].is_string(), "{waiting}");
    assert_eq!(waiting["sent_at"], Value::Null);
    app.clock.advance_ms(2_000);
    wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    let sent = report_email(id).await;
    assert_eq!(
        (&sent["status"], &sent["attempts"]),
        (&json!("sent"), &json!(2))
    );
    assert!(sent["sent_at"].is_string(), "{sent}");
    assert!(
        sent.get("last_error").is_none() && sent.get("email").is_none(),
        "neither the server's words nor the address: {sent}"
    );

    let other = "other.parent@example.com";
    app.set_preferences(other, json!({"session_reports_enabled": false}))
        .await;
    let (id, _) = complete_for(&app, other).await;
    let suppressed = report_email(id).await;
    assert_eq!(suppressed["status"], "suppressed", "{suppressed}");
    assert!(
        suppressed["reason"]
            .as_str()
            .unwrap()
            .contains("session_reports disabled"),
        "{suppressed}"
    );

    let nobody = app.new_session(json!({"learner_name": "Bo"})).await;
    assert_eq!(
        app.complete(&nobody.id, Some(&nobody.token), None)
            .await
            .status(),
        200
    );
    assert_eq!(report_email(nobody.id).await, Value::Null, "no parent");
}

/// A deployment writing to parents in several languages: a parent whose language is Polish
/// gets their report, its PDF and the pages their links open in Polish, another parent the
/// deployment's own words; the language is kept with the parent's preferences.
async fn a_parent_reads_their_emails_and_pages_in_their_own_language(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pl = dir.path().join("pl");
    std::fs::create_dir(&pl).unwrap();
    for (name, text) in [
        ("session_report.subject.txt", "Raport: {{ learner }}"),
        (
            "session_report.txt",
            "{{ learner }}: {{ answers_correct }} z {{ answers_total }}\n{{ unsubscribe_url }}\n",
        ),
        (
            "session_report.pdf.json",
            r#"{"title": "Raport z sesji nauki"}"#,
        ),
        (
            "link_page.html",
            "<p>{% if page == 'unsubscribe_confirm' %}Wypisać?{% else %}{{ page }}{% endif %}</p>",
        ),
    ] {
        std::fs::write(pl.join(name), text).unwrap();
    }
    let templates = dir.path().to_str().unwrap();
    let app = spawn_mail_app_with(backend, &smtp, &[("EMAIL_TEMPLATES_DIR", templates)]).await;
    let polish_parent = "rodzic@example.com";
    let polish = app
        .new_session(json!({"learner_name": "Ada", "parent_email": polish_parent,
                            "parent_locale": "PL-pl"}))
        .await;
    app.add_step_and_two_answers(&polish).await;
    let done = app.complete(&polish.id, Some(&polish.token), None).await;
    assert_eq!(report_email(done).await, "queued");
    complete_for(&app, PARENT).await;
    let received = smtp.wait_for(2).await;
    let message = |to: &str| {
        let found = received
            .iter()
            .find(|m| m.rcpt_to == [to.to_owned()])
            .unwrap_or_else(|| panic!("no message to {to}"));
        let mail = mailparse::parse_mail(&found.data).unwrap();
        let subject = mail
            .headers
            .iter()
            .find(|h| h.get_key() == "Subject")
            .unwrap()
            .get_value();
        let text = part_of(&mail, "text/plain").unwrap().get_body().unwrap();
        (subject, text, found.unsubscribe_url())
    };
    let (subject, text, link) = message(polish_parent);
    assert_eq!(subject, "Raport: Ada");
    assert!(text.starts_with("Ada: 1 z 2"), "{text}");
    let (subject, _, _) = message(PARENT);
    assert_eq!(
        subject, "Ada's session report: Fractions",
        "the deployment's own"
    );

    let kept = app
        .admin_json(&format!("/api/v1/email/preferences/{polish_parent}"))
        .await;
    assert_eq!(kept["locale"], "pl-PL", "{kept}");
    // The region falls back to the language's directory: the PDF and the pages are Polish.
    let pdf = app.report_pdf(&polish.id, Some(&polish.token)).await;
    let bytes = pdf.bytes().await.unwrap();
    if let Some((text, _)) = crate::sessions::read_pdf(&bytes) {
        assert!(text.contains("Raport z sesji nauki"), "{text}");
    }
    let path = &link[link.find("/api/").unwrap()..];
    let asked = app.get(path).await.text().await.unwrap();
    assert!(asked.contains("Wypisać?"), "{asked}");
    let done = app.client.post(app.url(path)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let done = done.text().await.unwrap();
    assert!(
        done.contains("<p>unsubscribed</p>"),
        "the answer in Polish too: {done}"
    );

    let refused = app
        .put_preferences(polish_parent, &json!({"locale": "polish!"}))
        .await;
    let refused = assert_error(refused, 400, "VALIDATION_ERROR").await;
    assert_eq!(refused["field"], "locale");
    let changed = app
        .put_preferences(polish_parent, &json!({"locale": "en"}))
        .await;
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["locale"], "en");
    let asked = app.get(path).await.text().await.unwrap();
    assert!(
        asked.contains("Stop receiving"),
        "the deployment's own now: {asked}"
    );

    // A translation seen with real data: the other parent's report, previewed in Polish
    // (the parent's own language is left as it is), and in a language without templates.
    let english = app
        .admin_json(&format!("/admin/email/logs?email={PARENT}"))
        .await["entries"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let preview = |locale: &str| {
        let path =
            format!("/admin/email/preview/session_reports?session_id={english}&locale={locale}");
        let app = &app;
        async move { app.admin_json(&path).await }
    };
    let polish_preview = preview("pl").await;
    assert_eq!(polish_preview["subject"], "Raport: Ada", "{polish_preview}");
    assert_eq!(polish_preview["locale"], "pl");
    let german = preview("de").await;
    assert_eq!(german["subject"], "Ada's session report: Fractions");
    assert_eq!(german["locale"], Value::Null);
    let shown = crate::cli::ops_shell(&app.database_url())
        .env("EMAIL_TEMPLATES_DIR", templates)
        .args(["email", "preview", "report", "--session-id", &english])
        .args(["--locale", "pl"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && stdout.contains("Raport: Ada"),
        "{stdout}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
}

async fn retry_email(app: &TestApp, id: &str) -> reqwest::Response {
    app.post_admin(&format!("/admin/email/logs/{id}/retry"), None)
        .await
}

/// An operator sends a failed email again: it goes out once, keeps its throttle slot, is
/// audited, and still does not reach a recipient who turned the emails off since.
async fn a_failed_email_is_sent_again_when_an_operator_asks(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.script(&[554]);
    let app = spawn_mail_app(backend, &smtp).await;
    complete_for(&app, PARENT).await;
    let rows = wait_ledger(&app, PARENT, "failed", |rows| rows[0]["status"] == "failed").await;
    let id = rows[0]["id"].as_str().unwrap().to_owned();

    assert_error(retry_email(&app, "nope").await, 422, "VALIDATION_ERROR").await;
    assert_error(
        retry_email(&app, "00000000-0000-4000-8000-000000000000").await,
        404,
        "EMAIL_NOT_FOUND",
    )
    .await;
    let retried = retry_email(&app, &id).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(
        retried.json::<Value>().await.unwrap(),
        json!({"id": id, "status": "pending"})
    );
    let rows = wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!((rows.len(), rows[0]["attempts"].as_i64()), (1, Some(1)));
    assert_eq!(smtp.received().len(), 1);
    assert_error(retry_email(&app, &id).await, 409, "NOT_FAILED").await;
    let throttle: Value = app
        .get_admin(&format!("/admin/throttles/{PARENT}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        throttle["throttles"][0]["used"], 1,
        "not counted again: {throttle}"
    );
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT target FROM audit_log WHERE action = 'email.retry'")
            .fetch_all(app.state.store.reader())
            .await
            .unwrap();
    assert_eq!(audited, [format!("{id} pa***@example.com")]);

    // A recipient who turned the reports off after the failure does not get it.
    smtp.script(&[554]);
    let other = "other.parent@example.com";
    complete_for(&app, other).await;
    let rows = wait_ledger(&app, other, "failed", |rows| rows[0]["status"] == "failed").await;
    app.set_preferences(other, json!({"session_reports_enabled": false}))
        .await;
    let retried = retry_email(&app, rows[0]["id"].as_str().unwrap()).await;
    assert_eq!(retried.status(), 200);
    wait_ledger(&app, other, "suppressed", |rows| {
        rows[0]["status"] == "suppressed"
    })
    .await;
    assert_eq!(smtp.received().len(), 1);

    // The same from the shell; the running service sends it.
    smtp.script(&[554]);
    let third = "third.parent@example.com";
    complete_for(&app, third).await;
    let rows = wait_ledger(&app, third, "failed", |rows| rows[0]["status"] == "failed").await;
    let id = rows[0]["id"].as_str().unwrap().to_owned();
    let retry = || {
        let mut command = crate::helpers::herald();
        command
            .args(["email", "retry", &id])
            .env("DATABASE_URL", app.database_url())
            .env("LOG_LEVEL", "error");
        command
    };
    let done = crate::helpers::run_ok(&mut retry());
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(
        said.starts_with(&format!("queued again: {id} to th***@example.com")),
        "{said}"
    );
    wait_ledger(&app, third, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!(smtp.received().len(), 2);
    let again = retry().output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is sent"));
}

async fn retry_failed(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_admin("/admin/email/retry", Some(&body)).await
}

/// After an outage, the emails that failed during it are sent again in one request; those
/// that failed before it stay failed.
async fn the_emails_that_failed_in_a_stretch_of_time_are_sent_again_at_once(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.script(&[554, 554, 554]);
    let app = spawn_mail_app(backend, &smtp).await;
    let before = "before@example.com";
    complete_for(&app, before).await;
    wait_ledger(&app, before, "failed", |rows| rows[0]["status"] == "failed").await;
    app.clock.advance_ms(3_600_000);
    let outage_began = app.clock.now_ms() as i64;
    let hit = ["b.parent@example.com", "c.parent@example.com"];
    for parent in hit {
        complete_for(&app, parent).await;
        wait_ledger(&app, parent, "failed", |rows| rows[0]["status"] == "failed").await;
    }
    let since = chrono::DateTime::from_timestamp_millis(outage_began)
        .unwrap()
        .to_rfc3339();

    // A dry run counts them and says why they failed.
    let error = ledger(&app, hit[0]).await[0]["last_error"].clone();
    assert!(error.as_str().unwrap().contains("554"), "{error}");
    let dry = retry_failed(&app, json!({"failed_since": since, "dry_run": true})).await;
    assert_eq!(dry.status(), 200);
    assert_eq!(
        dry.json::<Value>().await.unwrap(),
        json!({"emails": 2, "dry_run": true, "errors": [{"error": error, "emails": 2}]})
    );
    let digests = retry_failed(
        &app,
        json!({"failed_since": since, "type": "weekly_digest", "dry_run": true}),
    )
    .await;
    assert_eq!(digests.json::<Value>().await.unwrap()["emails"], 0);
    // A stretch that ends before it begins holds nothing.
    let reversed = retry_failed(
        &app,
        json!({"failed_since": since, "failed_until": "2000-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(reversed.json::<Value>().await.unwrap()["emails"], 0);
    for (body, field) in [
        (json!({"failed_since": "yesterday"}), "failed_since"),
        (
            json!({"failed_since": since, "failed_until": "the day after"}),
            "failed_until",
        ),
        (json!({"failed_since": since, "type": "sms"}), "type"),
    ] {
        let refused = retry_failed(&app, body).await;
        assert_eq!(
            assert_error(refused, 422, "VALIDATION_ERROR").await["field"],
            field
        );
    }
    // The same from the shell.
    let shell = |args: &[&str]| {
        crate::helpers::herald()
            .args(["email", "retry"])
            .args(args)
            .env("DATABASE_URL", app.database_url())
            .env("LOG_LEVEL", "error")
            .output()
            .unwrap()
    };
    // (The shell's default end is its own clock's now, not the test's hand-set one.)
    let until = chrono::DateTime::from_timestamp_millis(outage_began + 86_400_000)
        .unwrap()
        .to_rfc3339();
    let counted = shell(&[
        "--failed-since",
        &since,
        "--failed-until",
        &until,
        "--dry-run",
    ]);
    assert!(
        counted.status.success(),
        "{}",
        String::from_utf8_lossy(&counted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&counted.stdout),
        format!(
            "2 failed emails would be queued again\n       2  {}\n",
            error.as_str().unwrap()
        )
    );
    let refused = shell(&["--failed-since", "yesterday"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--failed-since must be"));
    assert_eq!(smtp.received().len(), 0, "a dry run sends nothing");

    let done = retry_failed(&app, json!({"failed_since": since})).await;
    assert_eq!(done.json::<Value>().await.unwrap()["emails"], 2);
    for parent in hit {
        wait_ledger(&app, parent, "sent", |rows| rows[0]["status"] == "sent").await;
    }
    assert_eq!(smtp.received().len(), 2);
    assert_eq!(ledger(&app, before).await[0]["status"], "failed");
    let audited: Vec<(String, String)> =
        sqlx::query_as("SELECT target, new_value FROM audit_log WHERE action = 'email.retry'")
            .fetch_all(app.state.store.reader())
            .await
            .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(audited[0].0.starts_with("failed "), "{audited:?}");
    assert_eq!(audited[0].1, "2 pending");
}

async fn a_server_that_stops_answering_times_out_and_the_retry_uses_a_fresh_connection(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    smtp.stall(1);
    let app = spawn_mail_app_with(backend, &smtp, &[("SMTP_TIMEOUT_SECONDS", "1")]).await;
    complete_for(&app, PARENT).await;
    let rows = wait_ledger(&app, PARENT, "the attempt to time out", |rows| {
        rows[0]["attempts"] == 1
    })
    .await;
    assert_eq!(
        rows[0]["status"], "pending",
        "a timeout is retried: {rows:?}"
    );
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{rows:?}"
    );
    // The stalled connection still hangs: a retry sent over it would time out again.
    app.clock.advance_ms(2_000);
    let rows = wait_ledger(&app, PARENT, "sent after the timeout", |rows| {
        rows[0]["status"] == "sent"
    })
    .await;
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(smtp.data_started(), 2);
}

async fn the_mail_server_login_is_used_and_a_refused_one_pauses_sending_without_failing_email(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    smtp.require_login("herald", "new-password");
    let login = [("SMTP_USER", "herald"), ("SMTP_PASS", "old-password")];
    let app = spawn_mail_app_with(backend, &smtp, &login).await;
    complete_for(&app, PARENT).await;
    // The server refuses the login: a problem of the server's, not the message's, so the
    // email waits for the breaker's cool-down and the attempt does not count.
    let rows = wait_ledger(&app, PARENT, "a refused login", |rows| {
        rows[0]["status"] == "pending" && rows[0]["last_error"].is_string()
    })
    .await;
    assert_eq!(rows[0]["attempts"], 0, "{rows:?}");
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("535"),
        "{rows:?}"
    );
    assert!(smtp.logins().is_empty());
    // The server now takes the password herald has, as when either side is corrected.
    smtp.require_login("herald", "old-password");
    app.clock.advance_ms(5_000);
    let rows = wait_ledger(&app, PARENT, "sent once the login works", |rows| {
        rows[0]["status"] == "sent"
    })
    .await;
    assert_eq!(rows[0]["attempts"], 1);
    assert_eq!(smtp.logins(), ["herald"]);
    assert_eq!(smtp.received().len(), 1);
}

async fn an_outage_burns_no_attempts_and_everything_goes_out_when_the_server_returns(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    smtp.go_down();
    for i in 0..3 {
        complete_for(&app, &format!("parent{i}@example.com")).await;
    }
    // Attempts fail to connect until the breaker opens; none of them counts.
    wait_metrics(&app, "email_provider_up 0").await;
    wait_ledger(
        &app,
        "parent0@example.com",
        "an unreachable attempt",
        |rows| rows[0]["last_error"].is_string(),
    )
    .await;
    for _ in 0..5 {
        app.clock.advance_ms(1_000);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for i in 0..3 {
        let rows = ledger(&app, &format!("parent{i}@example.com")).await;
        // Waiting, or taken by the breaker's probe once its cool-down is over: either way
        // no attempt counted.
        assert!(
            matches!(rows[0]["status"].as_str(), Some("pending" | "sending")),
            "{rows:?}"
        );
        assert_eq!(rows[0]["attempts"].as_i64(), Some(0), "{rows:?}");
    }
    smtp.come_back().await;
    app.clock.advance_ms(5_000);
    smtp.wait_for(3).await;
    for i in 0..3 {
        let rows = wait_ledger(&app, &format!("parent{i}@example.com"), "sent", |rows| {
            rows[0]["status"] == "sent"
        })
        .await;
        assert_eq!(
            rows[0]["attempts"], 1,
            "only the successful attempt counted"
        );
    }
}

/// On SQLite one process serves: emails a stopped run left mid-send (`sending`, under a
/// lease of two minutes) go out as soon as herald starts again, not when the lease ends.
#[tokio::test]
async fn on_sqlite_emails_left_mid_send_go_out_at_the_restart() {
    let smtp = SmtpServer::start().await;
    smtp.go_down();
    let app = spawn_mail_app(Backend::Sqlite, &smtp).await;
    complete_for(&app, PARENT).await;
    wait_ledger(&app, PARENT, "a paused retry", |rows| {
        rows[0]["status"] == "pending"
    })
    .await;
    // As a process killed mid-send leaves it: claimed, its lease far from over.
    let lease_until = app.clock.now_ms() as i64 + 120_000;
    sqlx::query("UPDATE email_send_logs SET status = 'sending', lease_until = $1")
        .bind(lease_until)
        .execute(app.state.store.writer())
        .await
        .unwrap();
    let app = app.restart().await;
    smtp.come_back().await;
    // Time moves on by less than the lease.
    app.clock.advance_ms(5_000);
    app.state.dispatcher.wake();
    let rows = wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!(smtp.received().len(), 1, "{rows:?}");
}

async fn pending_emails_survive_a_restart_and_go_out_once(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.go_down();
    let app = spawn_mail_app(backend, &smtp).await;
    for i in 0..3 {
        complete_for(&app, &format!("parent{i}@example.com")).await;
    }
    let app = app.restart().await;
    smtp.come_back().await;
    // Time goes on: an attempt the new process began before the server was back fails and
    // is retried a little later, as any would be. Less than a lease (two minutes) passes, so
    // nothing goes out because a lease left behind ran out.
    for _ in 0..30 {
        if smtp.received().len() >= 3 {
            break;
        }
        app.clock.advance_ms(2_000);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = smtp.wait_for(3).await;
    // Once every row is marked sent no attempt is left running: count then.
    for i in 0..3 {
        wait_ledger(&app, &format!("parent{i}@example.com"), "sent", |rows| {
            rows.iter().all(|row| row["status"] == "sent")
        })
        .await;
    }
    assert_eq!(
        smtp.received().len(),
        3,
        "each delivered once: {received:?}"
    );
}

async fn throttles_can_be_inspected_and_reset_and_the_reset_is_audited(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    for _ in 0..5 {
        complete_for(&app, PARENT).await;
    }
    assert_eq!(complete_for(&app, PARENT).await.1.status(), 429);
    let reset = app
        .delete_admin(&format!("/admin/throttles/{PARENT}?type=session_reports"))
        .await;
    assert_eq!(reset.status(), 200);
    assert_eq!(reset.json::<Value>().await.unwrap()["cleared"], 5);
    assert_eq!(
        report_email(complete_for(&app, PARENT).await.1).await,
        "queued"
    );
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, target FROM audit_log WHERE action = 'email_throttle.reset'",
    )
    .fetch_all(app.state.store.reader())
    .await
    .unwrap();
    assert_eq!(
        audited,
        vec![(
            "email_throttle.reset".to_owned(),
            "pa***@example.com/session_reports".to_owned()
        )]
    );

    assert_error(
        app.get_admin("/admin/throttles/not-an-email").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_error(
        app.get_admin("/admin/email/logs").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    let bad_type = app
        .delete_admin(&format!("/admin/throttles/{PARENT}?type=sms"))
        .await;
    assert_error(bad_type, 422, "VALIDATION_ERROR").await;
}

async fn a_send_in_flight_at_shutdown_finishes_before_exit(backend: Backend) {
    let smtp = SmtpServer::start().await;
    smtp.slow(600);
    let mut app = spawn_mail_app(backend, &smtp).await;
    complete_for(&app, PARENT).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while smtp.data_started() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the send never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        smtp.received().is_empty(),
        "still in flight when the shutdown begins"
    );
    app.stop().await;
    assert_eq!(smtp.received().len(), 1, "the send finished before exit");
    let store = herald::store::Store::connect(&app.database_url())
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM email_send_logs")
        .fetch_one(store.reader())
        .await
        .unwrap();
    assert_eq!(status, "sent", "and its outcome was recorded");
    store.close().await;
}

/// The transport is the same on either database: these run on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_go_out_over_starttls_and_over_tls_checked_against_the_configured_ca() {
    for mode in [TlsMode::StartTls, TlsMode::Implicit] {
        let smtp = SmtpServer::start_tls(mode).await;
        let app = spawn_mail_app(Backend::Sqlite, &smtp).await;
        complete_for(&app, PARENT).await;
        let received = smtp.wait_for(1).await;
        assert!(received[0].secure, "{mode:?}: not over TLS");
        assert_eq!(received[0].rcpt_to, [PARENT]);
        wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    let smtp = SmtpServer::start_tls(TlsMode::StartTls).await;
    let config = mail_config(&smtp);
    let configure = |vars: &mut HashMap<String, String>| {
        config(vars);
        vars.remove("SMTP_TLS_CA_FILE");
    };
    let app = spawn_app_with(Backend::Sqlite, configure, None).await;
    complete_for(&app, PARENT).await;
    let rows = wait_ledger(&app, PARENT, "a refused certificate", |rows| {
        rows[0]["status"] == "pending" && rows[0]["last_error"].is_string()
    })
    .await;
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{rows:?}"
    );
    assert_eq!(
        rows[0]["attempts"], 0,
        "the server's problem, not the message's"
    );
    assert!(smtp.received().is_empty());
}

/// `purge_old` deletes a settled ledger row after `RETENTION_SEND_LOG_DAYS`; the session stays.
/// A client that completes that session again (a replayed queue, a restored backup of its own)
/// gets `duplicate`, not a second report for a months-old session.
async fn a_session_completed_again_after_its_ledger_row_was_purged_gets_no_second_report(
    backend: Backend,
) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    let old = app
        .new_session(json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": PARENT}))
        .await;
    let first = app.complete(&old.id, Some(&old.token), None).await;
    assert_eq!(report_email(first).await, "queued");
    smtp.wait_for(1).await;
    let no_parent = app.new_session(json!({"learner_name": "Lin"})).await;
    let first = app
        .complete(&no_parent.id, Some(&no_parent.token), None)
        .await;
    assert_eq!(report_email(first).await, "none");

    app.clock.advance_ms(181 * 86_400_000);
    let purge = app
        .post_admin("/admin/jobs/purge_old/run", Some(&json!({})))
        .await;
    assert_eq!(purge.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !ledger(&app, PARENT).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge did not run"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let again = app.complete(&old.id, Some(&old.token), None).await;
    assert_eq!(report_email(again).await, "duplicate");
    // A session that never had a parent's address still has no report to speak of.
    let again = app
        .complete(&no_parent.id, Some(&no_parent.token), None)
        .await;
    assert_eq!(report_email(again).await, "none");
    // A session of today is reported as ever; the old one is not among what arrives.
    let new = app
        .new_session(
            json!({"learner_name": "Grace", "subject": "Fractions", "parent_email": PARENT}),
        )
        .await;
    let today = app.complete(&new.id, Some(&new.token), None).await;
    assert_eq!(report_email(today).await, "queued");
    let subjects: Vec<String> = smtp
        .wait_for(2)
        .await
        .iter()
        .map(|m| {
            mailparse::parse_mail(&m.data)
                .unwrap()
                .headers
                .iter()
                .find(|h| h.get_key() == "Subject")
                .unwrap()
                .get_value()
        })
        .collect();
    assert!(
        subjects[0].starts_with("Ada's") && subjects[1].starts_with("Grace's"),
        "{subjects:?}"
    );
    let rows = ledger(&app, PARENT).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
}

/// A developer who sets no `API_BASE_URL` gets links to the herald they run, on the port it
/// bound (here a free one, `PORT=0`), not to a port it does not listen on.
#[tokio::test]
async fn without_api_base_url_the_links_in_an_email_reach_the_herald_that_sent_it() {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(Backend::Sqlite, |vars| smtp.configure(vars), None).await;
    assert_eq!(
        report_email(complete_for(&app, PARENT).await.1).await,
        "queued"
    );
    let link = smtp.wait_for(1).await.remove(0).unsubscribe_url();
    let port = app.address.rsplit(':').next().unwrap();
    assert!(
        link.starts_with(&format!("http://localhost:{port}/")),
        "{link}"
    );
    let page = app.client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{link}");
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
}

/// The report's PDF says when the session started in the parent's zone (their
/// `parent_timezone`), in the email and from the PDF route alike; without one, in the
/// service's (`DIGEST_TIMEZONE`, UTC here).
async fn a_report_shows_when_the_session_started_in_the_parents_zone(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    // 03:30 UTC on Monday 9 November 2026: still Sunday evening in New York.
    let monday_0330 = 1_794_195_000_000;
    let mut started = Vec::new();
    for (parent, zone) in [
        (PARENT, Some("America/New_York")),
        ("other@example.com", None),
    ] {
        app.clock.set_ms(monday_0330);
        let session = app
            .new_session(json!({"learner_name": "Ada", "parent_email": parent}))
            .await;
        app.clock.advance_ms(60_000);
        let body = zone.map(|zone| json!({"parent_timezone": zone}));
        let response = app.complete(&session.id, Some(&session.token), body).await;
        assert_eq!(report_email(response).await, "queued");
        started.push(session);
    }
    let received = smtp.wait_for(2).await;
    let expected = |to: &str| {
        if to == PARENT {
            "Started Sunday 8 November 2026, 22:30 EST"
        } else {
            "Started Monday 9 November 2026, 03:30 UTC"
        }
    };
    for mail in &received {
        let parsed = mailparse::parse_mail(&mail.data).unwrap();
        let pdf = part_of(&parsed, "application/pdf")
            .expect("pdf attachment")
            .get_body_raw()
            .unwrap();
        let Some((text, _)) = crate::sessions::read_pdf(&pdf) else {
            return;
        };
        assert!(text.contains(expected(&mail.rcpt_to[0])), "{text}");
    }
    let route = app
        .report_pdf(&started[0].id, Some(&started[0].token))
        .await;
    let (text, _) = crate::sessions::read_pdf(&route.bytes().await.unwrap()).unwrap();
    assert!(text.contains(expected(PARENT)), "{text}");
}

/// A domain that is not ASCII is mailed at its ASCII form, which any server takes; a part
/// before `@` that is not ASCII needs a server that offers SMTPUTF8, and without one the
/// email fails at once, final, rather than pausing everyone's mail again and again.
async fn an_address_that_is_not_ascii_goes_as_far_as_the_mail_server_takes_it(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(backend, &smtp).await;
    let idn = "parent@b\u{fc}cher.de";
    complete_for(&app, idn).await;
    wait_ledger(&app, idn, "sent", |rows| rows[0]["status"] == "sent").await;
    let received = smtp.received();
    assert_eq!(received[0].rcpt_to, ["parent@xn--bcher-kva.de"]);
    let data = String::from_utf8_lossy(&received[0].data);
    assert!(data.contains("To: parent@xn--bcher-kva.de\r\n"), "{data}");

    let international = "j\u{fc}rgen@example.org";
    complete_for(&app, international).await;
    let rows = wait_ledger(&app, international, "failed", |rows| {
        rows[0]["status"] == "failed"
    })
    .await;
    assert_eq!(rows[0]["attempts"], 1, "{rows:?}");
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("SMTPUTF8"),
        "{rows:?}"
    );
    complete_for(&app, PARENT).await;
    wait_ledger(&app, PARENT, "sent", |rows| rows[0]["status"] == "sent").await;
    assert_eq!(
        smtp.received().len(),
        2,
        "the refused email is not among those the server took"
    );

    // A server that offers SMTPUTF8 is asked for it and takes the address as it is.
    let utf8 = SmtpServer::start().await;
    utf8.offer_smtputf8();
    let app = spawn_mail_app(backend, &utf8).await;
    complete_for(&app, international).await;
    wait_ledger(&app, international, "sent", |rows| {
        rows[0]["status"] == "sent"
    })
    .await;
    assert_eq!(utf8.received()[0].rcpt_to, [international]);
}

on_both_backends!(
    an_address_that_is_not_ascii_goes_as_far_as_the_mail_server_takes_it,
    a_report_shows_when_the_session_started_in_the_parents_zone,
    a_send_in_flight_at_shutdown_finishes_before_exit,
    a_completed_session_sends_one_report_with_text_html_pdf_and_unsubscribe_headers,
    fifty_concurrent_identical_completes_send_one_email,
    the_sixth_report_in_a_day_is_throttled_and_goes_out_when_retried_later,
    a_recipient_who_unsubscribed_is_suppressed_and_the_link_works_like_a_person_expects,
    a_session_completed_again_after_its_ledger_row_was_purged_gets_no_second_report,
    transient_failures_are_retried_and_permanent_ones_fail_once,
    the_report_summary_says_where_the_report_email_stands,
    a_parent_reads_their_emails_and_pages_in_their_own_language,
    a_failed_email_is_sent_again_when_an_operator_asks,
    the_emails_that_failed_in_a_stretch_of_time_are_sent_again_at_once,
    a_server_that_stops_answering_times_out_and_the_retry_uses_a_fresh_connection,
    the_mail_server_login_is_used_and_a_refused_one_pauses_sending_without_failing_email,
    an_outage_burns_no_attempts_and_everything_goes_out_when_the_server_returns,
    pending_emails_survive_a_restart_and_go_out_once,
    throttles_can_be_inspected_and_reset_and_the_reset_is_audited,
);
