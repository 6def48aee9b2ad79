//! Every command in RUNBOOK.md runs against a live herald and succeeds.

use crate::cli::{complete_session, start_binary};
use crate::helpers::API_KEY;

/// The shell commands of the runbook's `sh` blocks, without the `export` lines.
fn commands() -> Vec<String> {
    let text = include_str!("../../RUNBOOK.md");
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if in_block
            && !line.trim().is_empty()
            && !line.starts_with("export ")
            && !line.starts_with('#')
        {
            out.push(line.to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_the_runbook_runs() {
    let running = start_binary(&[("LOG_LEVEL", "error"), ("EMAIL_POLL_INTERVAL_MS", "50")]);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    // Something to look at: a completed session with a report email.
    let completed = complete_session(&client, &running.base, "parent@example.com").await;
    let session = completed["session_id"].as_str().unwrap().to_owned();

    let commands = commands();
    assert!(commands.len() >= 15, "{commands:?}");
    // The files the runbook's commands read, in the directory they run in.
    let workdir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "bounces.txt",
            "# from the old sender\nold.bounce@example.com\n",
        ),
        ("complaints.txt", "old.complaint@example.com\n"),
        ("unsubscribed.txt", "old.unsubscribed@example.com\n"),
    ] {
        std::fs::write(workdir.path().join(name), text).unwrap();
    }
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_herald"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in commands {
        let output = tokio::task::spawn_blocking({
            let (command, path, base, url, session, workdir) = (
                command.clone(),
                path.clone(),
                running.base.clone(),
                running.database_url(),
                session.clone(),
                workdir.path().to_owned(),
            );
            move || {
                std::process::Command::new("bash")
                    .args(["-c", &format!("set -euo pipefail; {command}")])
                    .current_dir(workdir)
                    .env("PATH", path)
                    .env("HERALD", base)
                    .env("KEY", API_KEY)
                    .env("EMAIL", "parent@example.com")
                    .env("SESSION", session)
                    .env("DATABASE_URL", url)
                    .env("API_ACCESS_KEY", API_KEY)
                    .env("SECRET_KEY", "binary-test-secret")
                    .env("LOG_LEVEL", "error")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "runbook command failed: {command}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
