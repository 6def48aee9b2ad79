//! `herald check`: this environment tried before it serves. Every setting is read as a start
//! reads them (a problem stops it with exit 2, before this module), then each service the
//! settings name is reached as herald reaches it, changing no data and sending nothing: the
//! database, Redis, the email provider, and the address the links in emails lead to; and
//! the DKIM record DNS must publish for the key mail is signed with.

use std::process::ExitCode;
use std::time::Duration;

use herald_actors::limiter::SharedBackend;

use crate::config::Config;
use crate::store::{Backend, Store};

/// How long the database and the links may take to answer.
const WAIT: Duration = Duration::from_secs(5);

/// How one service answered.
enum Outcome {
    /// Reached, as herald will reach it.
    Reached(String),
    /// Not configured, and not needed.
    Unset(String),
    /// Something to look at that does not stop herald (its own address not answering
    /// before it serves, a pool the database has no room for).
    Doubt(String),
    /// Not reached: herald would not work as configured.
    Failed(String),
}

pub(super) async fn check(config: Config) -> anyhow::Result<ExitCode> {
    let outcomes = [
        ("database", database(&config).await),
        ("redis", redis(&config).await),
        ("email", email(&config).await),
        ("dkim", dkim(&config)),
        ("links", links(&config).await),
    ];
    let services = outcomes.len();
    let mut failed = 0;
    for (service, outcome) in outcomes {
        let (word, said) = match outcome {
            Outcome::Reached(said) => ("ok", said),
            Outcome::Unset(said) => ("-", said),
            Outcome::Doubt(said) => ("warn", said),
            Outcome::Failed(said) => {
                failed += 1;
                ("FAIL", said)
            }
        };
        out!(
            "{service:<9} {word:<5} {}",
            crate::redact::for_terminal(&said)
        )?;
    }
    if failed > 0 {
        out!("{failed} of {services} cannot be reached as configured")?;
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the database answered.
struct Found {
    answered: Duration,
    /// Migrations this build knows, and of them those not applied.
    known: usize,
    pending: usize,
    /// Migrations a newer herald applied.
    newer: usize,
    /// On PostgreSQL: the connections the server takes, and those open now.
    room: Option<(i64, i64)>,
}

/// The database reached and read: its migrations against this build's, and on PostgreSQL
/// whether this replica's pool fits among the connections the server takes.
async fn database(config: &Config) -> Outcome {
    let url = config.storage.database_url.expose();
    let place = place(url);
    if config
        .storage
        .sqlite_file()
        .is_some_and(|file| !file.exists())
    {
        // Connecting would create it.
        return Outcome::Doubt(format!(
            "{place}: not there yet; `herald serve` or `herald migrate` creates it (DATABASE_URL \
             names it)"
        ));
    }
    let store = match tokio::time::timeout(WAIT, Store::connect_with(url, 1)).await {
        Ok(Ok(store)) => store,
        Ok(Err(err)) => return Outcome::Failed(format!("{place}: {err}")),
        Err(_) => return Outcome::Failed(format!("{place}: no answer within {WAIT:?}")),
    };
    let found = read(&store).await;
    store.close().await;
    let found = match found {
        Ok(found) => found,
        Err(err) => return Outcome::Failed(format!("{place}: {err}")),
    };
    let mut said = format!(
        "{place}: answered in {} ms; {} of {} migrations applied",
        found.answered.as_millis(),
        found.known - found.pending,
        found.known
    );
    if found.pending > 0 {
        said.push_str(&format!(
            ", {} to apply as herald starts (or `herald migrate`)",
            found.pending
        ));
    }
    if found.newer > 0 {
        said.push_str(&format!(
            ", {} applied by a newer herald (this one serves it as it is)",
            found.newer
        ));
    }
    let Some((allowed, open)) = found.room else {
        return Outcome::Reached(said);
    };
    let pool = i64::from(config.storage.max_connections);
    said.push_str(&format!(
        "; the server takes {allowed} connections, {open} open now, and this replica opens up \
         to {pool} (DATABASE_MAX_CONNECTIONS)"
    ));
    if open + pool > allowed {
        said.push_str(
            ": not room for them all (DEPLOYMENT.md, \"Size the connection pools together\")",
        );
        return Outcome::Doubt(said);
    }
    Outcome::Reached(said)
}

async fn read(store: &Store) -> Result<Found, crate::store::StoreError> {
    let answered = store.ping(WAIT).await?;
    let migrations = store.migration_status().await?;
    Ok(Found {
        answered,
        known: migrations.len(),
        pending: migrations
            .iter()
            .filter(|m| m.applied_at_ms.is_none())
            .count(),
        newer: store.newer_migrations().await?.len(),
        room: match store.backend() {
            Backend::Postgres => Some(connections(store).await?),
            Backend::Sqlite => None,
        },
    })
}

/// What a PostgreSQL server takes in connections (`max_connections` less those kept for
/// superusers) and how many clients hold one now.
async fn connections(store: &Store) -> Result<(i64, i64), crate::store::StoreError> {
    let setting = |name: &'static str| async move {
        let value: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(store.reader())
            .await?;
        Ok::<_, crate::store::StoreError>(value.parse::<i64>().unwrap_or(0))
    };
    let allowed =
        setting("max_connections").await? - setting("superuser_reserved_connections").await?;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .fetch_one(store.reader())
    .await?;
    Ok((allowed, open))
}

/// Where a database URL points, without its user or password: a SQLite file, or a
/// PostgreSQL server and database.
fn place(url: &str) -> String {
    if let Some(file) = crate::config::storage::sqlite_file(url) {
        return format!("sqlite {}", file.display());
    }
    match url::Url::parse(url) {
        Ok(parsed) => format!("postgres {}{}", server(&parsed, 5432), parsed.path()),
        Err(_) => "the database".to_owned(),
    }
}

/// A URL's host and port (`default`, when it names none): never its user or password.
fn server(url: &url::Url, default: u16) -> String {
    let host = url.host_str().unwrap_or("localhost");
    format!("{host}:{}", url.port().unwrap_or(default))
}

/// Redis connected to and the limiter's script loaded, as each rate-limit shard does.
async fn redis(config: &Config) -> Outcome {
    let Some(url) = &config.storage.redis_url else {
        return Outcome::Unset(
            "REDIS_URL not set: the rate-limit windows are this process's own (one replica)"
                .to_owned(),
        );
    };
    let place =
        url::Url::parse(url.expose()).map_or_else(|_| "redis".to_owned(), |url| server(&url, 6379));
    let limits = &config.rate_limit;
    let windows = match crate::ratelimit::redis::RedisWindows::new(
        url.expose(),
        &limits.redis_key_prefix,
        limits.redis_timeout,
    ) {
        Ok(windows) => windows,
        Err(err) => return Outcome::Failed(format!("{place}: {err}")),
    };
    match windows.connect().await {
        Ok(_) => Outcome::Reached(format!("{place}: connected, the limiter's script loaded")),
        Err(err) => Outcome::Failed(format!("{place}: {err}")),
    }
}

/// The provider reached as a send reaches it, nothing sent.
async fn email(config: &Config) -> Outcome {
    let mailer = match crate::email::provider::Mailer::from_config(&config.email) {
        Ok(mailer) => mailer,
        Err(err) => return Outcome::Failed(format!("{err:#}")),
    };
    match mailer.check().await {
        Ok(reached) => Outcome::Reached(reached),
        Err(failed) => Outcome::Failed(failed),
    }
}

/// The key mail is signed with, and the TXT record that must publish it: what an operator
/// puts in DNS, and checks there (`dig TXT <name>`) before the first signed email.
fn dkim(config: &Config) -> Outcome {
    match &config.email.dkim {
        Some(dkim) => Outcome::Reached(format!(
            "signs with {} as {}; publish there the TXT record {}",
            dkim.key.algorithm(),
            dkim.record_name(),
            dkim.record()
        )),
        None => Outcome::Unset(
            "DKIM_DOMAIN not set: herald signs nothing (SendGrid signs what it sends)".to_owned(),
        ),
    }
}

/// The address the links in emails lead to (`API_BASE_URL`): herald's `/healthz` there. It
/// may not answer yet (a first deploy), so this only warns.
async fn links(config: &Config) -> Outcome {
    let base = &config.email.api_base_url;
    let health = format!("{base}/healthz");
    let client = match reqwest::Client::builder().timeout(WAIT).build() {
        Ok(client) => client,
        Err(err) => return Outcome::Failed(format!("{base}: {err}")),
    };
    match client.get(&health).send().await {
        Ok(answer) if answer.status().is_success() => Outcome::Reached(format!(
            "{base}: herald answers there, where the links in emails lead"
        )),
        Ok(answer) => Outcome::Doubt(format!(
            "{health} answered {}: the links in emails lead to {base} (API_BASE_URL), which \
             must reach herald",
            answer.status().as_u16()
        )),
        Err(err) => Outcome::Doubt(format!(
            "{base}: not reached ({}): the links in emails lead there (API_BASE_URL), so it \
             must reach herald once it serves",
            root_cause(&err)
        )),
    }
}

/// What an error came down to: its innermost cause (reqwest's own words wrap it thrice).
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_database_is_named_without_its_user_or_password() {
        assert_eq!(
            super::place("postgres://herald:hunter2@db.internal:6543/herald?sslmode=require"),
            "postgres db.internal:6543/herald"
        );
        assert_eq!(
            super::place("postgres://db.internal/herald"),
            "postgres db.internal:5432/herald"
        );
        assert_eq!(
            super::place("sqlite://data/herald.db?mode=rwc"),
            "sqlite data/herald.db"
        );
    }
}
