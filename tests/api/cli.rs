//! The binary itself: exit codes, `migrate`, `migrate status`, `--help`, `--version`.

use std::process::Command;

use crate::helpers::{herald, run_ok};

#[test]
fn help_and_version_describe_the_commands() {
    let help = herald().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["serve", "migrate", "--version"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let version = herald().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let migrate_help = herald().args(["migrate", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&migrate_help.stdout).contains("status"));
}

#[test]
fn bad_configuration_exits_2_with_one_line_per_problem() {
    let output = herald()
        .env("HERALD_ENV", "production")
        .env("PORT", "not-a-port")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("configuration error:"))
        .collect();
    assert_eq!(lines.len(), 7, "{stderr}");
    for name in [
        "PORT:",
        "DATABASE_URL:",
        "API_ACCESS_KEY:",
        "SECRET_KEY:",
        "EMAIL_PROVIDER:",
        "API_BASE_URL:",
        "EMAIL_FROM:",
    ] {
        assert!(stderr.contains(name), "{name} {stderr}");
    }
}

#[test]
fn a_broken_email_template_stops_the_start_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("weekly_digest.txt"),
        "Hello\n\n{{ learners | length }} learners\n{{ greeting }}\n",
    )
    .unwrap();
    let output = herald()
        .env("EMAIL_TEMPLATES_DIR", dir.path())
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("configuration error: EMAIL_TEMPLATES_DIR:")
            && stderr.contains("weekly_digest.txt:4")
            && stderr.contains("undefined"),
        "{stderr}"
    );
}

/// `herald templates check` tries a deployment's overrides as a start would, with no
/// database and nothing else set, and leaves nothing behind; `herald templates export`
/// writes the shipped files to start from.
#[test]
fn templates_are_checked_before_a_deploy_without_a_database() {
    let overrides = tempfile::tempdir().unwrap();
    std::fs::write(
        overrides.path().join("session_report.txt"),
        "{{ learner }}: {{ steps }} kroków\n{{ unsubscribe_url }}\n",
    )
    .unwrap();
    std::fs::write(
        overrides.path().join("session_report.pdf.json"),
        r#"{"title": "Raport z sesji"}"#,
    )
    .unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let check = |args: &[&str]| {
        herald()
            .current_dir(cwd.path())
            .args(["templates", "check"])
            .args(args)
            .output()
            .unwrap()
    };
    std::fs::create_dir(overrides.path().join("pl")).unwrap();
    std::fs::write(
        overrides.path().join("pl").join("link_page.html"),
        "<p>{{ page }} {{ what }}</p>",
    )
    .unwrap();
    let dir = overrides.path().to_str().unwrap();
    let output = check(&[dir]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for line in [
        "replaced  session_report.txt",
        "replaced  session_report.pdf.json",
        "shipped   weekly_digest.txt",
        "shipped   link_page.html",
        "replaced  pl/link_page.html",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "no database, no keys file"
    );

    std::fs::write(
        overrides.path().join("session_report.pdf.json"),
        r#"{"title": "Raport {learner}"}"#,
    )
    .unwrap();
    std::fs::write(overrides.path().join("link_page.html"), "{{ pgae }}").unwrap();
    let output = check(&[dir]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("configuration error: EMAIL_TEMPLATES_DIR:")
            && stderr.contains("session_report.pdf.json: `title` takes no placeholder")
            && stderr.contains("link_page.html:1: undefined value at `pgae`"),
        "{stderr}"
    );
    let output = check(&[]);
    assert_eq!(output.status.code(), Some(2), "no directory named");

    // A translation starts from the shipped files: exported, they check as they are, and a
    // second export keeps what is there.
    let exported = tempfile::tempdir().unwrap();
    let translation = exported.path().join("templates");
    let export = || {
        herald()
            .current_dir(cwd.path())
            .args(["templates", "export"])
            .arg(&translation)
            .output()
            .unwrap()
    };
    let output = export();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("written ").count(), 9, "{stdout}");
    let edited = translation.join("session_report.subject.txt");
    std::fs::write(&edited, "Raport: {{ learner }}\n").unwrap();
    let output = check(&[translation.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("replaced ").count(), 9, "{stdout}");
    let output = export();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("kept ").count(), 9, "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&edited).unwrap(),
        "Raport: {{ learner }}\n",
        "an edited file is not overwritten"
    );
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

/// What `herald migrate status` prints for the database at `url` (it succeeds).
fn migrate_status(url: &str) -> String {
    let status = run_ok(
        herald()
            .env("DATABASE_URL", url)
            .args(["migrate", "status"]),
    );
    String::from_utf8_lossy(&status.stdout).into_owned()
}

/// A command that reads the data, on a database not yet migrated: one line on stderr that
/// says what to do (once, not a log line beside it), nothing on stdout, and nothing written
/// (a job run from the shell does not migrate it either: a newer binary's commands must not
/// change the schema under the service that runs).
#[test]
fn a_command_on_a_database_not_migrated_says_to_migrate_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file is an empty SQLite database.
    std::fs::write(dir.path().join("herald.db"), b"").unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    for args in [
        &["jobs", "list"][..],
        &["jobs", "run", "purge_old"],
        &["digest"],
        &["digest", "--dry-run"],
        &["suppressions", "list"],
        &[
            "email",
            "preview",
            "report",
            "--session-id",
            "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c",
        ],
        &["email", "retry", "8f14e45f-ceea-4e7a-9f3b-2c1d5e6a7b8c"],
        &["replicas"],
    ] {
        let output = herald()
            .env("DATABASE_URL", &url)
            .args(args)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert_eq!(
            stderr.trim_end(),
            "error: the database is not migrated: run `herald migrate` first \
             (`herald serve` migrates when it starts)",
            "{args:?}"
        );
    }
    // Still nothing applied: the commands did not migrate on their own.
    let text = migrate_status(&url);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        text.contains("pending; run `herald migrate`") && !text.contains(&today),
        "{text}"
    );
}

