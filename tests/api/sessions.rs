//! Sessions and reports over real HTTP on both databases.

use chrono::Datelike;
use herald_actors::clock::Clock;
use serde_json::{Value, json};

use crate::helpers::{
    API_KEY, Backend, TestApp, assert_error, spawn_app, spawn_app_with_templates,
};
use crate::on_both_backends;

pub struct Session {
    pub id: String,
    pub token: String,
}

impl TestApp {
    pub async fn start_session(&self, body: Option<Value>) -> reqwest::Response {
        let request = self.client.post(self.url("/api/v1/sessions/start"));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    pub async fn new_session(&self, body: Value) -> Session {
        let response = self.start_session(Some(body)).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        Session {
            id: body["session_id"].as_str().unwrap().to_owned(),
            token: body["session_access_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A step, a right answer and a wrong one.
    pub async fn add_step_and_two_answers(&self, session: &Session) {
        for (kind, correct) in [
            ("step", None),
            ("answer", Some(true)),
            ("answer", Some(false)),
        ] {
            let added = self
                .add_event(
                    &session.id,
                    Some(&session.token),
                    json!({"kind": kind, "correct": correct}),
                )
                .await;
            assert_eq!(added.status(), 201);
        }
    }

    pub async fn add_event(&self, id: &str, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/sessions/{id}/events")))
            .json(&body);
        if let Some(token) = token {
            request = request.header("X-Session-Access-Token", token);
        }
        request.send().await.unwrap()
    }

    pub async fn complete(
        &self,
        id: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/sessions/{id}/complete")));
        if let Some(token) = token {
            request = request.header("X-Session-Access-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn report_summary(&self, id: &str) -> reqwest::Response {
        self.get_admin(&format!("/api/v1/reports/session/{id}/summary"))
            .await
    }

    pub async fn report_pdf(&self, id: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/api/v1/reports/session/{id}/pdf")));
        if let Some(token) = token {
            request = request.header("X-Session-Access-Token", token);
        }
        request.send().await.unwrap()
    }
}

/// A completed session: 754 s, 2 steps, 1 hint, 3 answers of which 2 correct.
async fn seeded_session(app: &TestApp) -> Session {
    let session = app
        .new_session(json!({"learner_name": "Ada", "subject": "Fractions", "parent_email": "Parent@Example.COM"}))
        .await;
    let events = [
        json!({"kind": "step", "detail": "Read the problem"}),
        json!({"kind": "step"}),
        json!({"kind": "hint", "detail": "Common denominators"}),
        json!({"kind": "answer", "correct": true}),
        json!({"kind": "answer", "correct": false}),
        json!({"kind": "answer", "correct": true}),
    ];
    for event in events {
        app.clock.advance_ms(1_000);
        let response = app
            .add_event(&session.id, Some(&session.token), event)
            .await;
        assert_eq!(response.status(), 201);
    }
    app.clock.advance_ms(748_000);
    assert_eq!(
        app.complete(&session.id, Some(&session.token), None)
            .await
            .status(),
        200
    );
    session
}

fn assert_seeded_numbers(summary: &Value) {
    assert_eq!(summary["duration_seconds"], 754);
    assert_eq!(summary["steps"], 2);
    assert_eq!(summary["hints_used"], 1);
    assert_eq!(summary["answers_total"], 3);
    assert_eq!(summary["answers_correct"], 2);
    assert_eq!(summary["events_total"], 6);
    assert_eq!(
        summary["events_by_kind"],
        json!({"answer": 3, "hint": 1, "step": 2})
    );
    assert_eq!(summary["completed"], true);
    assert_eq!(summary["learner_name"], "Ada");
    assert_eq!(summary["subject"], "Fractions");
}

async fn starting_a_session_returns_its_id_token_and_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let bare = app.start_session(None).await;
    assert_eq!(bare.status(), 201);
    let body: Value = bare.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(body["session_id"].as_str().unwrap()).is_ok());
    assert_eq!(body["session_access_token"].as_str().unwrap().len(), 64);
    assert!(chrono::DateTime::parse_from_rfc3339(body["started_at"].as_str().unwrap()).is_ok());

    let with_fields = app
        .new_session(json!({"learner_name": "Ada", "parent_email": "Parent@Example.COM"}))
        .await;
    let (hash, email): (String, Option<String>) =
        sqlx::query_as("SELECT access_token_hash, parent_email FROM sessions WHERE id = $1")
            .bind(&with_fields.id)
            .fetch_one(app.state.store.reader())
            .await
            .unwrap();
    assert_ne!(
        hash, with_fields.token,
        "only a hash of the token is stored"
    );
    assert_eq!(
        email.as_deref(),
        Some("Parent@example.com"),
        "domain case normalised"
    );
    assert!(app.metrics().await.contains("sessions_started_total"));
}

async fn bad_session_input_is_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            json!({"parent_email": "a@b.com\r\nBcc: evil@x.com"}),
            422,
            "parent_email",
        ),
        (
            json!({"parent_email": "not-an-address"}),
            422,
            "parent_email",
        ),
        (
            json!({"parent_email": format!("{}@b.com", "a".repeat(65))}),
            422,
            "parent_email",
        ),
        // Pasted with a zero-width space, or with a mark that reorders how it reads.
        (
            json!({"parent_email": "parent\u{200b}@example.com"}),
            422,
            "parent_email",
        ),
        (
            json!({"parent_email": "\u{202e}moc.elpmaxe@tnerap"}),
            422,
            "parent_email",
        ),
        (
            json!({"parent_email": "parent\u{202e}moc.rehto@example.com"}),
            422,
            "parent_email",
        ),
        (
            json!({"learner_name": "x".repeat(101)}),
            422,
            "learner_name",
        ),
        (json!({"subject": "tab\u{7}bell"}), 422, "subject"),
        (json!({"learner_name": 5}), 400, "learner_name"),
        (json!({"nickname": "x"}), 400, "nickname"),
    ];
    for (body, status, field) in cases {
        let response = app.start_session(Some(body.clone())).await;
        let error = assert_error(response, status, "VALIDATION_ERROR").await;
        assert_eq!(error["field"], field, "for {body}");
    }
    assert_eq!(app.rows("sessions").await, 0);
}

async fn events_need_the_sessions_own_token_and_stop_at_completion(backend: Backend) {
    let app = spawn_app(backend).await;
    let mine = app.new_session(json!({})).await;
    let other = app.new_session(json!({})).await;
    let step = json!({"kind": "step"});

    // Without the session's token, 403; and the caller first: a malformed body or a bad
    // field is answered as the missing or wrong token, never with what is wrong in the
    // body, and a completion the same.
    for body in [
        step.clone(),
        json!({"type": "step"}),
        json!({"kind": "DROP TABLE"}),
        json!([1]),
    ] {
        assert_error(
            app.add_event(&mine.id, None, body.clone()).await,
            403,
            "MISSING_SESSION_TOKEN",
        )
        .await;
        assert_error(
            app.add_event(&mine.id, Some(&other.token), body.clone())
                .await,
            403,
            "INVALID_SESSION_TOKEN",
        )
        .await;
    }
    assert_error(
        app.complete(
            &mine.id,
            Some(&other.token),
            Some(json!({"parent_email": 7})),
        )
        .await,
        403,
        "INVALID_SESSION_TOKEN",
    )
    .await;
    // A malformed Idempotency-Key the same.
    let keyed = |token: Option<&str>| {
        let request = app
            .client
            .post(app.url(&format!("/api/v1/sessions/{}/events", mine.id)))
            .header("Idempotency-Key", "has a space")
            .json(&step);
        match token {
            Some(token) => request.header("X-Session-Access-Token", token),
            None => request,
        }
        .send()
    };
    assert_error(keyed(None).await.unwrap(), 403, "MISSING_SESSION_TOKEN").await;
    assert_error(
        keyed(Some(&other.token)).await.unwrap(),
        403,
        "INVALID_SESSION_TOKEN",
    )
    .await;
    let refused = assert_error(
        keyed(Some(&mine.token)).await.unwrap(),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(refused["field"], "Idempotency-Key");
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(
        app.add_event(&unknown, Some(&mine.token), step.clone())
            .await,
        404,
        "SESSION_NOT_FOUND",
    )
    .await;
    assert_error(
        app.add_event("not-a-uuid", Some(&mine.token), step.clone())
            .await,
        404,
        "SESSION_NOT_FOUND",
    )
    .await;
    let bad_kind = app
        .add_event(&mine.id, Some(&mine.token), json!({"kind": "DROP TABLE"}))
        .await;
    assert_eq!(
        assert_error(bad_kind, 422, "VALIDATION_ERROR").await["field"],
        "kind"
    );
    let long_detail = app
        .add_event(
            &mine.id,
            Some(&mine.token),
            json!({"kind": "step", "detail": "x".repeat(2001)}),
        )
        .await;
    assert_eq!(
        assert_error(long_detail, 422, "VALIDATION_ERROR").await["field"],
        "detail"
    );
    let wrong_type = app
        .add_event(
            &mine.id,
            Some(&mine.token),
            json!({"kind": "answer", "correct": "yes"}),
        )
        .await;
    assert_eq!(
        assert_error(wrong_type, 400, "VALIDATION_ERROR").await["field"],
        "correct"
    );

    let recorded = app
        .add_event(
            &mine.id,
            Some(&mine.token),
            json!({"kind": "hint", "detail": "Try halves"}),
        )
        .await;
    assert_eq!(recorded.status(), 201);
    let body: Value = recorded.json().await.unwrap();
    assert_eq!(body["kind"], "hint");
    assert_eq!(body["session_id"], mine.id.as_str());

    assert_eq!(
        app.complete(&mine.id, Some(&mine.token), None)
            .await
            .status(),
        200
    );
    assert_error(
        app.add_event(&mine.id, Some(&mine.token), step).await,
        409,
        "SESSION_COMPLETED",
    )
    .await;
    assert_eq!(
        app.rows("session_events").await,
        1,
        "only the valid event was written"
    );
}

/// A backend that timed out or lost the answer sends the event again with the same
/// `Idempotency-Key`: the session counts it once, and the answer is the first one's.
async fn an_event_sent_again_with_its_idempotency_key_is_recorded_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.new_session(json!({})).await;
    let send = |session: &Session, key: &str, body: Value| {
        app.client
            .post(app.url(&format!("/api/v1/sessions/{}/events", session.id)))
            .header("X-Session-Access-Token", &session.token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let hint = json!({"kind": "hint", "detail": "Try halves"});
    let first = send(&session, "evt-1", hint.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    app.clock.advance_ms(5_000);
    // Written another way (the kind's case, the detail's spaces), it is the same event.
    let again = send(
        &session,
        "evt-1",
        json!({"kind": "HINT", "detail": " Try halves "}),
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the first answer, its time included");

    let other_event = send(&session, "evt-1", json!({"kind": "step"}))
        .await
        .unwrap();
    let refused = assert_error(other_event, 422, "VALIDATION_ERROR").await;
    assert_eq!(refused["field"], "Idempotency-Key");
    for bad in ["a b", &"k".repeat(256)] {
        let refused = assert_error(
            send(&session, bad, hint.clone()).await.unwrap(),
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(refused["field"], "Idempotency-Key", "{bad}");
    }
    // Sent eight times at once: recorded once, and every answer names that event.
    let answer = json!({"kind": "answer", "correct": true});
    let racing =
        futures_util::future::join_all((0..8).map(|_| send(&session, "evt-2", answer.clone())))
            .await;
    let mut ids = std::collections::BTreeSet::new();
    for response in racing {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        ids.insert(response.json::<Value>().await.unwrap()["event_id"].to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    // A key is the session's own: another session's event under it is another event.
    let other = app.new_session(json!({})).await;
    let elsewhere: Value = send(&other, "evt-1", hint.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(elsewhere["event_id"], first["event_id"]);

    // Once the session is completed, a repeat still gets its answer; a new event does not.
    let completed: Value = app
        .complete(&session.id, Some(&session.token), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(completed["summary"]["events_total"], 2);
    assert_eq!(completed["summary"]["hints_used"], 1);
    assert_eq!(completed["summary"]["answers_total"], 1);
    let late = send(&session, "evt-2", answer.clone()).await.unwrap();
    assert_eq!(late.status(), 201);
    assert_eq!(late.headers()["idempotent-replayed"], "true");
    assert_error(
        send(&session, "evt-3", answer).await.unwrap(),
        409,
        "SESSION_COMPLETED",
    )
    .await;
}

/// A session is read whole to be summarised; one that took events without end could make
/// that read as large as a client liked.
async fn a_session_takes_at_most_ten_thousand_events_and_completes_with_them(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app.new_session(json!({"learner_name": "Ada"})).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
         INSERT INTO session_events (id, session_id, kind, created_at) \
         SELECT 'seeded-' || i, $1, 'step', $2 + i * 360 FROM n",
    )
    .bind(session.id.as_str())
    .bind(app.clock.now_ms() as i64)
    .execute(app.state.store.writer())
    .await
    .unwrap();
    app.clock.advance_ms(3_600_000);
    let step = json!({"kind": "answer", "correct": true});
    let last = app
        .add_event(&session.id, Some(&session.token), step.clone())
        .await;
    assert_eq!(last.status(), 201, "the 10,000th is taken");
    let refused = assert_error(
        app.add_event(&session.id, Some(&session.token), step).await,
        409,
        "SESSION_FULL",
    )
    .await;
    assert!(refused["message"].as_str().unwrap().contains("10000"));
    let completed = app.complete(&session.id, Some(&session.token), None).await;
    assert_eq!(completed.status(), 200);
    let body: Value = completed.json().await.unwrap();
    assert_eq!(body["summary"]["events_total"], 10_000);
    assert_eq!(body["summary"]["answers_correct"], 1);
    // An hour of events, charted whole in the report, which stays small.
    let pdf = app.report_pdf(&session.id, Some(&session.token)).await;
    assert_eq!(pdf.status(), 200);
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.len() <= 40_000, "{} bytes", bytes.len());
}

async fn completing_twice_changes_nothing_and_returns_the_summary(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = seeded_session(&app).await;
    app.clock.advance_ms(30_000);
    let again = app.complete(&session.id, Some(&session.token), None).await;
    assert_eq!(again.status(), 200);
    let body: Value = again.json().await.unwrap();
    assert_seeded_numbers(&body["summary"]);
    assert_eq!(body["completed_at"], body["summary"]["completed_at"]);
    // The address it was completed with, however written, is the same request; another is
    // refused: its report was decided for the first.
    let again = json!({"parent_email": "Parent@Example.COM"});
    let again = app
        .complete(&session.id, Some(&session.token), Some(again))
        .await;
    assert_eq!(again.status(), 200);
    let other = json!({"parent_email": "new@example.com"});
    let refused = app
        .complete(&session.id, Some(&session.token), Some(other))
        .await;
    assert_error(refused, 409, "PARENT_EMAIL_MISMATCH").await;
    let email: Option<String> =
        sqlx::query_scalar("SELECT parent_email FROM sessions WHERE id = $1")
            .bind(&session.id)
            .fetch_one(app.state.store.reader())
            .await
            .unwrap();
    assert_eq!(
        email.as_deref(),
        Some("Parent@example.com"),
        "a repeat completion changes nothing"
    );
    assert_error(
        app.complete(&session.id, None, None).await,
        403,
        "MISSING_SESSION_TOKEN",
    )
    .await;
    let completed = app.metrics().await;
    assert!(completed.contains("sessions_completed_total"));
}

async fn the_report_summary_needs_an_api_key_and_has_the_numbers(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = seeded_session(&app).await;
    let response = app.report_summary(&session.id).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().contains_key("ratelimit-policy"),
        "reports are rate limited"
    );
    assert_seeded_numbers(&response.json().await.unwrap());

    let no_key = app
        .client
        .get(app.url(&format!("/api/v1/reports/session/{}/summary", session.id)))
        .send()
        .await
        .unwrap();
    assert_error(no_key, 401, "UNAUTHORIZED").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_error(app.report_summary(&unknown).await, 404, "SESSION_NOT_FOUND").await;
}

fn pdftotext_available() -> bool {
    let found = std::process::Command::new("pdftotext")
        .arg("-v")
        .output()
        .is_ok();
    crate::helpers::tool_present(found, "pdftotext", "apt-get install poppler-utils")
}

async fn the_pdf_report_is_readable_and_guarded_by_the_session_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = seeded_session(&app).await;
    let other = app.new_session(json!({})).await;

    assert_error(
        app.report_pdf(&session.id, None).await,
        403,
        "MISSING_SESSION_TOKEN",
    )
    .await;
    assert_error(
        app.report_pdf(&session.id, Some(&other.token)).await,
        403,
        "INVALID_SESSION_TOKEN",
    )
    .await;
    assert_error(
        app.report_pdf(&uuid::Uuid::new_v4().to_string(), Some(&session.token))
            .await,
        404,
        "SESSION_NOT_FOUND",
    )
    .await;

    let response = app.report_pdf(&session.id, Some(&session.token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let Some((text, fonts)) = read_pdf(&bytes) else {
        return;
    };
    let squashed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "Learning session report",
        "Ada — Fractions",
        "Time spent 12 min 34 s",
        "Steps worked through 2",
        "Hints used 1",
        "Answers correct 2 of 3",
        "Accuracy 67%",
        "Events recorded 6",
        "answer 3",
        "hint 1",
        "step 2",
        &session.id,
    ] {
        assert!(squashed.contains(expected), "{expected:?} not in:\n{text}");
    }
    // Each font embedded, subset, with a ToUnicode map.
    assert!(
        fonts
            .lines()
            .skip(2)
            .all(|l| l.contains(" yes yes yes ") && l.contains("+Go-")),
        "fonts:\n{fonts}"
    );
}

/// The text of a PDF (`pdftotext -layout`) and its fonts (`pdffonts`), or `None` where
/// poppler-utils is not installed.
pub(crate) fn read_pdf(bytes: &[u8]) -> Option<(String, String)> {
    if !pdftotext_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.pdf");
    std::fs::write(&path, bytes).unwrap();
    let run = |tool: &str, args: &[&str]| {
        let output = std::process::Command::new(tool)
            .args(args)
            .arg(&path)
            .args(if tool == "pdftotext" {
                &["-"][..]
            } else {
                &[][..]
            })
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    Some((run("pdftotext", &["-layout"]), run("pdffonts", &[])))
}

/// Names in Polish, Czech, Russian and Greek come out of the PDF exactly as sent; a
/// character no embedded font has is a visible replacement (U+FFFD), not a `?`; the fonts
/// are subset, so the report stays small.
async fn a_report_pdf_prints_every_script_its_fonts_cover(backend: Backend) {
    let app = spawn_app(backend).await;
    let session = app
        .new_session(json!({
            "learner_name": "Łukasz Dvořák",
            "subject": "Мария и Αλέξανδρος 日",
        }))
        .await;
    app.add_step_and_two_answers(&session).await;
    let response = app.report_pdf(&session.id, Some(&session.token)).await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.len() <= 40_000, "{} bytes", bytes.len());
    let Some((text, _)) = read_pdf(&bytes) else {
        return;
    };
    for name in [
        "Łukasz Dvořák",
        "Мария и Αλέξανδρος \u{fffd}",
        "Timeline",
        "right answer",
    ] {
        assert!(text.contains(name), "{name:?} not in:\n{text}");
    }
    assert!(!text.contains('?') && !text.contains('日'), "{text}");
}

/// A deployment that writes to parents in Polish gives the PDF its words
/// (`session_report.pdf.json` in `EMAIL_TEMPLATES_DIR`): the report reads in Polish, its
/// date in the format given, and the words left out stay as shipped.
#[tokio::test]
async fn a_report_pdf_is_worded_by_the_deployments_labels() {
    const LABELS: &str = r#"{
            "title": "Raport z sesji nauki",
            "started": "Rozpoczęto {when}",
            "date_format": "%A, %-d %B %Y, %H:%M",
            "weekdays": ["poniedziałek", "wtorek", "środa", "czwartek", "piątek", "sobota", "niedziela"],
            "months": ["stycznia", "lutego", "marca", "kwietnia", "maja", "czerwca", "lipca",
                       "sierpnia", "września", "października", "listopada", "grudnia"],
            "duration_minutes": "{m} min {s} sek.",
            "percent": "{value} %",
            "answers_correct": "Poprawne odpowiedzi",
            "answers_of": "{correct} z {total}",
            "timeline": "Przebieg",
            "lane_steps": "Kroki",
            "right_answer": "dobra odpowiedź",
            "wrong_answer": "zła odpowiedź",
            "document_title": "Raport: {learner}"
        }"#;
    let app = spawn_app_with_templates(&[("session_report.pdf.json", LABELS)]).await;
    let session = app
        .new_session(json!({"learner_name": "Łukasz", "subject": "ułamki"}))
        .await;
    let started_ms = app.clock.now_ms_i64();
    app.add_step_and_two_answers(&session).await;
    app.clock.advance_ms(125_000);
    let response = app.report_pdf(&session.id, Some(&session.token)).await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let Some((text, _)) = read_pdf(&bytes) else {
        return;
    };
    let started = chrono::DateTime::from_timestamp_millis(started_ms).unwrap();
    let weekday = [
        "poniedziałek",
        "wtorek",
        "środa",
        "czwartek",
        "piątek",
        "sobota",
        "niedziela",
    ][started.weekday().num_days_from_monday() as usize];
    let month = [
        "stycznia",
        "lutego",
        "marca",
        "kwietnia",
        "maja",
        "czerwca",
        "lipca",
        "sierpnia",
        "września",
        "października",
        "listopada",
        "grudnia",
    ][started.month0() as usize];
    let started = format!("{weekday}, {} {month} {}", started.day(), started.year());
    for words in [
        "Raport z sesji nauki",
        "Łukasz — ułamki",
        &format!("Rozpoczęto {started}"),
        "Poprawne odpowiedzi",
        "Przebieg",
        "Kroki",
        "dobra odpowiedź",
        "zła odpowiedź",
        "Steps worked through",
        "2 min 5 sek.",
        "50 %",
    ] {
        assert!(text.contains(words), "{words:?} not in:\n{text}");
    }
    // pdftotext reads the gaps around a one-letter word as no space at all.
    assert!(text.replace(' ', "").contains("1z2"), "{text}");
    assert!(!text.contains("Learning session report"), "{text}");
}

async fn stats_count_sessions_and_summarise_a_period(backend: Backend) {
    let app = spawn_app(backend).await;
    seeded_session(&app).await;
    app.new_session(json!({})).await;
    let dashboard: Value = app.dashboard().await.json().await.unwrap();
    assert_eq!(dashboard["sessions_started"], 2);
    assert_eq!(dashboard["sessions_completed"], 1);

    let summary = app.get_admin("/api/v1/stats/summary?days=7").await;
    assert_eq!(summary.status(), 200);
    let summary: Value = summary.json().await.unwrap();
    assert_eq!(summary["period_days"], 7);
    assert_eq!(summary["sessions_started"], 2);
    assert_eq!(summary["sessions_completed"], 1);
    assert_eq!(summary["average_duration_seconds"], 754.0);

    app.clock.advance_ms(8 * 86_400_000);
    let later: Value = app
        .get_admin("/api/v1/stats/summary?days=7")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        later["sessions_started"], 0,
        "the period moves with the clock"
    );

    let bad = app.get_admin("/api/v1/stats/summary?days=0").await;
    assert_eq!(
        assert_error(bad, 422, "VALIDATION_ERROR").await["field"],
        "days"
    );
    let no_key = app.get("/api/v1/stats/summary").await;
    assert_error(no_key, 401, "UNAUTHORIZED").await;
    let _ = API_KEY;
}

/// A backend that timed out or lost the answer starts the session again with the same
/// `Idempotency-Key`: one session is made, and the answer, its token included, is the first.
async fn a_start_sent_again_with_its_idempotency_key_makes_one_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let start = |app: &TestApp, key: &str, body: Value| {
        app.client
            .post(app.url("/api/v1/sessions/start"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let key = "0b9cf8a4-5d1e-4c55-9a57-1f0e2d3c4b5a";
    let body = json!({"learner_name": "Ada", "subject": "fractions",
                      "parent_email": "ada.parent@example.com", "parent_timezone": "Europe/Paris"});
    let first = start(&app, key, body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    app.clock.advance_ms(5_000);
    // The parent changes their zone in between: a repeat leaves it as they set it.
    app.set_preferences("ada.parent@example.com", json!({"timezone": "Asia/Tokyo"}))
        .await;
    let again = start(&app, key, body.clone()).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again, first,
        "the first answer, its token and time included"
    );
    assert_eq!(app.rows("sessions").await, 1);
    let kept = app
        .admin_json("/api/v1/email/preferences/ada.parent@example.com")
        .await;
    assert_eq!(kept["timezone"], "Asia/Tokyo");
    let session = Session {
        id: first["session_id"].as_str().unwrap().to_owned(),
        token: first["session_access_token"].as_str().unwrap().to_owned(),
    };
    assert_eq!(session.token.len(), 64, "as long as a random token");
    app.add_step_and_two_answers(&session).await;

    // The same key with another session, or a key short enough to guess, is refused.
    let other = start(&app, key, json!({"learner_name": "Grace"}))
        .await
        .unwrap();
    let refused = assert_error(other, 422, "VALIDATION_ERROR").await;
    assert_eq!(refused["field"], "Idempotency-Key");
    let short = start(&app, "evt-1", json!({})).await.unwrap();
    let refused = assert_error(short, 422, "VALIDATION_ERROR").await;
    assert_eq!(refused["field"], "Idempotency-Key");
    // Another key is another session, with a token of its own.
    let another = start(&app, "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", body.clone())
        .await
        .unwrap();
    let another: Value = another.json().await.unwrap();
    assert_ne!(another["session_id"], first["session_id"]);
    assert_ne!(
        another["session_access_token"],
        first["session_access_token"]
    );

    // Sent eight times at once: one session, and every answer names it with its token.
    let racing = futures_util::future::join_all(
        (0..8).map(|_| start(&app, "c3d2e1f0-a9b8-4c7d-8e6f-5a4b3c2d1e0f", json!({}))),
    )
    .await;
    let mut answers = std::collections::BTreeSet::new();
    for response in racing {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        let answer: Value = response.json().await.unwrap();
        answers.insert((
            answer["session_id"].to_string(),
            answer["session_access_token"].to_string(),
        ));
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(app.rows("sessions").await, 3);

    // A new signing key with the old one kept: the repeat still answers the token. Once
    // the old key is dropped, it cannot, and says so.
    let app = app
        .restart_with(|vars| {
            vars.insert("SECRET_KEY".into(), "a-new-signing-secret".into());
            vars.insert("SECRET_KEY_VERSION".into(), "2".into());
            vars.insert("SECRET_KEY_PREVIOUS".into(), "1:test-signing-secret".into());
        })
        .await;
    let rotated = start(&app, key, body.clone()).await.unwrap();
    assert_eq!(rotated.status(), 201);
    assert_eq!(rotated.json::<Value>().await.unwrap(), first);
    let app = app
        .restart_with(|vars| {
            vars.remove("SECRET_KEY_PREVIOUS");
        })
        .await;
    let expired = start(&app, key, body).await.unwrap();
    assert_error(expired, 409, "IDEMPOTENCY_KEY_EXPIRED").await;
    assert_eq!(app.rows("sessions").await, 3);
}

async fn stats_dashboard_fails_when_the_database_does(backend: Backend) {
    let app = spawn_app(backend).await;
    app.state.store.close().await;
    let response = app.dashboard().await;
    assert!(response.status().is_server_error(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string());
}

on_both_backends!(
    starting_a_session_returns_its_id_token_and_time,
    bad_session_input_is_refused_and_nothing_is_written,
    events_need_the_sessions_own_token_and_stop_at_completion,
    an_event_sent_again_with_its_idempotency_key_is_recorded_once,
    a_start_sent_again_with_its_idempotency_key_makes_one_session,
    a_session_takes_at_most_ten_thousand_events_and_completes_with_them,
    completing_twice_changes_nothing_and_returns_the_summary,
    the_report_summary_needs_an_api_key_and_has_the_numbers,
    the_pdf_report_is_readable_and_guarded_by_the_session_token,
    a_report_pdf_prints_every_script_its_fonts_cover,
    stats_count_sessions_and_summarise_a_period,
    stats_dashboard_fails_when_the_database_does,
);
