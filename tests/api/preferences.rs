//! The preferences API for the calling backend: read and change what a recipient receives,
//! re-subscribe, a time zone, every change recorded with its source, a suppression shown and
//! not lifted.

use serde_json::{Value, json};

use crate::helpers::{
    API_KEY, Backend, TestApp, assert_error, spawn_app, spawn_app_with_templates,
};
use crate::on_both_backends;

const PARENT: &str = "parent@example.com";

async fn get(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/email/preferences/{email}")))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap()
}

async fn put(app: &TestApp, email: &str, body: Value) -> reqwest::Response {
    app.put_preferences(email, &body).await
}

async fn report_email(app: &TestApp) -> Value {
    report_email_to(app, PARENT).await
}

async fn report_email_to(app: &TestApp, parent: &str) -> Value {
    let session = app.new_session(json!({"parent_email": parent})).await;
    let done: Value = app
        .complete(&session.id, Some(&session.token), None)
        .await
        .json()
        .await
        .unwrap();
    done["report_email"].clone()
}

/// The source, field and new value of the last recorded change of `email`'s preferences.
async fn last_change(app: &TestApp, email: &str) -> [String; 3] {
    let changes = herald::store::preferences::changes(&app.state.store, email)
        .await
        .unwrap();
    let last = changes.last().unwrap();
    [
        last.source.clone(),
        last.field.clone(),
        last.new_value.clone(),
    ]
}

