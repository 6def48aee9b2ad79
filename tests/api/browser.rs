//! The unsubscribe page in a real browser (headless Chromium), from the link of a real
//! received email.

use serde_json::json;

use crate::helpers::{Backend, spawn_app_with};
use crate::smtp::SmtpServer;

fn browser_kit() -> Option<(String, String)> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let playwright = std::env::var("PLAYWRIGHT_CORE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/herald-browser/node_modules/playwright-core",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if node
        && std::path::Path::new(&chromium).exists()
        && std::path::Path::new(&playwright).exists()
    {
        return Some((chromium, playwright));
    }
    crate::helpers::tool_present(false, "the headless Chromium kit", "see .ci/run");
    None
}

/// Runs `scripts/{script}` on `arg` in node with the Chromium kit; what it printed. A
/// failure fails the test with the script's output.
async fn run_script(script: &str, arg: &str, (chromium, playwright): (String, String)) -> String {
    let script = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let arg = arg.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(arg)
            .env("CHROMIUM", chromium)
            .env("PLAYWRIGHT_CORE", playwright)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "browser run failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// An app on a port chosen first (its emails' links must point at it) that has sent one
/// report to parent@example.com: the app, its port, and the report as received.
async fn a_sent_report() -> (crate::helpers::TestApp, u16, crate::smtp::Received) {
    let smtp = SmtpServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(
        Backend::Sqlite,
        |vars| {
            smtp.configure(vars);
            vars.insert("PORT".to_owned(), port.to_string());
            vars.insert(
                "API_BASE_URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            );
        },
        None,
    )
    .await;
    let session = app
        .new_session(json!({"parent_email": "parent@example.com"}))
        .await;
    app.complete(&session.id, Some(&session.token), None).await;
    let message = smtp.wait_for(1).await.remove(0);
    (app, port, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_unsubscribes_from_the_link_in_their_email_in_a_real_browser() {
    let Some((chromium, playwright)) = browser_kit() else {
        return;
    };
    let (app, port, message) = a_sent_report().await;
    let url = message.unsubscribe_url();
    assert!(
        url.starts_with(&format!(
            "http://127.0.0.1:{port}/api/v1/email/unsubscribe/"
        )),
        "{url}"
    );

    run_script("unsubscribe_browser.cjs", &url, (chromium, playwright)).await;
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, "parent@example.com")
            .await
            .unwrap(),
        Some((true, false)),
        "session reports are off, digests still on"
    );
}

/// Both emails, with hostile names (markup, quotes, a right-to-left override, a thousand
/// characters), in headless Chromium at a phone's 375 px and a desktop's 800 px: nothing
/// scrolls sideways, every learner's name shows, the unsubscribe link is there, and no
/// markup from a name became an element.
#[tokio::test]
async fn both_emails_read_well_in_a_real_browser_at_phone_and_desktop_widths() {
    use herald::reports::week::{SessionFact, digest, display_name};
    use herald::reports::{SessionRecord, summarize};
    let Some((chromium, playwright)) = browser_kit() else {
        return;
    };
    let templates = herald::templates::Templates::shipped("Acme Learning", "1 Main St");
    let hostile = [
        "<script>alert(1)</script>",
        "\"Zoë\" O'Brien",
        "\u{202e}Ada Lovelace",
        &"Maximilian".repeat(100),
    ];
    let url = herald::templates::Links {
        unsubscribe: "https://herald.example.org/api/v1/email/unsubscribe/v1.x.y?type=weekly_digest",
        preferences: "https://herald.example.org/api/v1/email/preferences/page/v1.x.y",
    };
    let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 9).unwrap();
    let monday = herald::reports::week::day_start_ms(week, chrono_tz::UTC);
    let facts: Vec<SessionFact> = hostile
        .iter()
        .enumerate()
        .map(|(i, name)| SessionFact {
            learner: Some((*name).to_owned()),
            subject: Some(format!(
                "Subject <b>{i}</b> with a long name {}",
                "x".repeat(80)
            )),
            started_at_ms: monday + i as i64 * 86_400_000,
            completed_at_ms: monday + i as i64 * 86_400_000 + (i as i64 + 1) * 600_000,
            answers_total: 4,
            answers_correct: i as i64,
        })
        .collect();
    let digest = digest(&facts, week, chrono_tz::UTC).unwrap();
    let digest_html = templates.weekly_digest(&digest, url).unwrap().html;
    let report = summarize(
        &SessionRecord {
            id: "3f2a0000-0000-4000-8000-00000000000a".into(),
            learner_name: Some(hostile[0].to_owned()),
            subject: Some(hostile[3].to_owned()),
            started_at_ms: 0,
            completed_at_ms: Some(754_000),
        },
        // Answers, so the report's answers bar is laid out too.
        &[true, true, false].map(|correct| herald::reports::EventRecord {
            kind: "answer".into(),
            correct: Some(correct),
            at_ms: 60_000,
        }),
        0,
    );
    let report_html = templates.session_report(&report, url).unwrap().html;

    let dir = tempfile::tempdir().unwrap();
    let (digest_file, report_file) = (
        dir.path().join("digest.html"),
        dir.path().join("report.html"),
    );
    std::fs::write(&digest_file, &digest_html).unwrap();
    if let Ok(keep) = std::env::var("HERALD_KEEP_EMAIL_HTML") {
        std::fs::write(format!("{keep}/digest.html"), &digest_html).unwrap();
    }
    std::fs::write(&report_file, report_html).unwrap();
    // What a parent must see: each name as the email shows it (reordering marks dropped,
    // long ones shortened).
    let shown: Vec<String> = hostile.iter().map(|n| display_name(n)).collect();
    let checks = serde_json::json!([
        {"file": digest_file, "names": shown},
        {"file": report_file, "names": [shown[0]]},
    ]);
    let checks_file = dir.path().join("checks.json");
    std::fs::write(&checks_file, checks.to_string()).unwrap();
    run_script(
        "email_browser.cjs",
        &checks_file.display().to_string(),
        (chromium, playwright),
    )
    .await;
}

/// The preference page from the link in a received email, in headless Chromium: both
/// switches shown on, the digest turned off and saved, recorded as the page's doing; the
/// same form sent again, or one without its nonce, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_changes_their_preferences_on_the_page_their_email_links_to() {
    let Some((chromium, playwright)) = browser_kit() else {
        return;
    };
    let (app, port, message) = a_sent_report().await;
    let text = String::from_utf8_lossy(&message.data).replace("=\r\n", "");
    let url = text
        .split_whitespace()
        .find(|w| w.contains("/api/v1/email/preferences/page/"))
        .expect("a preference link in the email")
        .to_owned();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{url}"
    );

    let nonce = run_script("preferences_browser.cjs", &url, (chromium, playwright)).await;
    let store = &app.state.store;
    assert_eq!(
        herald::store::preferences::switches(store, "parent@example.com")
            .await
            .unwrap(),
        Some((true, true)),
        "the digest turned off, then back on"
    );
    // (Both at the same instant of the test's clock: compared in order of value.)
    let mut changes: Vec<String> = herald::store::preferences::changes(store, "parent@example.com")
        .await
        .unwrap()
        .into_iter()
        .map(|c| format!("{}:{}:{}", c.source, c.field, c.new_value))
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            "preference_page:weekly_digest_enabled:false",
            "preference_page:weekly_digest_enabled:true"
        ]
    );
    let preferences = herald::store::preferences::get(store, "parent@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        preferences.weekly_digest_resubscribed_at >= preferences.weekly_digest_unsubscribed_at
            && preferences.weekly_digest_resubscribed_at.is_some(),
        "the re-subscribe is recorded: {preferences:?}"
    );

    // The same form again (a replay), and a form without the page's nonce (a forgery).
    let post = |body: String| {
        app.client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let replayed = post(format!("nonce={nonce}&session_reports=on"))
        .await
        .unwrap();
    assert_eq!(replayed.status(), 409);
    let forged = post("session_reports=on".to_owned()).await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        herald::store::preferences::switches(store, "parent@example.com")
            .await
            .unwrap(),
        Some((true, true)),
        "neither changed anything"
    );
}
