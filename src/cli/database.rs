//! The commands about the database itself: `herald migrate [status]` and `herald backup`,
//! and what every other command checks before it reads the data (the database exists and
//! is migrated). Only `serve` and `migrate` ever create or change the schema.

use std::process::ExitCode;

use super::Command;
use crate::config::Config;
use crate::store::Store;

/// The SQLite file a command would read, when it does not exist: only `serve` and `migrate`
/// create the database. Another command opening it would create an empty one and answer
/// from it (a backup of nothing, a digest for no one) instead of saying it is elsewhere.
pub(super) fn missing_database(command: &Command, config: &Config) -> Option<std::path::PathBuf> {
    // `serve` and `migrate` create it; `check` says it is not there on its database line,
    // creating nothing, and goes on to the other services.
    let handled = matches!(
        command,
        Command::Serve | Command::Migrate { action: None } | Command::Check
    );
    config
        .storage
        .sqlite_file()
        .filter(|file| !handled && !file.exists())
}

pub(super) async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(config.storage.database_url.expose()).await?;
    store.migrate().await?;
    let applied = store.migration_status().await?;
    out!(
        "{} migration(s) applied; the database is current",
        applied.len()
    )?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn migrate_status(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(config.storage.database_url.expose()).await?;
    let migrations = store.migration_status().await?;
    out!("{:<8} {:<24} APPLIED AT (UTC)", "VERSION", "DESCRIPTION")?;
    let mut pending = 0;
    for m in &migrations {
        let applied = match m.applied_at_ms {
            Some(ms) => super::at(ms),
            None => {
                pending += 1;
                "pending".to_owned()
            }
        };
        out!("{:<8} {:<24} {applied}", m.version, m.description)?;
    }
    let newer = store.newer_migrations().await?;
    for (version, description) in &newer {
        out!("{version:<8} {description:<24} applied by a newer herald")?;
    }
    store.close().await;
    if pending > 0 {
        out!("{pending} pending; run `herald migrate` to apply")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn backup(config: Config, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    if !config.storage.is_sqlite() {
        eprintln!(
            "herald backup copies a SQLite database; on PostgreSQL use pg_dump (see RUNBOOK.md)"
        );
        return Ok(ExitCode::from(2));
    }
    let store = Store::connect(config.storage.database_url.expose()).await?;
    // Created empty and private first (it holds parents' addresses); `VACUUM INTO` writes
    // into an empty file.
    let copied = match crate::secret::create_private(path) {
        Ok(_) => crate::store::backup::vacuum_into(&store, path).await,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            store.close().await;
            eprintln!("{}: already exists; give a new file", path.display());
            return Ok(ExitCode::from(2));
        }
        Err(err) => {
            store.close().await;
            anyhow::bail!("{}: cannot create: {err}", path.display());
        }
    };
    store.close().await;
    if copied.is_err() {
        let _ = std::fs::remove_file(path);
    }
    copied?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    out!("backed up to {} ({bytes} bytes)", path.display())?;
    Ok(ExitCode::SUCCESS)
}

/// The database, for a command that reads or changes its data: one whose migrations are
/// not all applied is refused with what to do, not answered with a missing table.
pub(super) async fn current_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(config.storage.database_url.expose()).await?;
    if !store.migrations_current().await? {
        store.close().await;
        anyhow::bail!(
            "the database is not migrated: run `herald migrate` first (`herald serve` migrates when it starts)"
        );
    }
    Ok(store)
}