/// Run in the wrong directory, or with `DATABASE_URL` naming a file that is not there, a
/// command says so and creates nothing: no empty database, no backup of one, no digest run
/// for no one. Only `serve` and `migrate` create the database.
#[test]
fn a_command_on_a_database_that_does_not_exist_says_where_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.db");
    let copy = dir.path().join("copy.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let copy_arg = copy.to_str().unwrap();
    for args in [
        &["migrate", "status"][..],
        &["backup", copy_arg],
        &["suppressions", "list"],
        &["digest"],
        &["digest", "--dry-run"],
        &["jobs", "run", "weekly_digest"],
        &["jobs", "list"],
        &[
            "email",
            "preview",
            "digest",
            "--email",
            "parent@example.com",
        ],
    ] {
        let output = herald()
            .env("DATABASE_URL", &url)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "error: no database at {}: `herald migrate` or `herald serve` creates it \
                 (DATABASE_URL names the database)",
                file.display()
            ),
            "{args:?}"
        );
        assert!(!file.exists() && !copy.exists(), "{args:?} wrote a file");
        assert!(
            !dir.path().join(".herald-secrets").exists(),
            "{args:?} left development keys for a database that is not there"
        );
    }
    run_ok(herald().env("DATABASE_URL", &url).arg("migrate"));
    assert!(file.exists());
}

#[test]
fn migrate_then_status_lists_each_migration_with_its_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herald.db"), b"").unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    assert!(migrate_status(&url).contains("pending"));

    run_ok(herald().env("DATABASE_URL", &url).arg("migrate"));

    let text = migrate_status(&url);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with('1'))
        .expect("version 1 listed");
    assert!(line.contains("initial") && line.contains(&today), "{text}");
    assert!(!text.contains("pending"));
    // Development secrets are kept beside the database.
    let secrets = dir.path().join(".herald-secrets");
    assert!(secrets.exists());
    // Keys made anew for a database that holds data: said, since old links stop opening.
    std::fs::remove_file(&secrets).unwrap();
    let remade = run_ok(
        herald()
            .env("DATABASE_URL", &url)
            .args(["migrate", "status"]),
    );
    let said = String::from_utf8_lossy(&remade.stderr);
    assert!(
        said.contains("warning: new development keys") && said.contains("no longer open"),
        "{said}"
    );
    let again = run_ok(
        herald()
            .env("DATABASE_URL", &url)
            .args(["migrate", "status"]),
    );
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A reader that goes away at once (`| head -1`) is not a failure.
    let mut cut_short = herald()
        .env("DATABASE_URL", &url)
        .args(["migrate", "status"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(cut_short.stdout.take());
    let output = cut_short.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );

    // A newer herald migrated it since (a rollback): this one migrates (nothing to do) and
    // lists what it does not know.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    run_ok(herald().env("DATABASE_URL", &url).arg("migrate"));
    let text = migrate_status(&url);
    assert!(
        text.lines()
            .any(|l| l.starts_with("999") && l.ends_with("applied by a newer herald")),
        "{text}"
    );
}

/// Starts the real binary on a free port; stops it when dropped.
pub struct Running {
    pub child: std::process::Child,
    pub base: String,
    /// Holds the database for as long as the process runs.
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn database_url(&self) -> String {
        format!("sqlite://{}/herald.db", self._dir.path().display())
    }

    /// What the process has written to stderr so far (kept in a file, so a chatty process
    /// never blocks on a full pipe).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on a fresh SQLite database, with `extra` settings (borrowed or owned values).
pub fn start_binary(extra: &[(&str, impl AsRef<str>)]) -> Running {
    start_binary_as(herald(), extra)
}

/// `command` (the binary, or a shell that runs it) as [`start_binary`] starts it.
fn start_binary_as(
    mut command: std::process::Command,
    extra: &[(&str, impl AsRef<str>)],
) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    command
        .env("PORT", port.to_string())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/herald.db", dir.path().display()),
        )
        .env("API_ACCESS_KEY", crate::helpers::API_KEY)
        .env("SECRET_KEY", "binary-test-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
    for (k, v) in extra {
        command.env(k, v.as_ref());
    }
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "herald did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Running {
        child,
        base,
        _dir: dir,
    }
}

/// The send ledger of `email` from a running binary's admin API.
pub async fn email_logs(client: &reqwest::Client, base: &str, email: &str) -> serde_json::Value {
    admin_json(client, base, &format!("/admin/email/logs?email={email}")).await
}