async fn a_backend_reads_and_changes_preferences_and_a_parent_can_come_back(backend: Backend) {
    let app = spawn_app(backend).await;
    // Unknown to herald: everything on, by default.
    let fresh: Value = get(&app, PARENT).await.json().await.unwrap();
    assert_eq!(
        (
            &fresh["weekly_digest_enabled"],
            &fresh["session_reports_enabled"],
            &fresh["timezone"]
        ),
        (&json!(true), &json!(true), &Value::Null)
    );
    assert_eq!(
        app.client
            .get(app.url(&format!("/api/v1/email/preferences/{PARENT}")))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let off: Value = put(&app, PARENT, json!({"session_reports_enabled": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(off["session_reports_enabled"], false);
    assert!(off["session_reports_unsubscribed_at"].is_string());
    assert_eq!(report_email(&app).await, "suppressed");

    // Back on: stamped, and the next report goes out.
    app.clock.advance_ms(60_000);
    let on: Value = put(
        &app,
        PARENT,
        json!({"session_reports_enabled": true, "timezone": "Asia/Kolkata"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(on["session_reports_enabled"], true);
    assert!(on["session_reports_resubscribed_at"].is_string());
    assert_eq!(on["timezone"], "Asia/Kolkata");
    assert_eq!(report_email(&app).await, "queued");

    let bad = put(&app, PARENT, json!({"timezone": "Mars/Olympus_Mons"})).await;
    assert_eq!(
        assert_error(bad, 400, "VALIDATION_ERROR").await["field"],
        "timezone"
    );
    let unknown_field = put(&app, PARENT, json!({"nickname": "x"})).await;
    assert_eq!(unknown_field.status(), 400);

    // Every change recorded with its source.
    let changes = herald::store::preferences::changes(&app.state.store, PARENT)
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| (c.source.as_str(), c.field.as_str(), c.new_value.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("api", "session_reports_enabled", "false"),
            ("api", "session_reports_enabled", "true"),
            ("api", "timezone", "Asia/Kolkata"),
        ]
    );

    // A suppression is shown, and this API does not lift it.
    sqlx::query(
        "INSERT INTO email_suppressions (email, reason, source, created_at) VALUES ($1, 'complained', 'sendgrid', 0)",
    )
    .bind(PARENT)
    .execute(app.state.store.writer())
    .await
    .unwrap();
    let still: Value = put(&app, PARENT, json!({"weekly_digest_enabled": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["suppressed"]["reason"], "complained");
    assert_eq!(report_email(&app).await, "suppressed");
}

async fn a_parents_time_zone_comes_with_a_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let bad = app
        .start_session(Some(
            json!({"parent_email": PARENT, "parent_timezone": "Europe/Atlantis"}),
        ))
        .await;
    assert_eq!(
        assert_error(bad, 400, "VALIDATION_ERROR").await["field"],
        "parent_timezone"
    );
    let session = app
        .new_session(json!({"parent_email": PARENT, "parent_timezone": "America/New_York"}))
        .await;
    let read: Value = get(&app, PARENT).await.json().await.unwrap();
    assert_eq!(read["timezone"], "America/New_York");
    // A later one at completion wins.
    let done = app
        .complete(
            &session.id,
            Some(&session.token),
            Some(json!({"parent_timezone": "Pacific/Kiritimati"})),
        )
        .await;
    assert_eq!(done.status(), 200);
    let read: Value = get(&app, PARENT).await.json().await.unwrap();
    assert_eq!(read["timezone"], "Pacific/Kiritimati");
}

/// An unsubscribe link's change is recorded as the link's.
async fn an_unsubscribe_from_a_link_is_recorded_as_such(backend: Backend) {
    let app = spawn_app(backend).await;
    put(&app, PARENT, json!({"timezone": "Europe/London"})).await;
    let token = app.link_token(PARENT).await;
    app.clock.advance_ms(1_000);
    let done = app.unsubscribe(&token, "weekly_digest").await;
    assert_eq!(done.status(), 200);
    assert_eq!(
        last_change(&app, PARENT).await,
        ["unsubscribe_link", "weekly_digest_enabled", "false"]
    );
    let read: Value = get(&app, PARENT).await.json().await.unwrap();
    assert!(read["weekly_digest_unsubscribed_at"].is_string());
}

/// An opt-out or a suppression is for the mailbox, whatever capitals the address is written
/// with: a parent who turned reports off as `Parent@example.com` is not mailed as
/// `parent@example.com`, and one who comes back under either spelling is mailed under both.
async fn an_opt_out_under_one_spelling_holds_for_every_spelling(backend: Backend) {
    let app = spawn_app(backend).await;
    let upper = "Parent@example.com";
    let off = put(&app, upper, json!({"session_reports_enabled": false})).await;
    assert_eq!(off.status(), 200);
    assert_eq!(report_email_to(&app, PARENT).await, "suppressed");
    let read: Value = get(&app, PARENT).await.json().await.unwrap();
    assert_eq!(
        (
            &read["session_reports_enabled"],
            &read["weekly_digest_enabled"]
        ),
        (&json!(false), &json!(true)),
        "{read}"
    );
    // A change of something else under this spelling leaves its own switch as it was: the
    // opt-out stays the other spelling's.
    let moved = put(&app, PARENT, json!({"timezone": "Europe/Warsaw"})).await;
    assert_eq!(moved.status(), 200);
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, PARENT)
            .await
            .unwrap(),
        Some((true, true))
    );
    // An unsubscribe under this spelling too is kept as its own, though the mail was stopped
    // already: were the other spelling erased, this one would stay unsubscribed.
    let off: Value = put(&app, PARENT, json!({"session_reports_enabled": false}))
        .await
        .json()
        .await
        .unwrap();
    assert!(off["session_reports_unsubscribed_at"].is_string(), "{off}");
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, PARENT)
            .await
            .unwrap(),
        Some((true, false))
    );
    // Another address is not matched by its lower case alone.
    assert_eq!(report_email_to(&app, "parent2@example.com").await, "queued");

    // Back on under the other spelling: on under both, each change recorded under its own.
    app.clock.advance_ms(60_000);
    let on: Value = put(&app, PARENT, json!({"session_reports_enabled": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(on["session_reports_enabled"], true, "{on}");
    let read: Value = get(&app, upper).await.json().await.unwrap();
    assert_eq!(read["session_reports_enabled"], true, "{read}");
    assert!(
        read["session_reports_resubscribed_at"].is_string(),
        "{read}"
    );
    assert_eq!(
        last_change(&app, upper).await,
        ["api", "session_reports_enabled", "true"]
    );
    assert_eq!(report_email_to(&app, upper).await, "queued");
    assert_eq!(report_email_to(&app, PARENT).await, "queued");

    // An unsubscribe link of one spelling stops the type under every spelling.
    let token = app.link_token(PARENT).await;
    app.clock.advance_ms(1_000);
    let done = app.unsubscribe(&token, "session_reports").await;
    assert_eq!(done.status(), 200);
    let read: Value = get(&app, upper).await.json().await.unwrap();
    assert_eq!(read["session_reports_enabled"], false, "{read}");
    assert_eq!(report_email_to(&app, upper).await, "suppressed");

    // A complaint under a third spelling stops the others, with its reason.
    put(&app, upper, json!({"session_reports_enabled": true})).await;
    sqlx::query(
        "INSERT INTO email_suppressions (email, reason, source, created_at) VALUES ($1, 'complained', 'sendgrid', 0)",
    )
    .bind("PARENT@example.com")
    .execute(app.state.store.writer())
    .await
    .unwrap();
    let read: Value = get(&app, PARENT).await.json().await.unwrap();
    assert_eq!(read["suppressed"]["reason"], "complained", "{read}");
    assert_eq!(report_email_to(&app, PARENT).await, "suppressed");
    let complained: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_send_logs WHERE email = $1 AND reason = 'complained'",
    )
    .bind(PARENT)
    .fetch_one(app.state.store.reader())
    .await
    .unwrap();
    assert_eq!(complained, 1);
}

/// Parents (or their backends) changing the switches of two spellings of one address at
/// once are each answered: the changes take the spellings' rows in one order, so two of
/// them wait for each other rather than deadlock; afterwards both spellings agree.
async fn changes_under_two_spellings_at_once_are_all_answered(backend: Backend) {
    let app = spawn_app(backend).await;
    let spellings = ["Parent@example.com", PARENT];
    for email in spellings {
        put(&app, email, json!({"session_reports_enabled": false})).await;
    }
    let changes = (0..16).map(|i| {
        let email = spellings[i % 2];
        let wanted = i % 4 < 2;
        let app = &app;
        async move {
            put(app, email, json!({"session_reports_enabled": wanted}))
                .await
                .status()
        }
    });
    let statuses = futures_util::future::join_all(changes).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    put(&app, PARENT, json!({"session_reports_enabled": true})).await;
    for email in spellings {
        let read: Value = get(&app, email).await.json().await.unwrap();
        assert_eq!(read["session_reports_enabled"], true, "{email}: {read}");
    }
    assert_eq!(report_email_to(&app, spellings[0]).await, "queued");
}

/// A deployment writing to parents in Polish words the pages their links open too
/// (`link_page.html` in `EMAIL_TEMPLATES_DIR`): the question, the answer, the form; the
/// values in them escaped, the answers' statuses as before.
#[tokio::test]
async fn the_pages_a_parents_links_open_speak_the_deployments_language() {
    const PAGE: &str = r#"<!DOCTYPE html><html lang="pl"><body>
{%- if page == "unsubscribe_confirm" %}<p>Wypisać z: {{ what }}?</p><form method="post" action="{{ action }}"><button>Wypisz</button></form>
{%- elif page == "unsubscribed" %}<p>Wypisano.</p><a href="{{ preferences_url }}">Ustawienia</a>
{%- elif page == "preferences" %}<p>Dla {{ masked }}</p><form action="{{ action }}"><input name="nonce" value="{{ nonce }}">{{ "raporty" if session_reports else "" }}{{ suppressed or "" }}</form>
{%- elif page == "preferences_saved" %}<p>Zapisano: {{ weekly_digest }}</p>
{%- elif page in ["invalid_link", "altered_link"] %}<p>Nieprawidłowy link</p>
{%- else %}<p>{{ page }}</p>{% endif %}</body></html>"#;
    let app = spawn_app_with_templates(&[("link_page.html", PAGE)]).await;
    let token = app.link_token(PARENT).await;
    let link = format!("/api/v1/email/unsubscribe/{token}?type=weekly_digest");
    let asked = app.get(&link).await;
    assert_eq!(asked.status(), 200);
    let asked = asked.text().await.unwrap();
    assert!(
        asked.contains("Wypisać z: weekly_digest?")
            && asked.contains(&format!("action=\"{token}?type=weekly_digest\"")),
        "{asked}"
    );
    let done = app.client.post(app.url(&link)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let done = done.text().await.unwrap();
    assert!(
        done.contains("Wypisano.")
            && done.contains(&format!("href=\"../preferences/page/{token}\"")),
        "{done}"
    );
    let form = app
        .get(&format!("/api/v1/email/preferences/page/{token}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        form.contains("Dla pa***@example.com") && form.contains("raporty"),
        "{form}"
    );
    let bad = app.get("/api/v1/email/unsubscribe/nonsense").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("Nieprawidłowy link"));
}

on_both_backends!(
    an_unsubscribe_from_a_link_is_recorded_as_such,
    an_opt_out_under_one_spelling_holds_for_every_spelling,
    changes_under_two_spellings_at_once_are_all_answered,
    a_backend_reads_and_changes_preferences_and_a_parent_can_come_back,
    a_parents_time_zone_comes_with_a_session,
);
