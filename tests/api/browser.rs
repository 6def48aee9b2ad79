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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_unsubscribes_from_the_link_in_their_email_in_a_real_browser() {
    let Some((chromium, playwright)) = browser_kit() else {
        return;
    };
    let smtp = SmtpServer::start().await;
    // The links must point at this very instance, so its port is chosen first.
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
    let url = smtp.wait_for(1).await.remove(0).unsubscribe_url();
    assert!(
        url.starts_with(&format!(
            "http://127.0.0.1:{port}/api/v1/email/unsubscribe/"
        )),
        "{url}"
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/unsubscribe_browser.cjs"
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(&url)
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
    assert_eq!(
        herald::store::preferences::switches(&app.state.store, "parent@example.com")
            .await
            .unwrap(),
        Some((true, false)),
        "session reports are off, digests still on"
    );
}
