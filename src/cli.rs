//! The command line: `herald serve` (the default), `herald migrate [status]`.
//!
//! Order at start matters: configuration first (exit 2 on any problem), then the TLS
//! provider, Sentry (before the runtime, so its guard outlives every task), logging, and
//! only then the runtime.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::{Application, Stopped, shutdown_signal};
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "herald",
    version,
    about = "Records learning sessions and delivers report emails and weekly digests safely.",
    long_about = "Records learning sessions and delivers report emails and weekly digests: \
                  throttled per recipient, never sent twice, never to someone who unsubscribed.\n\n\
                  Configuration comes from environment variables; see README.md or .env.example."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and run the actors (the default).
    Serve,
    /// Apply pending database migrations, or list them with `status`.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// List every migration and when it was applied.
    Status,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            for problem in errors.0 {
                eprintln!("configuration error: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    crate::install_tls_provider();
    let sentry = crate::telemetry::init_sentry(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        crate::telemetry::init_tracing(&config);
        let result = match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate { action: None } => migrate(config).await,
            Command::Migrate {
                action: Some(MigrateAction::Status),
            } => migrate_status(config).await,
        };
        match result {
            Ok(code) => code,
            Err(err) => {
                tracing::error!(error = %crate::redact::mask_emails_in(&format!("{err:#}")), "herald failed");
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some(guard) = sentry {
        guard.flush(Some(std::time::Duration::from_secs(2)));
    }
    code
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    if let Some(file) = &config.generated_secrets {
        // Printed once, on the start that generated it; kept in the file afterwards.
        println!(
            "Generated development API key (X-API-Key): {}\n  kept in {}",
            config.api_access_key.expose(),
            file.display()
        );
    }
    let app = Application::build(config).await?;
    if let Some(addr) = app.local_addr() {
        tracing::info!(%addr, "herald listening");
        println!("herald listening on http://{addr}");
    }
    Ok(match app.run_until_stopped(shutdown_signal()).await? {
        Stopped::Graceful => ExitCode::SUCCESS,
        Stopped::Escalated => ExitCode::from(70),
    })
}

async fn migrate(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(config.database_url.expose()).await?;
    store.migrate().await?;
    let applied = store.migration_status().await?;
    println!(
        "{} migration(s) applied; the database is current",
        applied.len()
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn migrate_status(config: Config) -> anyhow::Result<ExitCode> {
    let store = Store::connect(config.database_url.expose()).await?;
    let migrations = store.migration_status().await?;
    println!("{:<8} {:<24} APPLIED AT (UTC)", "VERSION", "DESCRIPTION");
    let mut pending = 0;
    for m in &migrations {
        let applied = match m
            .applied_at_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            Some(at) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => {
                pending += 1;
                "pending".to_owned()
            }
        };
        println!("{:<8} {:<24} {applied}", m.version, m.description);
    }
    store.close().await;
    if pending > 0 {
        println!("{pending} pending; run `herald migrate` to apply");
    }
    Ok(ExitCode::SUCCESS)
}
