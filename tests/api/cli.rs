//! The binary itself: exit codes, `migrate`, `migrate status`, `--help`, `--version`.

use std::process::Command;

fn herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

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
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        stderr.contains("PORT:")
            && stderr.contains("API_ACCESS_KEY:")
            && stderr.contains("SECRET_KEY:")
    );
}

#[test]
fn migrate_then_status_lists_each_migration_with_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let status_before = herald()
        .env("DATABASE_URL", &url)
        .args(["migrate", "status"])
        .output()
        .unwrap();
    assert!(
        status_before.status.success(),
        "{}",
        String::from_utf8_lossy(&status_before.stderr)
    );
    assert!(String::from_utf8_lossy(&status_before.stdout).contains("pending"));

    let migrate = herald()
        .env("DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let status = herald()
        .env("DATABASE_URL", &url)
        .args(["migrate", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with('1'))
        .expect("version 1 listed");
    assert!(line.contains("initial") && line.contains(&today), "{text}");
    assert!(!text.contains("pending"));
    // Development secrets are kept beside the database.
    assert!(dir.path().join(".herald-secrets").exists());
}