/// An admin route's JSON from a running binary at `base`.
pub async fn admin_json(client: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    client
        .get(format!("{base}{path}"))
        .header("X-API-Key", crate::helpers::API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_mask_addresses() {
    let mut running = start_binary(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("EMAIL_POLL_INTERVAL_MS", "50"),
    ]);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    let started: serde_json::Value = client
        .post(format!("{}/api/v1/sessions/start", running.base))
        .header("X-Request-ID", "req-log-1")
        .json(&serde_json::json!({"parent_email": "parent@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["session_id"].as_str().unwrap();
    let token = started["session_access_token"].as_str().unwrap();
    let done = client
        .post(format!("{}/api/v1/sessions/{id}/complete", running.base))
        .header("X-Session-Access-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    // The console provider logs the email as it sends it; the ledger says sent after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs: serde_json::Value =
            email_logs(&client, &running.base, "parent@example.com").await;
        if logs.to_string().contains("\"sent\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the report was never sent: {logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = running.child.kill();
    let output = running.child.wait_with_output_ref();
    let stdout = String::from_utf8_lossy(&output);
    // Every line of standard output is JSON, as a log collector reads it.
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["request_id"] == "req-log-1" && l["route"] == "/api/v1/sessions/start")
        .unwrap_or_else(|| panic!("no access line:\n{stdout}"));
    assert_eq!(access["status"], 201);
    assert!(access["duration_ms"].is_number() && access["method"] == "POST");
    // The duration reads as milliseconds to the microsecond, not a float's last digits.
    let raw = stdout
        .lines()
        .find(|l| l.contains("req-log-1") && l.contains("\"status\":201"))
        .unwrap();
    let duration = raw.split("\"duration_ms\":").nth(1).unwrap();
    let duration = &duration[..duration.find([',', '}']).unwrap()];
    assert!(
        duration
            .split('.')
            .nth(1)
            .is_none_or(|decimals| decimals.len() <= 3),
        "{raw}"
    );
    assert!(
        stdout.contains("pa***@example.com"),
        "the console email is logged, masked:\n{stdout}"
    );
    for secret in ["parent@example.com", crate::helpers::API_KEY, token] {
        assert!(!stdout.contains(secret), "{secret} in the logs");
    }
    // The email itself is shown on stderr, the recipient masked.
    let stderr = running.stderr();
    for expected in [
        "herald email (console provider: nothing was sent)",
        "To:          pa***@example.com",
        "Subject:     Your learner's session report",
        "Unsubscribe: http",
        "finished a session",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains("parent@example.com"), "{stderr}");
}

/// Starts a session for `parent` at `base`; returns its id and access token.
pub async fn start_session(client: &reqwest::Client, base: &str, parent: &str) -> (String, String) {
    let started: serde_json::Value = client
        .post(format!("{base}/api/v1/sessions/start"))
        .json(&serde_json::json!({"parent_email": parent}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        started["session_id"].as_str().unwrap().to_owned(),
        started["session_access_token"].as_str().unwrap().to_owned(),
    )
}

/// Completes a session at `base`; the status and the body.
pub async fn complete(
    client: &reqwest::Client,
    base: &str,
    (id, token): &(String, String),
) -> (u16, serde_json::Value) {
    let response = client
        .post(format!("{base}/api/v1/sessions/{id}/complete"))
        .header("X-Session-Access-Token", token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Starts and completes a session for `parent` on the running binary; the completion's body.
pub async fn complete_session(
    client: &reqwest::Client,
    base: &str,
    parent: &str,
) -> serde_json::Value {
    let session = start_session(client, base, parent).await;
    let (status, body) = complete(client, base, &session).await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn a_suppressed_report_is_logged_with_the_address_masked() {
    let outbox = tempfile::tempdir().unwrap();
    let outbox_dir = outbox.path().display().to_string();
    let mut running = start_binary(&[
        ("LOG_LEVEL", "info"),
        ("EMAIL_PROVIDER", "file"),
        ("EMAIL_FILE_DIR", &outbox_dir),
        ("EMAIL_POLL_INTERVAL_MS", "50"),
    ]);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    let first = complete_session(&client, &running.base, "parent@example.com").await;
    assert_eq!(first["report_email"], "queued");
    // The parent unsubscribes from session reports with the link of the email written out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let eml = loop {
        let written = std::fs::read_dir(outbox.path())
            .unwrap()
            .flatten()
            .find(|entry| entry.path().extension().is_some_and(|e| e == "eml"));
        if let Some(entry) = written {
            break std::fs::read(entry.path()).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no .eml written");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let link = crate::smtp::unsubscribe_url(&eml);
    let path = &link[link.find("/api/").expect("an API link")..];
    let unsubscribed = client
        .post(format!("{}{path}", running.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(unsubscribed.status(), 200);
    let second = complete_session(&client, &running.base, "parent@example.com").await;
    assert_eq!(second["report_email"], "suppressed");
    let _ = running.child.kill();
    let output = running.child.wait_with_output_ref();
    let stdout = String::from_utf8_lossy(&output);
    assert!(
        stdout.contains("Email suppressed: session_reports disabled for pa***@example.com"),
        "{stdout}"
    );
    assert!(!stdout.contains("parent@example.com"), "{stdout}");
    // Written to a pipe, the text logs carry no terminal colour codes.
    assert!(
        !stdout.contains('\u{1b}'),
        "colour codes in piped logs:\n{stdout}"
    );
}

trait OutputRef {
    fn wait_with_output_ref(&mut self) -> Vec<u8>;
}

impl OutputRef for std::process::Child {
    fn wait_with_output_ref(&mut self) -> Vec<u8> {
        use std::io::Read;
        let _ = self.wait();
        let mut out = Vec::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_end(&mut out);
        }
        out
    }
}

#[test]
fn a_second_serve_on_one_sqlite_file_refuses_to_start_while_jobs_still_run_beside_it() {
    let first = start_binary(&[] as &[(&str, &str)]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut second = herald()
        .env("PORT", port.to_string())
        .env("DATABASE_URL", first.database_url())
        .env("API_ACCESS_KEY", crate::helpers::API_KEY)
        .env("SECRET_KEY", "binary-test-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second herald serve kept running on the same SQLite file");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("another herald is already serving") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );

    let job = herald()
        .args(["jobs", "run", "purge_old"])
        .env("DATABASE_URL", first.database_url())
        .env("API_ACCESS_KEY", crate::helpers::API_KEY)
        .env("SECRET_KEY", "binary-test-secret")
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&job.stdout),
        String::from_utf8_lossy(&job.stderr),
    );
    assert!(job.status.success(), "{stderr}");
    // A shell command's standard output is its answer alone; its log goes to stderr.
    assert!(
        stdout.lines().count() == 1 && stdout.starts_with("purge_old succeeded (run "),
        "{stdout}"
    );
    let logged: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(
        logged.iter().any(|line| line["message"] == "job succeeded"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_flood_from_a_refused_client_is_logged_once_not_once_per_request() {
    let mut running = start_binary(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("RATE_LIMIT_MAX_REQUESTS", "5"),
    ]);
    // Read the logs as they come, so a process that logged every request could not block
    // on a full pipe and hide it.
    let mut stdout = running.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        out
    });
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/stats/dashboard", running.base);
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let answers = futures_util::future::join_all(
            (0..50).map(|_| async { client.get(&url).send().await.unwrap().status().as_u16() }),
        )
        .await;
        statuses.extend(answers);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(refused, statuses.len() - 5);
    // Every refusal is counted.
    let metrics = client
        .get(format!("{}/metrics", running.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = crate::helpers::metric_value(&metrics, "rate_limit_hits_total{group=\"stats\"}")
        .unwrap_or_else(|| panic!("no hit counter:\n{metrics}"));
    assert_eq!(hits as usize, refused);

    let _ = running.child.kill();
    let _ = running.child.wait();
    let logs = reader.join().unwrap();
    let refusal_lines = logs
        .lines()
        .filter(|l| l.contains("rate_limit_exceeded"))
        .count();
    let access_lines = logs
        .lines()
        .filter(|l| l.contains("herald::access") && l.contains("/api/v1/stats/dashboard"))
        .count();
    assert_eq!(refusal_lines, 1, "one line for the client's first refusal");
    assert_eq!(
        access_lines, 5,
        "an access line for each admitted request only"
    );
    assert!(
        logs.lines().count() < 50,
        "{refused} refusals wrote {} lines",
        logs.lines().count()
    );
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A database that cannot be reached is named with why, not with the pool's "timed out".
#[test]
fn an_unreachable_postgresql_is_reported_with_its_cause() {
    let output = herald()
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/herald", closed_port()),
        )
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Connection refused") && !stderr.contains("timed out"),
        "{stderr}"
    );
}

/// A wrong `REDIS_URL` is said at start, not only shown in `/health` and the metrics.
#[test]
fn an_unreachable_redis_is_pointed_out_as_herald_starts() {
    let redis = format!("redis://127.0.0.1:{}", closed_port());
    let mut running = start_binary(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "info"),
        ("REDIS_URL", redis.as_str()),
    ]);
    let stdout = std::io::BufReader::new(running.child.stdout.take().unwrap());
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("unreachable as the shard starts") => break line,
            Ok(_) => {}
            Err(_) => panic!("no warning about Redis"),
        }
    };
    let _ = running.child.kill();
    let _ = running.child.wait();
    assert!(
        warning.contains("\"level\":\"WARN\"") && warning.contains("RATE_LIMIT_FAIL_MODE"),
        "{warning}"
    );
}

/// Behind a proxy that `TRUSTED_PROXIES` does not name, every client would share the proxy's
/// window and the only sign would be refusals: herald says so in the log, once.
#[tokio::test]
async fn a_forwarded_header_from_an_untrusted_peer_is_pointed_out_once() {
    let mut running = start_binary(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "info")]);
    let stdout = running.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut out);
        out
    });
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let answer = client
            .get(format!("{}/api/v1/stats/dashboard", running.base))
            .header("X-Forwarded-For", "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let _ = running.child.kill();
    let _ = running.child.wait();
    let logs = reader.join().unwrap();
    let said: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("not in TRUSTED_PROXIES"))
        .collect();
    assert_eq!(said.len(), 1, "{logs}");
    assert!(
        said[0].contains("\"level\":\"WARN\"")
            && said[0].contains("127.0.0.x")
            && !said[0].contains("203.0.113"),
        "{}",
        said[0]
    );
}

/// A migrated SQLite database in a directory of its own (kept while the directory lives),
/// its URL, and a store open on it.
async fn migrated_sqlite() -> (tempfile::TempDir, String, herald::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let store = herald::store::Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (dir, url, store)
}

/// `herald` as an operator's shell named `ops-shell` runs it on the database at `url`.
pub(crate) fn ops_shell(url: &str) -> std::process::Command {
    let mut command = herald();
    command
        .env("DATABASE_URL", url)
        .env("API_ACCESS_KEY", crate::helpers::API_KEY)
        .env("SECRET_KEY", "binary-test-secret")
        .env("HERALD_INSTANCE", "ops-shell");
    command
}

/// The lift is audited under the shell that made it, and `herald audit` lists it.
#[tokio::test]
async fn the_cli_lists_and_lifts_suppressions() {
    let (_dir, url, store) = migrated_sqlite().await;
    herald::store::suppressions::suppress(
        &store,
        "gone@example.com",
        herald::store::suppressions::Reason::Bounced,
        "smtp",
        Some("550 5.1.1 no such user"),
        0,
    )
    .await
    .unwrap();
    store.close().await;
    let run = |args: &[&str]| ops_shell(&url).args(args).output().unwrap();
    let listed = run(&["suppressions", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{text}");
    assert!(
        text.contains("gone@example.com") && text.contains("bounced") && text.contains("5.1.1"),
        "{text}"
    );
    assert!(text.contains("1 of 1 shown"), "{text}");
    let removed = run(&["suppressions", "remove", "gone@example.com"]);
    assert!(removed.status.success());
    let again = run(&["suppressions", "remove", "gone@example.com"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not suppressed"));
    let bad = run(&["suppressions", "remove", "not-an-address"]);
    assert!(!bad.status.success());

    let audit = run(&["audit", "--action", "suppression.lift"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("suppression.lift"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("cli@ops-shell") && line.contains("go***@example.com"),
        "{line}"
    );
    assert!(line.contains("bounced (smtp) -> -"), "{line}");
    assert!(!text.contains("gone@example.com"), "{text}");
    assert!(text.contains("1 of 1 shown"), "{text}");
    let refused = run(&["audit", "--since", "last week"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--since"));
}

/// Another sender's bounces from a file (and one named): a wrong line is named with its
/// number and nothing is added; then all are, audited under the shell, the addresses masked.
#[tokio::test]
async fn the_cli_adds_suppressions_from_a_file() {
    let (dir, url, store) = migrated_sqlite().await;
    store.close().await;
    let list = dir.path().join("bounces.txt");
    std::fs::write(
        &list,
        "# bounces from the old sender\nold.one@example.com\n\nnot an address\n",
    )
    .unwrap();
    let run = |args: &[&str]| ops_shell(&url).args(args).output().unwrap();
    let file = list.to_str().unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec!["suppressions", "add", "--reason", "bounced", "--file", file];
        args.extend(extra);
        run(&args)
    };
    let refused = add(&["named@example.com"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("bounces.txt:4"), "{said}");
    let listed = run(&["suppressions", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("0 of 0 shown"));

    // As a spreadsheet exports it: a byte-order mark, Windows line ends; an address named
    // twice counts once. A dry run counts and adds nothing.
    std::fs::write(
        &list,
        "\u{feff}old.one@example.com\r\nOld.Two@Example.COM\r\nold.one@example.com\r\n",
    )
    .unwrap();
    let dry = add(&["named@example.com", "--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout).trim(),
        "would add 3, already suppressed 0 (dry run: nothing changed)"
    );
    let listed = run(&["suppressions", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("0 of 0 shown"));
    let added = add(&["named@example.com", "--detail", "moved from the old sender"]);
    let text = String::from_utf8_lossy(&added.stdout);
    assert!(added.status.success(), "{text}");
    assert_eq!(text.trim(), "added 3, already suppressed 0");
    let again = add(&[]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "added 0, already suppressed 2"
    );
    let listed = run(&["suppressions", "list", "--email", "old.one@example.com"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("1 of 1 shown"));
    // From standard input too.
    let mut piped = ops_shell(&url)
        .args([
            "suppressions",
            "add",
            "--reason",
            "complained",
            "--file",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        piped.stdin.as_mut().unwrap(),
        b"# one more\npiped@example.com\n",
    )
    .unwrap();
    let piped = piped.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        "added 1, already suppressed 0"
    );
    let listed = run(&["suppressions", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("Old.Two@example.com") && text.contains("operator"),
        "{text}"
    );
    assert!(text.contains("moved from the old sender"), "{text}");
    assert!(text.contains("4 of 4 shown"), "{text}");
    let complaints = run(&["suppressions", "list", "--reason", "complained"]);
    let text = String::from_utf8_lossy(&complaints.stdout);
    assert!(
        text.contains("piped@example.com") && text.contains("1 of 1 shown"),
        "{text}"
    );
    let by_operator = run(&["suppressions", "list", "--source", "operator"]);
    assert!(String::from_utf8_lossy(&by_operator.stdout).contains("4 of 4 shown"));
    let second = run(&["suppressions", "list", "--limit", "1", "--offset", "1"]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("1 of 4 shown"));
    // Carried to another deployment: the addresses alone, one a line, as `add` takes them.
    let exported = run(&["suppressions", "list", "--reason", "bounced", "--addresses"]);
    assert!(exported.status.success());
    assert_eq!(
        String::from_utf8_lossy(&exported.stdout),
        "Old.Two@example.com\nnamed@example.com\nold.one@example.com\n"
    );
    let mixed = run(&["suppressions", "list", "--addresses", "--limit", "5"]);
    assert_eq!(mixed.status.code(), Some(2), "the export is every address");
    let (_other_dir, other_url, other) = migrated_sqlite().await;
    other.close().await;
    let mut carried = ops_shell(&other_url)
        .args(["suppressions", "add", "--reason", "bounced", "--file", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(carried.stdin.as_mut().unwrap(), &exported.stdout).unwrap();
    let carried = carried.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&carried.stdout).trim(),
        "added 3, already suppressed 0"
    );
    let unknown = run(&["suppressions", "list", "--source", "mailchimp"]);
    assert_eq!(unknown.status.code(), Some(2), "clap refuses it");
    let missing = run(&["suppressions", "add", "--reason", "bounced"]);
    assert_eq!(missing.status.code(), Some(1));
    let wrong = run(&[
        "suppressions",
        "add",
        "--reason",
        "unsubscribed",
        "a@example.com",
    ]);
    assert!(!wrong.status.success());

    let audit = run(&["audit", "--action", "suppression.add"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("cli@ops-shell") && text.contains("3 addresses"),
        "{text}"
    );
    // One address alone is masked.
    assert!(text.contains("pi***@example.com"), "{text}");
    for address in ["piped@", "old.one@", "named@"] {
        assert!(!text.contains(address), "{text}");
    }

    // A list added by mistake is lifted the same way, from its file (another spelling of
    // an address once; one never suppressed counted apart), after a dry run.
    std::fs::write(
        &list,
        "old.one@example.com\nOLD.ONE@example.com\nold.two@example.com\nnever@example.com\n",
    )
    .unwrap();
    let remove = |extra: &[&str]| {
        let mut args = vec!["suppressions", "remove", "--file", file];
        args.extend(extra);
        run(&args)
    };
    let dry = remove(&["--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout).trim(),
        "would lift 2, not suppressed 1 (dry run: nothing changed)"
    );
    let listed = run(&["suppressions", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("4 of 4 shown"));
    let lifted = remove(&[]);
    assert!(lifted.status.success());
    assert_eq!(
        String::from_utf8_lossy(&lifted.stdout).trim(),
        "lifted 2, not suppressed 1"
    );
    let listed = run(&["suppressions", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("2 of 2 shown") && !text.to_lowercase().contains("old."),
        "{text}"
    );
    let again = remove(&[]);
    assert_eq!(again.status.code(), Some(1), "nothing was suppressed");
    let one = run(&["suppressions", "remove", "--dry-run", "piped@example.com"]);
    assert_eq!(
        String::from_utf8_lossy(&one.stdout).trim(),
        "would lift: piped@example.com (complained, operator)"
    );
}

/// The parents who unsubscribed from another sender, from a file: every line checked first,
/// each change recorded as the operator's, the whole audited once; run again, it changes
/// nothing more.
#[tokio::test]
async fn the_cli_unsubscribes_the_parents_of_a_file() {
    use herald::store::preferences::{self, Change, Source};
    let (dir, url, store) = migrated_sqlite().await;
    // One parent turned reports off through the application already.
    let reports_off = Change {
        session_reports: Some(false),
        ..Change::default()
    };
    preferences::change(&store, "already@example.com", &reports_off, Source::Api, 0)
        .await
        .unwrap();
    store.close().await;
    let list = dir.path().join("unsubscribed.txt");
    std::fs::write(
        &list,
        "# left the old sender\nleft@example.com\nalready@example.com\nnot an address\n",
    )
    .unwrap();
    let run = |args: &[&str]| ops_shell(&url).args(args).output().unwrap();
    let file = list.to_str().unwrap();
    let unsubscribe = |extra: &[&str]| {
        let mut args = vec!["recipients", "unsubscribe", "--type", "session_reports"];
        args.extend(["--file", file]);
        args.extend(extra);
        run(&args)
    };
    let refused = unsubscribe(&["named@example.com"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("unsubscribed.txt:4"), "{said}");

    // An address named twice counts once; a dry run counts and changes nothing.
    std::fs::write(
        &list,
        "left@example.com\nalready@example.com\nleft@example.com\n",
    )
    .unwrap();
    let dry = unsubscribe(&["Named@Example.COM", "--dry-run"]);
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout).trim(),
        "would unsubscribe from session_reports: 2 would change, 1 have it off already (dry run: nothing changed)"
    );
    let store = herald::store::Store::connect(&url).await.unwrap();
    assert_eq!(
        preferences::switches(&store, "left@example.com")
            .await
            .unwrap(),
        None,
        "a dry run keeps no preferences for an address it would change"
    );
    store.close().await;
    let done = unsubscribe(&["Named@Example.COM"]);
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{text}");
    assert_eq!(
        text.trim(),
        "unsubscribed from session_reports: 2 changed, 1 had it off already"
    );
    let again = unsubscribe(&[]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "unsubscribed from session_reports: 0 changed, 2 had it off already"
    );

    let store = herald::store::Store::connect(&url).await.unwrap();
    for (email, switches) in [
        ("left@example.com", Some((true, false))),
        ("Named@example.com", Some((true, false))),
        ("nobody@example.com", None),
    ] {
        assert_eq!(
            preferences::switches(&store, email).await.unwrap(),
            switches,
            "{email}"
        );
    }
    store.close().await;
    let shown = run(&["recipients", "show", "left@example.com"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("operator") && l.contains("session_reports")),
        "{text}"
    );
    let audit = run(&["audit", "--action", "recipient.unsubscribe"]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("cli@ops-shell") && text.contains("3 addresses"),
        "{text}"
    );
    assert!(!text.contains("example.com"), "{text}");
    let wrong = run(&[
        "recipients",
        "unsubscribe",
        "--type",
        "newsletters",
        "a@example.com",
    ]);
    assert!(!wrong.status.success());

    // Carried on to another deployment or sender: a file for each type, as this one takes.
    let both = run(&["recipients", "unsubscribe", "both@example.com"]);
    assert!(both.status.success());
    for (kind, addresses) in [
        (
            "session_reports",
            "Named@example.com\nalready@example.com\nboth@example.com\nleft@example.com\n",
        ),
        ("weekly_digest", "both@example.com\n"),
        ("all", "both@example.com\n"),
    ] {
        let listed = run(&["recipients", "unsubscribed", "--type", kind]);
        assert!(listed.status.success(), "{kind}");
        assert_eq!(String::from_utf8_lossy(&listed.stdout), addresses, "{kind}");
    }
}

/// `herald recipients show|erase` from a shell: the record shows the suppression; a dry run
/// counts, the erasure deletes and is audited under the shell's name, the address masked.
#[tokio::test]
async fn the_cli_erases_a_recipient() {
    let (_dir, url, store) = migrated_sqlite().await;
    for address in ["gone@example.com", "kept@example.com"] {
        herald::store::suppressions::suppress(
            &store,
            address,
            herald::store::suppressions::Reason::Bounced,
            "smtp",
            None,
            0,
        )
        .await
        .unwrap();
    }
    // A list kept before herald held an address once may hold another spelling of it.
    sqlx::query(
        "INSERT INTO email_suppressions (email, reason, source, created_at) \
         VALUES ('Gone@example.com', 'bounced', 'smtp', 0)",
    )
    .execute(store.writer())
    .await
    .unwrap();
    store.close().await;
    let run = |args: &[&str]| {
        let output = ops_shell(&url).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };
    let suppressions_of = |text: &str| {
        text.lines()
            .find(|l| l.trim_end().ends_with("email_suppressions"))
            .and_then(|l| l.split_whitespace().next())
            .map(str::to_owned)
    };
    let (code, text) = run(&["recipients", "show", "gone@example.com"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("weekly digest on, session reports on")
            && text.contains("suppressed: bounced since"),
        "{text}"
    );
    assert!(
        text.contains("herald also keeps Gone@example.com"),
        "the same address with a capital is pointed out: {text}"
    );
    let (code, text) = run(&["recipients", "erase", "gone@example.com", "--dry-run"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("not erased: 1 more address"), "{text}");
    assert!(
        text.contains("would be deleted for go***@example.com"),
        "{text}"
    );
    assert_eq!(suppressions_of(&text).as_deref(), Some("1"), "{text}");
    let (code, text) = run(&["recipients", "erase", "gone@example.com"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(suppressions_of(&text).as_deref(), Some("1"), "{text}");
    assert!(!text.contains("gone@example.com"), "{text}");
    assert!(
        text.contains(
            "kept: its opt-out of the weekly digest and session reports, under a one-way hash"
        ),
        "the bounce's stop outlives the erasure: {text}"
    );
    let (_, listed) = run(&["suppressions", "list"]);
    assert!(
        !listed.contains("gone@example.com") && listed.contains("kept@example.com"),
        "{listed}"
    );
    let (_, audit) = run(&["audit", "--action", "recipient.erase"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("cli@ops-shell") && l.contains("go***@example.com")),
        "{audit}"
    );
    assert!(
        audit.contains("1 of 1 shown"),
        "the dry run is not audited: {audit}"
    );
    let (code, text) = run(&["recipients", "show", "gone@example.com"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "herald keeps nothing about gone@example.com but its opt-out of the weekly digest \
             and session reports, kept under a one-way hash of the address since an erasure at"
        ) && text.contains("herald also keeps Gone@example.com"),
        "{text}"
    );
    // Its other spelling's bounce still stops its mail, and the operator is told.
    assert!(
        text.contains("its other spellings stop its mail too")
            && text.contains("suppressed: bounced since"),
        "{text}"
    );
    let (code, _) = run(&["recipients", "erase", "not-an-address"]);
    assert_ne!(code, Some(0));
}

/// `herald email logs` reads a recipient's ledger as the admin route shows it.
#[tokio::test]
async fn the_cli_shows_a_recipients_ledger() {
    let smtp = crate::smtp::SmtpServer::start().await;
    let app = crate::email::spawn_mail_app_with(crate::helpers::Backend::Sqlite, &smtp, &[]).await;
    let parent = "ledger.parent@example.com";
    crate::email::complete_for(&app, parent).await;
    crate::email::wait_ledger(&app, parent, "sent", |rows| rows[0]["status"] == "sent").await;
    let url = app.database_url();
    let shown = ops_shell(&url)
        .args(["email", "logs", parent])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("session_reports"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(" sent "), "{row}");
    assert!(text.contains("1 shown"), "{text}");
    // Asked with capitals the address was not given with: none shown, and the one kept named.
    let other = ops_shell(&url)
        .args(["email", "logs", "Ledger.Parent@example.com"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&other.stdout);
    assert!(
        text.contains("0 shown") && text.contains("herald also keeps ledger.parent@example.com"),
        "{text}"
    );
    let bad = ops_shell(&url)
        .args(["email", "logs", "nobody"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// A mail server's refusal is text from outside: one that carries escape sequences (clear
/// the screen, retitle the window, recolour) and a carriage return reaches the operator's
/// terminal written out, never as the bytes that would act on it, in the ledger and the
/// suppression list alike.
#[tokio::test]
async fn a_hostile_refusal_reaches_the_terminal_written_out() {
    let smtp = crate::smtp::SmtpServer::start().await;
    smtp.script_replies(&["550 5.1.1 \u{1b}[2J\u{1b}]0;owned\u{7}gone\rforged".to_owned()]);
    let app = crate::email::spawn_mail_app_with(crate::helpers::Backend::Sqlite, &smtp, &[]).await;
    let parent = "hostile.parent@example.com";
    crate::email::complete_for(&app, parent).await;
    crate::email::wait_ledger(&app, parent, "failed", |rows| {
        rows[0]["status"] != "pending" && rows[0]["status"] != "sending"
    })
    .await;
    let url = app.database_url();
    for args in [
        &["email", "logs", parent][..],
        &["suppressions", "list"],
        &["recipients", "show", parent],
    ] {
        let shown = ops_shell(&url).args(args).output().unwrap();
        assert!(shown.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(
            !shown
                .stdout
                .iter()
                .any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
            "{args:?}: {text:?}"
        );
        assert!(
            text.contains(r"\u{1b}[2J\u{1b}]0;owned\u{7}gone\u{d}forged"),
            "{args:?}: {text}"
        );
    }
}

/// `herald replicas` beside a running replica: it lists it, names the shared settings this
/// environment has otherwise (never a value), and exits 1 then, 0 when they agree.
#[test]
fn the_cli_compares_this_environment_with_the_replicas_serving() {
    let running = start_binary(&[("SESSION_REPORT_LIMIT", "5")]);
    let url = running.database_url();
    let run = |extra: &[(&str, &str)]| {
        let mut command = herald();
        command
            .arg("replicas")
            .env("DATABASE_URL", &url)
            .env("API_ACCESS_KEY", crate::helpers::API_KEY)
            .env("SECRET_KEY", "binary-test-secret")
            .env("SESSION_REPORT_LIMIT", "5");
        for (k, v) in extra {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stdout, stderr)
    };
    let (code, stdout, _) = run(&[]);
    assert_eq!(code, Some(0), "{stdout}");
    // The replica's default name: this host and its port.
    let port = format!(":{}", running.base.rsplit(':').next().unwrap());
    let line = stdout
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|name| name.ends_with(&port))
        })
        .unwrap_or_else(|| panic!("the replica on {port} in {stdout}"));
    assert!(line.trim_end().ends_with(" -"), "{line}");
    // A deploy script whose environment writes out the defaults the replica left unset
    // changes nothing: settings are compared by the value in force.
    let (code, stdout, _) = run(&[
        ("PURGE_SCHEDULE", "30 3 * * *"),
        ("MISSED_RUN_POLICY", "CATCH_UP"),
        ("SMTP_PORT", "0587"),
        ("SESSION_REPORT_LIMIT", " 5"),
    ]);
    assert_eq!(code, Some(0), "{stdout}");

    let (code, stdout, stderr) = run(&[
        ("SESSION_REPORT_LIMIT", "50"),
        ("PURGE_SCHEDULE", "0 4 * * *"),
    ]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("PURGE_SCHEDULE, SESSION_REPORT_LIMIT"),
        "{stdout}"
    );
    assert!(
        stderr.contains("1 of 1 replicas run with other values"),
        "{stderr}"
    );
    // Under another signing key nothing else can be compared: the key alone is named.
    let (code, stdout, _) = run(&[
        ("SESSION_REPORT_LIMIT", "50"),
        ("SECRET_KEY", "another-signing-key"),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    let line = stdout.lines().find(|l| l.contains(&port)).unwrap();
    assert!(line.trim_end().ends_with(" SECRET_KEY"), "{line}");
    assert!(!stdout.contains("another-signing-key"), "{stdout}");
}

/// `.eml` files written to `dir` so far.
fn emails_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count()
    })
}

async fn wait_emails(dir: &std::path::Path, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while emails_in(dir) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} emails written",
            emails_in(dir)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_without_sending_anything_again() {
    let (first_out, second_out, backup_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let file_provider = |dir: &tempfile::TempDir| {
        vec![
            ("EMAIL_PROVIDER", "file".to_owned()),
            ("EMAIL_FILE_DIR", dir.path().display().to_string()),
            ("EMAIL_POLL_INTERVAL_MS", "50".to_owned()),
        ]
    };
    let vars = file_provider(&first_out);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut running = start_binary(&vars);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    for i in 0..5 {
        complete_session(&client, &running.base, &format!("parent{i}@example.com")).await;
    }
    wait_emails(first_out.path(), 5).await;
    // Their outcomes are written just after the files: wait for the ledger to say sent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let logs: serde_json::Value =
            email_logs(&client, &running.base, "parent4@example.com").await;
        if logs["entries"][0]["status"] == "sent" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{logs}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // While it serves, traffic going on.
    let traffic = {
        let (client, base) = (client.clone(), running.base.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                client
                    .post(format!("{base}/api/v1/sessions/start"))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let copy = backup_dir.path().join("herald.db");
    let backup = || {
        herald()
            .args(["backup", copy.to_str().unwrap()])
            .env("DATABASE_URL", running.database_url())
            .env("API_ACCESS_KEY", crate::helpers::API_KEY)
            .env("SECRET_KEY", "binary-test-secret")
            .output()
            .unwrap()
    };
    let backed_up = backup();
    assert!(
        backed_up.status.success(),
        "{}",
        String::from_utf8_lossy(&backed_up.stderr)
    );
    // It holds parents' addresses: its owner's alone.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    traffic.await.unwrap();
    let again = backup();
    assert_eq!(
        again.status.code(),
        Some(2),
        "an existing file is never overwritten"
    );
    let _ = running.child.kill();
    let _ = running.child.wait();

    // Restored: the five sent emails stay sent; a new one goes out alone.
    let mut vars = file_provider(&second_out);
    vars.push(("DATABASE_URL", format!("sqlite://{}", copy.display())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let restored = start_binary(&vars);
    complete_session(&client, &restored.base, "parent9@example.com").await;
    wait_emails(second_out.path(), 1).await;
    let logs: serde_json::Value = email_logs(&client, &restored.base, "parent0@example.com").await;
    assert_eq!(logs["entries"][0]["status"], "sent", "{logs}");
    assert_eq!(
        emails_in(second_out.path()),
        1,
        "nothing sent before the backup went again"
    );
}

/// An SMTP server taking `ms` a message, and the variables that point herald at it.
pub async fn slow_smtp(ms: u64) -> (crate::smtp::SmtpServer, Vec<(&'static str, String)>) {
    let smtp = crate::smtp::SmtpServer::start().await;
    smtp.slow(ms);
    let mut vars = std::collections::HashMap::new();
    smtp.configure(&mut vars);
    let vars = vars
        .into_iter()
        .map(|(k, v)| (&*String::leak(k), v))
        .collect();
    (smtp, vars)
}

/// SIGTERM while emails are being sent: the sends in flight finish and are recorded, the
/// process exits 0 within its grace period, and after a restart every email has arrived
/// exactly once.
#[tokio::test]
async fn sigterm_while_sending_finishes_what_is_in_flight_and_loses_nothing() {
    const EMAILS: usize = 20;
    let (smtp, mut vars) = slow_smtp(150).await;
    vars.extend([
        ("EMAIL_SEND_CONCURRENCY", "4".to_owned()),
        ("SHUTDOWN_TIMEOUT_SECONDS", "10".to_owned()),
        ("LOG_LEVEL", "error".to_owned()),
    ]);
    let mut first = start_binary(&vars);
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    for i in 0..EMAILS {
        complete_session(&client, &first.base, &format!("parent{i}@example.com")).await;
    }
    smtp.wait_for(2).await;
    let signalled = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < std::time::Duration::from_secs(12),
            "still running past its grace period"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");

    // Started again on the same database, it sends the rest.
    let url = first.database_url();
    vars.push(("DATABASE_URL", url));
    let second = start_binary(&vars);
    let received = smtp.wait_for(EMAILS).await;
    // Count once no row is left pending or sending.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut open = 0;
        for i in 0..EMAILS {
            let logs = email_logs(&client, &second.base, &format!("parent{i}@example.com")).await;
            if logs["entries"][0]["status"] != "sent" {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} not sent");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let received = smtp.received().len().max(received.len());
    let ids: std::collections::HashSet<String> = smtp
        .received()
        .iter()
        .map(crate::replicas::message_id)
        .collect();
    assert_eq!(ids.len(), EMAILS, "none lost");
    assert_eq!(received, EMAILS, "none sent twice");
}

/// `kill -9` in the middle of sending, five times over 500 report emails, each time
/// restarted on the same database; counted as a total-queue checker does: every email
/// arrives, and one arrives twice only if it was in flight at a kill, with the same
/// Message-ID. What was in flight goes out as soon as herald is back (on SQLite it does not
/// wait for the two-minute lease).
#[tokio::test]
async fn kill_9_mid_send_loses_nothing_and_repeats_only_what_was_in_flight() {
    const EMAILS: usize = 500;
    const KILLS: usize = 5;
    const CONCURRENCY: usize = 8;
    let (smtp, mut vars) = slow_smtp(20).await;
    vars.extend([
        ("EMAIL_SEND_CONCURRENCY", CONCURRENCY.to_string()),
        ("SESSION_REPORT_LIMIT", "1000".to_owned()),
        ("LOG_LEVEL", "error".to_owned()),
    ]);
    let first = start_binary(&vars);
    let url = first.database_url();
    herald::install_tls_provider();
    let client = reqwest::Client::new();
    // Queue them all, 25 at a time.
    for chunk in (0..EMAILS).collect::<Vec<_>>().chunks(25) {
        futures_util::future::join_all(chunk.iter().map(|i| {
            let (client, base) = (&client, &first.base);
            async move { complete_session(client, base, &format!("parent{i}@example.com")).await }
        }))
        .await;
    }
    // Every process so far; the first holds the database's directory.
    let mut processes = vec![first];
    let mut restarted_at = std::time::Instant::now();
    // How many messages had arrived at each kill.
    let mut kills = Vec::with_capacity(KILLS);
    for kill in 1..=KILLS {
        // Kill once a further share of the emails has arrived.
        let target = (EMAILS * kill / (KILLS + 1)).min(EMAILS - 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while smtp.count() < target {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck before kill {kill}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let running = processes.last_mut().unwrap();
        let _ = running.child.kill();
        let _ = running.child.wait();
        kills.push(smtp.count());
        let mut vars = vars.clone();
        vars.push(("DATABASE_URL", url.clone()));
        processes.push(start_binary(&vars));
        restarted_at = std::time::Instant::now();
    }
    // Everything arrives, soon after the last restart.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ids = loop {
        // Counting is cheap; reading every message's Message-ID is not: only once enough
        // have arrived.
        if smtp.count() >= EMAILS {
            let ids: std::collections::HashSet<String> = smtp
                .received()
                .iter()
                .map(crate::replicas::message_id)
                .collect();
            if ids.len() >= EMAILS {
                break ids;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {EMAILS} arrived",
            smtp.count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let caught_up = restarted_at.elapsed();
    assert_eq!(ids.len(), EMAILS, "none lost");
    let received = smtp.count();
    let twice = received - EMAILS;
    // A repeat is only of a message in flight at a kill: its first copy arrived before that
    // kill (or was one of the sends under way), its second after it.
    let order: Vec<String> = smtp
        .received()
        .iter()
        .map(crate::replicas::message_id)
        .collect();
    for (second, id) in order.iter().enumerate() {
        if let Some(first) = order[..second].iter().position(|earlier| earlier == id) {
            assert!(
                kills
                    .iter()
                    .any(|&at| first < at + CONCURRENCY && second >= at),
                "{id} arrived as message {first} and again as {second}, not across a kill ({kills:?})"
            );
        }
    }
    // Far inside the two-minute lease: nothing waited for it (the debug build sends a
    // dozen emails a second, so the last sixth of them takes a few seconds).
    assert!(
        caught_up < std::time::Duration::from_secs(60),
        "the last emails waited {caught_up:?} after the restart"
    );
    eprintln!(
        "{EMAILS} emails, {KILLS} kills: {received} received, {} distinct, {twice} twice (same Message-ID), all in {:.1} s after the last restart",
        ids.len(),
        caught_up.as_secs_f64()
    );
}

/// Started with a low soft limit on open files, `herald serve` raises it to the hard limit,
/// which its default connection limit follows.
#[test]
fn serve_raises_its_limit_on_open_files_to_the_hard_limit() {
    let mut shell = std::process::Command::new("sh");
    shell
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "-c",
            "ulimit -Sn 256 && exec \"$0\" serve",
            env!("CARGO_BIN_EXE_herald"),
        ]);
    let running = start_binary_as(shell, &[("LOG_LEVEL", "warn")]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", running.child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .expect("a limit on open files")
        .split_whitespace()
        .collect();
    let (soft, hard) = (open_files[0], open_files[1]);
    assert_ne!(
        hard, "256",
        "the hard limit leaves nothing to raise: {limits}"
    );
    assert_eq!(soft, hard, "{limits}");
}
