//! `herald check`: an environment tried before it serves, each service it names reached as
//! herald reaches it (a real SMTP conversation with STARTTLS and a login, the machine's
//! Redis, PostgreSQL, herald's own `/healthz`), nothing sent and no data changed.

use std::collections::HashMap;

use crate::cli::ops_shell;
use crate::helpers::{Backend, TestDatabase, postgres_available, spawn_app};
use crate::replicas::{free_port, redis_available};
use crate::smtp::{SmtpServer, TlsMode};

/// `herald check` on the database at `url` with `vars`: its exit code and each line of its
/// answer.
pub async fn check(url: &str, vars: &HashMap<String, String>) -> (Option<i32>, Vec<String>) {
    let mut command = ops_shell(url);
    command.envs(vars).arg("check");
    // On a thread of its own: the servers it reaches run on this test's runtime.
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    (
        output.status.code(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

/// How many migrations this build knows.
fn migrations() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite");
    std::fs::read_dir(dir).unwrap().count()
}

/// The line about `service`, which must be there.
pub fn line<'a>(lines: &'a [String], service: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.split_whitespace().next() == Some(service))
        .unwrap_or_else(|| panic!("no line for {service}: {lines:#?}"))
}

#[tokio::test]
async fn check_reaches_each_service_as_herald_does_and_sends_nothing() {
    let database = TestDatabase::new(Backend::Sqlite).await;
    let store = herald::store::Store::connect(&database.url).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let smtp = SmtpServer::start_tls(TlsMode::StartTls).await;
    smtp.require_login("herald", "right-password");
    let app = spawn_app(Backend::Sqlite).await;
    let mut vars = HashMap::new();
    smtp.configure(&mut vars);
    vars.insert("SMTP_USER".into(), "herald".into());
    vars.insert("SMTP_PASS".into(), "right-password".into());
    vars.insert("API_BASE_URL".into(), app.url(""));
    let redis = redis_available("check_reaches_each_service_as_herald_does_and_sends_nothing");
    if redis {
        vars.insert("REDIS_URL".into(), "redis://127.0.0.1:6379".into());
    }

    let (code, lines) = check(&database.url, &vars).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let migrated = line(&lines, "database");
    assert!(
        migrated.contains(" ok ")
            && migrated.contains(&format!("{0} of {0} migrations applied", migrations())),
        "{migrated}"
    );
    let email = line(&lines, "email");
    assert!(
        email.contains(" ok ") && email.contains("with STARTTLS, logged in"),
        "{email}"
    );
    assert_eq!(smtp.logins(), ["herald"], "it logged in as a send would");
    assert!(smtp.received().is_empty(), "it sent nothing");
    assert!(line(&lines, "links").contains(" ok "), "{lines:#?}");
    let limiter = line(&lines, "redis");
    if redis {
        assert!(limiter.contains(" ok "), "{limiter}");
    } else {
        assert!(limiter.contains("REDIS_URL not set"), "{limiter}");
    }

    // A wrong password, a Redis that is not there, herald's address not answering: each
    // said with why; the first two fail the check, the last (herald may not serve yet) warns.
    vars.insert("SMTP_PASS".into(), "wrong-password".into());
    let closed = free_port();
    vars.insert(
        "REDIS_URL".into(),
        format!("redis://:s3cret@127.0.0.1:{closed}"),
    );
    vars.insert("API_BASE_URL".into(), format!("http://127.0.0.1:{closed}"));
    let (code, lines) = check(&database.url, &vars).await;
    assert_eq!(code, Some(1), "{lines:#?}");
    let email = line(&lines, "email");
    assert!(
        email.contains("FAIL") && email.contains("(535): 5.7.8 Authentication credentials invalid"),
        "the server's refusal: {email}"
    );
    let limiter = line(&lines, "redis");
    assert!(
        limiter.contains("FAIL") && limiter.contains("Connection refused"),
        "{limiter}"
    );
    let links = line(&lines, "links");
    assert!(
        links.contains("warn") && links.contains("API_BASE_URL"),
        "{links}"
    );
    assert!(!lines.concat().contains("s3cret"), "{lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("2 of 5 cannot be reached as configured")
    );
    assert!(smtp.received().is_empty());
}

/// A PostgreSQL database is named by its server and name, never its user's password; one
/// not yet migrated is reached, and its migrations left to the start that applies them.
#[tokio::test]
async fn check_names_a_postgresql_database_without_its_password() {
    if !postgres_available("check_names_a_postgresql_database_without_its_password").await {
        return;
    }
    let database = TestDatabase::new(Backend::Postgres).await;
    let mut url = url::Url::parse(&database.url).unwrap();
    url.set_password(Some("s3cret-pw")).unwrap();
    let (code, lines) = check(url.as_str(), &HashMap::new()).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let reached = line(&lines, "database");
    let place = format!(
        "postgres {}:{}{}",
        url.host_str().unwrap(),
        url.port().unwrap_or(5432),
        url.path()
    );
    let known = migrations();
    assert!(
        reached.contains(&place)
            && reached.contains(&format!(
                "0 of {known} migrations applied, {known} to apply as herald starts"
            )),
        "{reached}"
    );
    assert!(!lines.concat().contains("s3cret"), "{lines:#?}");
    assert!(
        reached.contains(" ok ") && reached.contains("and this replica opens up to 10"),
        "{reached}"
    );

    // A pool larger than the server takes is warned of, not failed: herald starts with it,
    // and waits for connections under load.
    let larger = HashMap::from([("DATABASE_MAX_CONNECTIONS".to_owned(), "1000".to_owned())]);
    let (code, lines) = check(url.as_str(), &larger).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let crowded = line(&lines, "database");
    assert!(
        crowded.contains("warn") && crowded.contains("not room for them all"),
        "{crowded}"
    );
}

/// Before the first start on SQLite the file is not there: said on the database line, not
/// created, and the other services still tried.
#[tokio::test]
async fn check_on_a_sqlite_file_not_there_yet_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let (code, lines) = check(&url, &HashMap::new()).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    let database = line(&lines, "database");
    assert!(
        database.contains("warn") && database.contains("not there yet"),
        "{database}"
    );
    assert!(line(&lines, "email").contains(" ok "), "{lines:#?}");
    assert!(!file.exists(), "the check created the database");
}
