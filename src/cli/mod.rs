//! The command line: `herald serve` (the default) here; `migrate [status]` and `backup` in
//! `cli/database.rs`, `digest` and `jobs` in `cli/jobs.rs`, `email` and `suppressions` in
//! `cli/email.rs`, `replicas` in `cli/replicas.rs`.
//!
//! Order at start matters: configuration first (exit 2 on any problem), then the TLS
//! provider, Sentry (before the runtime, so its guard outlives every task), logging, and
//! only then the runtime.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, KeysConfig};
use crate::startup::{Application, Stopped, shutdown_signal};

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
    /// Run the weekly digest now (queued emails are sent by the running service).
    Digest {
        /// Report who would get a digest and why others would not; write and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// The first day of the week to report (YYYY-MM-DD); default: the seven days before today.
        /// A week whose digest ran well is not run again (exit 3); one whose run failed is.
        /// A week older than the send log keeps (RETENTION_SEND_LOG_DAYS) is refused.
        #[arg(long, value_name = "YYYY-MM-DD")]
        start_date: Option<String>,
        /// With local delivery, the digest of one zone's recipients (an IANA name, e.g.
        /// Asia/Tokyo); default: the service's zone (DIGEST_TIMEZONE).
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
    },
    /// List the scheduled jobs, or run one now.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Copy the SQLite database to a new file while herald serves (a consistent snapshot,
    /// `VACUUM INTO`); on PostgreSQL use `pg_dump`.
    Backup {
        /// The file to write; it must not exist yet.
        path: std::path::PathBuf,
    },
    /// The addresses herald no longer mails after a hard bounce or a complaint.
    Suppressions {
        #[command(subcommand)]
        action: SuppressionsAction,
    },
    /// Look at the emails herald sends, and send a failed one again.
    Email {
        #[command(subcommand)]
        action: EmailAction,
    },
    /// The replicas serving the database now, and for each the settings every replica must
    /// share (DEPLOYMENT.md) that it has otherwise than this environment, by name; exit 1 if
    /// any replica differs.
    Replicas,
    /// What herald keeps about a parent's address, and erasing it, as the parent may ask.
    Recipients {
        #[command(subcommand)]
        action: RecipientsAction,
    },
    /// The email templates, without a database or any other setting: write out the shipped
    /// ones to start a deployment's own (`export`), or try a directory of overrides as a
    /// start would (`check`).
    Templates {
        #[command(subcommand)]
        action: TemplatesAction,
    },
    /// Try this environment before it serves, changing no data and sending nothing: every
    /// setting read as a start reads them (each problem on a line, exit 2), then each
    /// service they name reached as herald reaches it: the database and its migrations,
    /// Redis, the mail server (connected and logged in to) or SendGrid (its key may send
    /// mail), and herald's own address, where the links in emails lead; and the TXT record
    /// DNS must publish for the DKIM key. One line each; exit 1 when one cannot be reached.
    /// For a deploy pipeline, before the new settings reach a replica.
    Check,
    /// The changes operators made, newest first: who (an admin key's fingerprint, the first
    /// 12 hex digits of its SHA-256, or `cli@` and a shell's `HERALD_INSTANCE`), when, what,
    /// from what to what.
    Audit {
        /// Only the changes made at or after this instant (RFC 3339).
        #[arg(long, value_name = "INSTANT")]
        since: Option<String>,
        /// Only one kind of change: email.retry, email_throttle.reset, job.run,
        /// rate_limit.reset, rate_limit_policy.update, recipient.erase,
        /// recipient.unsubscribe, suppression.add or suppression.lift.
        #[arg(long)]
        action: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum EmailAction {
    /// Render an email as it would be sent, without sending or writing anything: prints the
    /// subject and the text part; `--out DIR` also writes the HTML part (and a report's PDF).
    Preview {
        #[command(subcommand)]
        which: PreviewWhich,
        /// A directory to write `email.html` (and `report.pdf`) into.
        #[arg(long, global = true, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Word it in this language's templates (`EMAIL_TEMPLATES_DIR/pl/`) instead of the
        /// recipient's: a translation seen with real data.
        #[arg(long, global = true, value_name = "TAG")]
        locale: Option<String>,
    },
    /// A recipient's send ledger, newest first, as `GET /admin/email/logs` shows it: each
    /// email's type, status and why, attempts, last error, and the replica that tried it.
    Logs {
        /// The recipient.
        email: String,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a failed email again, or every one that failed in a stretch of time (audited):
    /// each is due at once with its attempts counted afresh, keeps its throttle slot, and the
    /// running service sends it unless the recipient turned it off or was suppressed since.
    /// Exit 1 if the email named is not failed.
    Retry {
        /// The email's id in the ledger (`GET /admin/email/logs?email=…`).
        #[arg(required_unless_present = "failed_since")]
        id: Option<String>,
        /// Instead of one email, those that failed at or after this instant (RFC 3339).
        #[arg(long, conflicts_with = "id", value_name = "INSTANT")]
        failed_since: Option<String>,
        /// ...and before this one (RFC 3339); default: now.
        #[arg(long, requires = "failed_since", value_name = "INSTANT")]
        failed_until: Option<String>,
        /// Only `session_reports` or only `weekly_digest`.
        #[arg(long = "type", requires = "failed_since", value_name = "TYPE")]
        kind: Option<String>,
        /// Count the failed emails in that stretch; change nothing.
        #[arg(long, requires = "failed_since")]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PreviewWhich {
    /// The report of a session.
    Report {
        /// The session's id.
        #[arg(long)]
        session_id: String,
    },
    /// A recipient's weekly digest.
    Digest {
        /// The recipient.
        #[arg(long)]
        email: String,
        /// The first day of the week (YYYY-MM-DD); default: the seven days before today in the
        /// recipient's zone with local delivery (else in `DIGEST_TIMEZONE`).
        #[arg(long, value_name = "YYYY-MM-DD")]
        week: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RecipientsAction {
    /// Everything herald keeps about the address: what it receives and every change to that
    /// (with where it came from), its suppression, the sessions reported to it with their
    /// learners' names, and its send ledger.
    Show {
        /// The parent's address.
        email: String,
    },
    /// Delete everything herald keeps about the address: the sessions reported to it with
    /// their learners' names and events, its send ledger, throttle, preferences and their
    /// history, suppression and bounce events (audited, the address masked). What it had
    /// turned off (both types for a suppression) is kept under a one-way hash of the address
    /// and nothing else, so it is not mailed again if it comes back; a type turned back on
    /// lifts it. Backups taken before keep it until they are rotated.
    Erase {
        /// The parent's address.
        email: String,
        /// Count what would go; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Turn emails off for addresses, as their unsubscribe links would, recorded as the
    /// operator's doing (audited once): the parents who unsubscribed from another sender,
    /// when moving to herald. Addresses are changed two hundred to a transaction; run
    /// again, it changes nothing more. A parent can turn them back on from the link in any
    /// email.
    Unsubscribe {
        /// The parents' addresses.
        emails: Vec<String>,
        /// A file of addresses, one a line (`-`: standard input); blank lines and lines that
        /// start with `#` are passed over. Every address is checked before any is changed.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// What to turn off.
        #[arg(long = "type", value_name = "TYPE", default_value = "all",
              value_parser = ["all", "session_reports", "weekly_digest"])]
        kind: String,
        /// Count how many would change and how many have it off already; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the addresses that have emails turned off, one a line, in the order of the
    /// addresses: the file `herald recipients unsubscribe --file` takes, to carry them to
    /// another deployment or sender (one file for each `--type`). What an erasure kept of
    /// an address is a one-way hash of it, and is not among them.
    Unsubscribed {
        /// What they turned off: `all` (both types), `session_reports` or `weekly_digest`
        /// (each with those who turned both off).
        #[arg(long = "type", value_name = "TYPE", default_value = "all",
              value_parser = ["all", "session_reports", "weekly_digest"])]
        kind: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SuppressionsAction {
    /// Suppressed addresses, newest first, with why, since when and from which source.
    List {
        /// Only this address, under any spelling (the same address but for capitals).
        #[arg(long)]
        email: Option<String>,
        /// Only those suppressed for this reason.
        #[arg(long, value_parser = ["bounced", "complained"])]
        reason: Option<String>,
        /// Only those from this source: `smtp` (a refusal during the SMTP conversation),
        /// `webhook`, `sendgrid` (the events webhooks) or `operator` (added by hand).
        #[arg(long, value_parser = crate::store::suppressions::SOURCES)]
        source: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// How many of the newest to pass over first (with `--limit`, to page through a long
        /// list).
        #[arg(long, default_value_t = 0)]
        offset: i64,
        /// Print only the addresses, one a line, every one that matches, in the order of
        /// the addresses: a file `herald suppressions add --file` takes, to carry the list
        /// to another deployment or sender (one file for each `--reason`).
        #[arg(long, conflicts_with_all = ["limit", "offset"])]
        addresses: bool,
    },
    /// Add addresses to the list, so herald never mails them (audited; all or none): another
    /// sender's bounces and complaints when moving to herald, or an address known not to
    /// want or take mail. An address suppressed already keeps its first reason.
    Add {
        /// Addresses to suppress.
        emails: Vec<String>,
        /// A file of addresses, one a line (`-`: standard input); blank lines and lines that
        /// start with `#` are passed over.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Why: `bounced` (the mailbox does not take mail) or `complained` (its owner
        /// reported the mail, or asked never to be mailed).
        #[arg(long, value_parser = ["bounced", "complained"])]
        reason: String,
        /// Why, in your words, shown with each suppression (at most 200 characters).
        #[arg(long)]
        detail: Option<String>,
        /// Count how many would be added and how many are suppressed already; change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Lift the suppression of addresses under every spelling, so they are mailed again
    /// (each audited): one, or a list added by mistake. Exit 1 when none was suppressed.
    Remove {
        /// The suppressed addresses.
        emails: Vec<String>,
        /// A file of addresses, one a line (`-`: standard input); blank lines and lines that
        /// start with `#` are passed over. Every address is checked before any is lifted.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Count how many are suppressed and would be lifted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsAction {
    /// Every job with its schedule, next run and last run; with local delivery, each zone's
    /// digest job too, with how many recipients it covers.
    List,
    /// Run a job now, recorded in the job ledger; its lease is renewed while it runs, so a
    /// serving replica never takes it over. A zone's digest: `herald digest --zone ZONE`.
    Run {
        #[arg(value_enum)]
        name: crate::jobs::JobName,
    },
}

#[derive(Subcommand, Debug)]
pub enum TemplatesAction {
    /// Write every shipped template into DIR, to start a deployment's own (a translation):
    /// edit the files, delete those kept as shipped, check them, and point
    /// `EMAIL_TEMPLATES_DIR` at DIR. A file already there is left as it is.
    Export {
        /// The directory to write into (made if missing).
        dir: std::path::PathBuf,
    },
    /// Check the overrides in DIR (default: `EMAIL_TEMPLATES_DIR`) and in its languages'
    /// directories (`DIR/pl/`) as a start would, each rendered with sample values, with the
    /// brand and footer of `EMAIL_BRAND_NAME` and `EMAIL_FOOTER_ADDRESS`: lists which
    /// templates they replace, or every problem with its file and line (exit 2).
    Check {
        /// The directory of overrides.
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// List every migration and when it was applied.
    Status,
}

/// Why a ledger row stands where it does: its reason, or the last error of its sends (a
/// mail server's reply among them), the addresses in it masked and written out for a
/// terminal.
fn why(row: &crate::store::ledger::LedgerRow) -> String {
    let why = row
        .reason
        .as_deref()
        .or(row.last_error.as_deref())
        .unwrap_or("");
    crate::redact::for_terminal(&crate::redact::mask_emails_in(why)).into_owned()
}

/// `println!` for what a command shows: a reader that has gone away (`| head`) is not an
/// error.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::show(&mut std::io::stdout(), &format!($($arg)*))
    };
}

mod audit;
mod check;
mod database;
mod email;
mod jobs;
mod recipients;
mod replicas;

use database::{backup, current_store, migrate, migrate_status, missing_database};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the configuration: it needs none, and reading it could make development keys.
    match cli.command {
        Some(Command::Templates {
            action: TemplatesAction::Check { dir },
        }) => return templates_check(dir),
        Some(Command::Templates {
            action: TemplatesAction::Export { dir },
        }) => return templates_export(&dir),
        _ => {}
    }
    // Before the configuration, whose default connection limit follows it.
    crate::raise_open_files_limit();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            for problem in errors.0 {
                eprintln!("configuration error: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Some(missing) = missing_database(&command, &config) {
        // Development keys made by this start, for a database that is elsewhere.
        if let Some(generated) = &config.keys.generated_secrets {
            let _ = std::fs::remove_file(&generated.file);
        }
        eprintln!(
            "error: no database at {}: `herald migrate` or `herald serve` creates it \
             (DATABASE_URL names the database)",
            missing.display()
        );
        return ExitCode::FAILURE;
    }
    if let Some(warning) = keys_made_for_existing_data(&config) {
        eprintln!("warning: {warning}");
    }
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
        let serving = matches!(command, Command::Serve);
        crate::telemetry::init_tracing(
            &config,
            if serving {
                crate::telemetry::LogTo::Stdout
            } else {
                crate::telemetry::LogTo::Stderr
            },
        );
        crate::telemetry::init_panic_log();
        let result = match command {
            Command::Serve => serve(config).await,
            Command::Migrate { action: None } => migrate(config).await,
            Command::Migrate {
                action: Some(MigrateAction::Status),
            } => migrate_status(config).await,
            Command::Digest {
                dry_run,
                start_date,
                zone,
            } => jobs::digest(config, dry_run, start_date, zone).await,
            Command::Jobs {
                action: JobsAction::List,
            } => jobs::jobs_list(config).await,
            Command::Jobs {
                action: JobsAction::Run { name },
            } => jobs::jobs_run(config, name.as_str(), None, None).await,
            Command::Suppressions { action } => email::suppressions(config, action).await,
            Command::Backup { path } => backup(config, &path).await,
            Command::Replicas => replicas::replicas(config).await,
            Command::Check => check::check(config).await,
            Command::Recipients {
                action: RecipientsAction::Show { email },
            } => recipients::show(config, &email).await,
            Command::Recipients {
                action: RecipientsAction::Erase { email, dry_run },
            } => recipients::erase(config, &email, dry_run).await,
            Command::Recipients {
                action:
                    RecipientsAction::Unsubscribe {
                        emails,
                        file,
                        kind,
                        dry_run,
                    },
            } => recipients::unsubscribe(config, emails, file.as_deref(), &kind, dry_run).await,
            Command::Recipients {
                action: RecipientsAction::Unsubscribed { kind },
            } => recipients::unsubscribed(config, &kind).await,
            Command::Templates {
                action: TemplatesAction::Check { dir },
            } => Ok(templates_check(dir)),
            Command::Templates {
                action: TemplatesAction::Export { dir },
            } => Ok(templates_export(&dir)),
            Command::Audit {
                since,
                action,
                limit,
            } => audit::audit(config, since.as_deref(), action.as_deref(), limit).await,
            Command::Email {
                action: EmailAction::Preview { which, out, locale },
            } => email::preview(config, which, out.as_deref(), locale).await,
            Command::Email {
                action: EmailAction::Logs { email, limit },
            } => email::logs(config, &email, limit).await,
            Command::Email {
                action:
                    EmailAction::Retry {
                        id,
                        failed_since,
                        failed_until,
                        kind,
                        dry_run,
                    },
            } => match (id, failed_since) {
                (Some(id), _) => email::retry(config, &id).await,
                (None, since) => {
                    let since = since.unwrap_or_default();
                    email::retry_failed(
                        config,
                        &since,
                        failed_until.as_deref(),
                        kind.as_deref(),
                        dry_run,
                    )
                    .await
                }
            },
        };
        match result {
            Ok(code) => code,
            Err(err) => {
                let text = error_text(&err);
                if serving {
                    // The service's own record of why it stopped, beside the line for
                    // whoever started it.
                    let masked = crate::redact::mask_emails_in(&text);
                    tracing::error!(error = %masked, "herald stopped");
                    sentry::capture_message(
                        &format!("herald stopped: {masked}"),
                        sentry::Level::Fatal,
                    );
                }
                eprintln!("error: {text}");
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

/// `herald templates export DIR`: the shipped templates written out, none overwritten.
fn templates_export(dir: &std::path::Path) -> ExitCode {
    if let Err(err) = std::fs::create_dir_all(dir) {
        eprintln!("error: {}: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, text) in crate::templates::Templates::shipped_files() {
        let path = dir.join(name);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        let line = match written {
            Ok(()) => format!("written   {}", path.display()),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                format!("kept      {} (already there)", path.display())
            }
            Err(err) => {
                eprintln!("error: {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        };
        if out!("{line}").is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// `herald templates check [DIR]`: the overrides in DIR loaded as a start loads them.
fn templates_check(dir: Option<std::path::PathBuf>) -> ExitCode {
    let Some(dir) = dir.or_else(|| std::env::var_os("EMAIL_TEMPLATES_DIR").map(Into::into)) else {
        eprintln!("error: name a directory of templates, or set EMAIL_TEMPLATES_DIR");
        return ExitCode::from(2);
    };
    if !dir.is_dir() {
        eprintln!("error: {} is not a directory", dir.display());
        return ExitCode::from(2);
    }
    let setting =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let loaded = crate::templates::Templates::load(
        Some(&dir),
        &setting("EMAIL_BRAND_NAME", "herald"),
        &setting("EMAIL_FOOTER_ADDRESS", ""),
    );
    match loaded {
        Ok(templates) => {
            let mut lines = Vec::new();
            for name in crate::templates::Templates::files() {
                let from = if dir.join(name).exists() {
                    "replaced"
                } else {
                    "shipped"
                };
                lines.push(format!("{from:<9} {name}"));
            }
            // A language's directory: the files it words its own way.
            for locale in templates.locales() {
                for name in crate::templates::Templates::files() {
                    if dir.join(locale).join(name).exists() {
                        lines.push(format!("{:<9} {locale}/{name}", "replaced"));
                    }
                }
            }
            for line in lines {
                if out!("{line}").is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("configuration error: {problem}");
            }
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: a cause whose text its error
/// already quotes (`database error: {0}`) is not repeated.
/// An address named on the command line, as the database keeps it.
fn parse_email(raw: &str) -> anyhow::Result<herald_actors::email::Email> {
    herald_actors::email::Email::parse(raw).map_err(|e| anyhow::anyhow!("{raw:?}: {e}"))
}

/// The addresses a command names and those of `file`, one a line (`-`: standard input; blank
/// lines and lines starting with `#` passed over), every one checked before the command
/// changes anything: a wrong one is named, with its file and line.
fn addresses(
    emails: Vec<String>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<herald_actors::email::Email>> {
    use anyhow::Context;
    let mut found = emails
        .iter()
        .map(|raw| parse_email(raw))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(path) = file {
        let text = if path == std::path::Path::new("-") {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        };
        // A spreadsheet's export may begin with a byte-order mark, which no address has.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let email = herald_actors::email::Email::parse(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
            found.push(email);
        }
    }
    if found.is_empty() {
        anyhow::bail!("no address given: name some, or --file");
    }
    Ok(found)
}

/// An instant as the commands show it, in UTC.
fn at(ms: i64) -> String {
    crate::store::instant(ms)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Who the audit log says made a change from this shell: `cli@` and its `HERALD_INSTANCE`
/// (the host's name unless set), as job runs from a shell are named.
fn actor(config: &Config) -> String {
    format!("cli@{}", config.server.instance)
}

fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Development keys made by this start for a database that already holds data (its keys
/// file was removed): the links in emails sent before were signed with the old key.
fn keys_made_for_existing_data(config: &Config) -> Option<String> {
    let generated = config.keys.generated_secrets.as_ref()?;
    let database = config.storage.sqlite_file()?;
    let lost = match (generated.secret_key, generated.api_access_key) {
        (true, true) => {
            "the unsubscribe and preference links in emails sent before no longer open, and \
             the admin key changed"
        }
        (true, false) => {
            "the unsubscribe and preference links in emails sent before no longer open"
        }
        _ => "the admin key changed",
    };
    std::fs::metadata(&database)
        .is_ok_and(|m| m.len() > 0)
        .then(|| {
            format!(
                "new development keys in {} for the existing database {}: {lost}",
                generated.file.display(),
                database.display()
            )
        })
}

/// What a start that generated development secrets says of them: the admin key itself
/// when it made it (the one way to learn it), never a key the environment gave.
fn generated_note(keys: &KeysConfig) -> Option<String> {
    let generated = keys.generated_secrets.as_ref()?;
    let file = generated.file.display();
    Some(if generated.api_access_key {
        format!(
            "Generated development API key (X-API-Key): {}\n  kept in {file}",
            keys.api_access_key.expose()
        )
    } else {
        format!(
            "Generated a development SECRET_KEY (it signs the links in emails)\n  kept in {file}"
        )
    })
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    for warning in config.production_warnings() {
        tracing::warn!("{warning}");
    }
    if let Some(note) = generated_note(&config.keys) {
        // Said once, on the start that generated them; kept in the file afterwards.
        out!("{note}")?;
    }
    // With JSON logs, standard output is JSON lines only, as a log collector reads them.
    let plain = config.telemetry.log_format == crate::config::LogFormat::Pretty;
    let app = Application::build(config).await?;
    if let Some(addr) = app.local_addr() {
        tracing::info!(%addr, "herald listening");
        if plain {
            out!("herald listening on http://{addr}")?;
        }
    }
    Ok(match app.run_until_stopped(shutdown_signal()).await? {
        Stopped::Graceful => ExitCode::SUCCESS,
        Stopped::Escalated => ExitCode::from(70),
    })
}

/// How many addresses an export reads from the database at a time.
const PAGE: i64 = 10_000;

/// Prints every address `page` reads, one a line: `page` is given the last address read
/// (none at first) and answers the next ones in their order, none at the end.
async fn print_pages<F, Fut>(mut page: F) -> anyhow::Result<()>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, crate::store::StoreError>>,
{
    let mut after = None;
    loop {
        let addresses = page(after).await?;
        for address in &addresses {
            out!("{address}")?;
        }
        match addresses.into_iter().last() {
            Some(last) => after = Some(last),
            None => return Ok(()),
        }
    }
}

/// Writes `text` and a newline to `out`; a reader that has gone away (a closed pipe) is not
/// an error.
fn show(out: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
    match writeln!(out, "{text}") {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::{error_text, generated_note};
    use crate::config::{Config, GeneratedSecrets};

    #[test]
    fn a_start_shows_the_admin_key_only_when_it_generated_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db", dir.path().display());
        let given = "0123456789abcdef0123456789abcdef";
        let mut keys = Config::from_lookup(&|name| match name {
            "API_ACCESS_KEY" => Some(given.into()),
            "DATABASE_URL" => Some(url.clone()),
            _ => None,
        })
        .unwrap()
        .keys;
        let generated = |api_access_key| GeneratedSecrets {
            file: ".herald-secrets".into(),
            api_access_key,
            secret_key: true,
        };
        keys.generated_secrets = Some(generated(false));
        let note = generated_note(&keys).unwrap();
        assert!(!note.contains(given), "{note}");
        assert!(
            note.contains("SECRET_KEY") && note.contains(".herald-secrets"),
            "{note}"
        );
        keys.generated_secrets = Some(generated(true));
        assert!(generated_note(&keys).unwrap().contains(given));
        keys.generated_secrets = None;
        assert_eq!(generated_note(&keys), None);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("database error: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn an_error_line_names_each_cause_once() {
        let quoted = anyhow::Error::new(Quoting(std::io::Error::other("no such table: sessions")));
        assert_eq!(
            error_text(&quoted),
            "database error: no such table: sessions"
        );
        let added = anyhow::Error::new(std::io::Error::other("connection refused"))
            .context("reading the preferences");
        assert_eq!(
            error_text(&added),
            "reading the preferences: connection refused"
        );
    }
}
