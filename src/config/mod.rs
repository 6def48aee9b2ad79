//! Configuration: every environment variable read once, into typed structs, validated at
//! start. Each problem is reported as one line; `main` prints them all and exits 2.
//!
//! Secrets are held as [`Secret`] so no `Debug` of the configuration can leak them.

mod dev_secrets;
mod ip;

pub use ip::{IpBlock, canonical};

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::Secret;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://herald.db?mode=rwc";
/// Where generated development secrets are kept, beside the SQLite database.
pub const DEV_SECRETS_FILE: &str = ".herald-secrets";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailProvider {
    Console,
    Smtp,
    File,
}

impl EmailProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Smtp => "smtp",
            Self::File => "file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    StartTls,
    Tls,
    None,
}

/// What a rate-limit check does when the limiter cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: SmtpTls,
    /// PEM certificates trusted for the server's TLS besides the usual public roots (a
    /// relay with a private CA).
    pub tls_ca_file: Option<PathBuf>,
}

/// Throttles and delivery behaviour of the email pipeline.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub session_reports_limit: u32,
    pub session_reports_window: Duration,
    pub weekly_digest_limit: u32,
    pub weekly_digest_window: Duration,
    /// Sends in flight at once.
    pub concurrency: usize,
    pub max_attempts: u32,
    pub max_lifetime: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to an hour.
    pub retry_base: Duration,
    /// How often the dispatcher looks for due retries and expired leases.
    pub poll_interval: Duration,
    /// How long sends pause after the mail server is found unreachable.
    pub breaker_cooldown: Duration,
    /// The longest one SMTP attempt may take, connecting included; at most half of
    /// `outbox_lease`.
    pub smtp_timeout: Duration,
    /// How long a claimed outbox row is the claimer's (default [`OUTBOX_LEASE`]): after a
    /// replica dies, the emails it had claimed wait this long before another sends them.
    pub outbox_lease: Duration,
}

/// How long a claimed outbox row is the claimer's. A row starts sending only while more than
/// half its lease is left, so an attempt that ends within half a lease ends before anyone
/// else may claim the row.
pub const OUTBOX_LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub delivery: DeliveryConfig,
    pub provider: EmailProvider,
    pub from: String,
    pub api_base_url: String,
    pub smtp: SmtpConfig,
    pub file_dir: PathBuf,
}

/// A client key from `API_KEYS`, with its tier (`free` when none is given).
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub key: Secret,
    pub tier: String,
}

/// The scheduler and the retention job.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// When `purge_old` runs (cron, in `DIGEST_TIMEZONE`).
    pub purge_schedule: String,
    /// `true`: run the latest missed occurrence at start; `false`: skip it.
    pub catch_up: bool,
    pub catch_up_horizon: Duration,
    pub lease: Duration,
    pub retention_send_log_days: u64,
    pub retention_session_events_days: u64,
    /// Never below 50 days.
    pub retention_audit_log_days: u64,
}

/// The limiter's defaults and sizing.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Default policy of every group until changed at runtime.
    pub max_requests: u32,
    pub window_seconds: u64,
    pub shards: usize,
    /// Hard cap of tracked clients per shard.
    pub max_keys_per_shard: usize,
    /// How long a reset or a count of tracked clients waits for a shard.
    pub check_timeout: Duration,
    /// Prefix of every Redis key herald writes (`REDIS_KEY_PREFIX`).
    pub redis_key_prefix: String,
    /// The longest a check waits for Redis before the fail mode applies.
    pub redis_timeout: Duration,
    /// How often each replica reloads the stored policies (on PostgreSQL), so a change made
    /// on one replica is in force on all within this time.
    pub policy_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub host: IpAddr,
    pub port: u16,
    pub database_url: Secret,
    /// The admin key (`X-API-Key`).
    pub api_access_key: Secret,
    pub api_keys: Vec<ClientKey>,
    /// Signs unsubscribe tokens.
    pub secret_key: Secret,
    /// The version new unsubscribe tokens carry (`SECRET_KEY_VERSION`).
    pub secret_key_version: u32,
    /// Earlier signing keys, so links signed with them keep working after a rotation.
    pub previous_secret_keys: Vec<(u32, Secret)>,
    /// Set when the development secrets were generated by this start (printed once).
    pub generated_secrets: Option<PathBuf>,
    pub email: EmailConfig,
    pub redis_url: Option<Secret>,
    pub sentry_dsn: Option<Secret>,
    pub sentry_traces_sample_rate: f32,
    pub log_level: String,
    pub log_format: LogFormat,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<IpBlock>,
    pub rate_limit_fail_mode: FailMode,
    pub rate_limit: RateLimitConfig,
    pub digest_schedule: String,
    /// The zone digest weeks and job schedules are read in, parsed once here.
    pub digest_timezone: chrono_tz::Tz,
    pub jobs: JobsConfig,
    pub metrics_token: Option<Secret>,
    /// `Strict-Transport-Security` max-age; the header is sent only when set.
    pub hsts_max_age: Option<u64>,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
}

/// Every problem found in the environment, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables and collects problems instead of stopping at the first.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => raw.parse().unwrap_or_else(|_| {
                self.problems
                    .push(format!("{name}: expected {expected}, got '{raw}'"));
                default
            }),
        }
    }

    fn choice<T: Copy>(&mut self, name: &str, default: T, options: &[(&str, T)]) -> T {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match options
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(&raw))
        {
            Some((_, value)) => *value,
            None => {
                let names: Vec<_> = options.iter().map(|(k, _)| *k).collect();
                self.problems.push(format!(
                    "{name}: expected one of {}, got '{raw}'",
                    names.join(", ")
                ));
                default
            }
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };
        let environment = r.choice(
            "HERALD_ENV",
            Environment::Development,
            &[
                ("development", Environment::Development),
                ("production", Environment::Production),
            ],
        );
        let production = environment == Environment::Production;
        let host = r.parse("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address");
        let port = r.parse("PORT", 8000u16, "a port number (0-65535)");

        let explicit_database_url = r.get("DATABASE_URL");
        let database_url = explicit_database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            r.problems
                .push("DATABASE_URL: expected a sqlite:// or postgres:// URL".to_owned());
        }

        let api_access_key = r.get("API_ACCESS_KEY");
        let secret_key = r.get("SECRET_KEY");
        if production {
            if explicit_database_url.is_none() {
                r.problems
                    .push("DATABASE_URL: required when HERALD_ENV=production".to_owned());
            }
            match &api_access_key {
                None => r
                    .problems
                    .push("API_ACCESS_KEY: required when HERALD_ENV=production".to_owned()),
                Some(key) if key.chars().count() < 32 => r.problems.push(
                    "API_ACCESS_KEY: must be at least 32 characters when HERALD_ENV=production"
                        .to_owned(),
                ),
                Some(_) => {}
            }
            if secret_key.is_none() {
                r.problems
                    .push("SECRET_KEY: required when HERALD_ENV=production".to_owned());
            }
        }

        let secret_key_version = r.parse("SECRET_KEY_VERSION", 1u32, "a whole number");
        let mut previous_secret_keys = Vec::new();
        for entry in r.list("SECRET_KEY_PREVIOUS") {
            match entry.split_once(':').and_then(|(v, k)| Some((v.trim().parse::<u32>().ok()?, k.trim()))) {
                Some((version, key)) if !key.is_empty() && version != secret_key_version => {
                    previous_secret_keys.push((version, Secret::new(key)));
                }
                _ => r.problems.push("SECRET_KEY_PREVIOUS: expected version:key entries (e.g. 1:oldkey) with versions other than SECRET_KEY_VERSION".to_owned()),
            }
        }

        let mut api_keys = Vec::new();
        for entry in r.list("API_KEYS") {
            let (key, tier) = match entry.split_once(':') {
                Some((key, tier)) => (key.trim(), tier.trim()),
                None => (entry.as_str(), "free"),
            };
            if key.is_empty() || tier.is_empty() {
                r.problems.push(
                    "API_KEYS: expected key or key:tier entries separated by commas".to_owned(),
                );
                continue;
            }
            api_keys.push(ClientKey {
                key: Secret::new(key),
                tier: tier.to_ascii_lowercase(),
            });
        }

        let provider = r.choice(
            "EMAIL_PROVIDER",
            EmailProvider::Console,
            &[
                ("console", EmailProvider::Console),
                ("smtp", EmailProvider::Smtp),
                ("file", EmailProvider::File),
            ],
        );
        let smtp = SmtpConfig {
            host: r.get("SMTP_HOST"),
            port: r.parse("SMTP_PORT", 587u16, "a port number (0-65535)"),
            user: r.get("SMTP_USER"),
            password: r.get("SMTP_PASS").map(Secret::new),
            tls: r.choice(
                "SMTP_TLS",
                SmtpTls::StartTls,
                &[
                    ("starttls", SmtpTls::StartTls),
                    ("tls", SmtpTls::Tls),
                    ("none", SmtpTls::None),
                ],
            ),
            tls_ca_file: r.get("SMTP_TLS_CA_FILE").map(PathBuf::from),
        };
        if smtp.user.is_some() != smtp.password.is_some() {
            r.problems.push(
                "SMTP_USER, SMTP_PASS: set both to log in to the mail server, or neither"
                    .to_owned(),
            );
        }
        if provider == EmailProvider::Smtp && smtp.host.is_none() {
            r.problems
                .push("SMTP_HOST: required when EMAIL_PROVIDER=smtp".to_owned());
        }
        let from = r
            .get("EMAIL_FROM")
            .unwrap_or_else(|| "noreply@herald.localhost".to_owned());
        if !from.contains('@') || from.contains(['\r', '\n']) {
            r.problems.push(format!(
                "EMAIL_FROM: expected an email address, got '{from}'"
            ));
        }
        let api_base_url = r
            .get("API_BASE_URL")
            .unwrap_or_else(|| "http://localhost:8000".to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(api_base_url.starts_with("http://") || api_base_url.starts_with("https://")) {
            r.problems
                .push("API_BASE_URL: expected an http:// or https:// URL".to_owned());
        }
        let delivery = DeliveryConfig {
            session_reports_limit: r.parse("SESSION_REPORT_LIMIT", 5u32, "a whole number"),
            session_reports_window: Duration::from_secs(
                3600 * r.parse("SESSION_REPORT_WINDOW_HOURS", 24u64, "whole hours"),
            ),
            weekly_digest_limit: r.parse("WEEKLY_DIGEST_LIMIT", 1u32, "a whole number"),
            weekly_digest_window: Duration::from_secs(
                86_400 * r.parse("WEEKLY_DIGEST_WINDOW_DAYS", 7u64, "whole days"),
            ),
            concurrency: r.parse("EMAIL_SEND_CONCURRENCY", 16usize, "a whole number"),
            max_attempts: r.parse("EMAIL_MAX_ATTEMPTS", 6u32, "a whole number"),
            max_lifetime: Duration::from_secs(
                3600 * r.parse("EMAIL_MAX_LIFETIME_HOURS", 24u64, "whole hours"),
            ),
            retry_base: Duration::from_millis(r.parse(
                "EMAIL_RETRY_BASE_MS",
                30_000u64,
                "milliseconds",
            )),
            poll_interval: Duration::from_millis(r.parse(
                "EMAIL_POLL_INTERVAL_MS",
                1_000u64,
                "milliseconds",
            )),
            breaker_cooldown: Duration::from_millis(r.parse(
                "EMAIL_BREAKER_COOLDOWN_MS",
                5_000u64,
                "milliseconds",
            )),
            smtp_timeout: Duration::from_secs(r.parse(
                "SMTP_TIMEOUT_SECONDS",
                10u64,
                "whole seconds",
            )),
            outbox_lease: Duration::from_secs(r.parse(
                "EMAIL_OUTBOX_LEASE_SECONDS",
                OUTBOX_LEASE.as_secs(),
                "whole seconds",
            )),
        };
        for (name, zero) in [
            ("SESSION_REPORT_LIMIT", delivery.session_reports_limit == 0),
            (
                "SESSION_REPORT_WINDOW_HOURS",
                delivery.session_reports_window.is_zero(),
            ),
            ("WEEKLY_DIGEST_LIMIT", delivery.weekly_digest_limit == 0),
            (
                "WEEKLY_DIGEST_WINDOW_DAYS",
                delivery.weekly_digest_window.is_zero(),
            ),
            ("EMAIL_SEND_CONCURRENCY", delivery.concurrency == 0),
            ("EMAIL_MAX_ATTEMPTS", delivery.max_attempts == 0),
            ("EMAIL_POLL_INTERVAL_MS", delivery.poll_interval.is_zero()),
            ("SMTP_TIMEOUT_SECONDS", delivery.smtp_timeout.is_zero()),
        ] {
            if zero {
                r.problems.push(format!("{name}: must be at least 1"));
            }
        }
        if delivery.outbox_lease < Duration::from_secs(2) {
            r.problems
                .push("EMAIL_OUTBOX_LEASE_SECONDS: must be at least 2".to_owned());
        } else if delivery.smtp_timeout > delivery.outbox_lease / 2 {
            r.problems.push(format!(
                "SMTP_TIMEOUT_SECONDS: at most {} (an attempt must end while its outbox lease holds)",
                (delivery.outbox_lease / 2).as_secs()
            ));
        }
        let email = EmailConfig {
            delivery,
            provider,
            from,
            api_base_url,
            smtp,
            file_dir: PathBuf::from(r.get("EMAIL_FILE_DIR").unwrap_or_else(|| "./outbox".into())),
        };

        let sentry_traces_sample_rate = r.parse(
            "SENTRY_TRACES_SAMPLE_RATE",
            if production { 0.1f32 } else { 1.0 },
            "a number between 0 and 1",
        );
        if !(0.0..=1.0).contains(&sentry_traces_sample_rate) {
            r.problems
                .push("SENTRY_TRACES_SAMPLE_RATE: expected a number between 0 and 1".to_owned());
        }
        let log_level = r.get("LOG_LEVEL").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            r.problems.push(format!(
                "LOG_LEVEL: '{log_level}' is not a valid level or filter"
            ));
        }
        let log_format = r.choice(
            "LOG_FORMAT",
            if production {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            },
            &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
        );
        let cors_origins = r.list("CORS_ORIGINS");
        for origin in &cors_origins {
            if http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                r.problems.push(format!(
                    "CORS_ORIGINS: '{origin}' is not an origin like https://app.example.com"
                ));
            }
        }
        let mut trusted_proxies = Vec::new();
        for entry in r.list("TRUSTED_PROXIES") {
            match entry.parse() {
                Ok(block) => trusted_proxies.push(block),
                Err(problem) => r.problems.push(format!("TRUSTED_PROXIES: {problem}")),
            }
        }
        let rate_limit_fail_mode = r.choice(
            "RATE_LIMIT_FAIL_MODE",
            FailMode::Open,
            &[("open", FailMode::Open), ("closed", FailMode::Closed)],
        );
        let rate_limit = RateLimitConfig {
            max_requests: r.parse(
                "RATE_LIMIT_MAX_REQUESTS",
                20u32,
                "a whole number of requests",
            ),
            window_seconds: r.parse(
                "RATE_LIMIT_WINDOW_SECONDS",
                60u64,
                "a whole number of seconds",
            ),
            shards: r.parse("RATE_LIMIT_SHARDS", 4usize, "a number of shards"),
            max_keys_per_shard: r.parse(
                "RATE_LIMIT_MAX_KEYS_PER_SHARD",
                250_000usize,
                "a number of keys",
            ),
            check_timeout: Duration::from_millis(r.parse(
                "RATE_LIMIT_CHECK_TIMEOUT_MS",
                100u64,
                "milliseconds",
            )),
            redis_key_prefix: r
                .get("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "herald:".to_owned()),
            redis_timeout: Duration::from_millis(r.parse(
                "RATE_LIMIT_REDIS_TIMEOUT_MS",
                50u64,
                "milliseconds",
            )),
            policy_refresh: Duration::from_millis(r.parse(
                "POLICY_REFRESH_MS",
                1_000u64,
                "milliseconds",
            )),
        };
        if rate_limit.redis_timeout.is_zero() || rate_limit.redis_timeout > Duration::from_secs(5) {
            r.problems
                .push("RATE_LIMIT_REDIS_TIMEOUT_MS: must be from 1 to 5000".to_owned());
        }
        if rate_limit.policy_refresh < Duration::from_millis(100) {
            r.problems
                .push("POLICY_REFRESH_MS: must be at least 100".to_owned());
        }
        if rate_limit
            .redis_key_prefix
            .contains(['{', '}', '*', '?', '[', ']'])
        {
            r.problems.push(
                "REDIS_KEY_PREFIX: cannot contain braces or glob characters ({ } * ? [ ])"
                    .to_owned(),
            );
        }
        let redis_url = r.get("REDIS_URL");
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        {
            r.problems.push(
                "REDIS_URL: expected redis://host:port[/db], rediss://… or unix://…".to_owned(),
            );
        }
        if rate_limit.max_requests == 0 || rate_limit.max_requests > 1_000_000 {
            r.problems
                .push("RATE_LIMIT_MAX_REQUESTS: must be from 1 to 1000000".to_owned());
        }
        if rate_limit.window_seconds == 0 || rate_limit.window_seconds > 86_400 {
            r.problems
                .push("RATE_LIMIT_WINDOW_SECONDS: must be from 1 to 86400".to_owned());
        }
        if rate_limit.shards == 0 || rate_limit.shards > 256 {
            r.problems
                .push("RATE_LIMIT_SHARDS: must be from 1 to 256".to_owned());
        }
        if rate_limit.max_keys_per_shard == 0 {
            r.problems
                .push("RATE_LIMIT_MAX_KEYS_PER_SHARD: must be at least 1".to_owned());
        }
        let digest_schedule = r
            .get("DIGEST_SCHEDULE")
            .unwrap_or_else(|| "0 9 * * SUN".to_owned());
        let digest_timezone_name = r.get("DIGEST_TIMEZONE").unwrap_or_else(|| "UTC".to_owned());
        let jobs = JobsConfig {
            purge_schedule: r
                .get("PURGE_SCHEDULE")
                .unwrap_or_else(|| "30 3 * * *".to_owned()),
            catch_up: r.choice(
                "MISSED_RUN_POLICY",
                true,
                &[("catch_up", true), ("skip", false)],
            ),
            catch_up_horizon: Duration::from_secs(
                3600 * r.parse("CATCH_UP_HORIZON_HOURS", 192u64, "whole hours"),
            ),
            lease: Duration::from_secs(r.parse("JOB_LEASE_SECONDS", 300u64, "whole seconds")),
            retention_send_log_days: r.parse("RETENTION_SEND_LOG_DAYS", 180u64, "whole days"),
            retention_session_events_days: r.parse(
                "RETENTION_SESSION_EVENTS_DAYS",
                365u64,
                "whole days",
            ),
            retention_audit_log_days: r.parse("RETENTION_AUDIT_LOG_DAYS", 400u64, "whole days"),
        };
        for (name, expression) in [
            ("DIGEST_SCHEDULE", &digest_schedule),
            ("PURGE_SCHEDULE", &jobs.purge_schedule),
        ] {
            if let Err(problem) =
                herald_actors::scheduler::Schedule::parse(expression, &digest_timezone_name)
            {
                r.problems
                    .push(format!("{name}/DIGEST_TIMEZONE: {problem}"));
            }
        }
        if jobs.retention_audit_log_days < 50 {
            r.problems.push(
                "RETENTION_AUDIT_LOG_DAYS: the audit log is kept at least 50 days".to_owned(),
            );
        }
        let hsts_max_age = r.get("HSTS_MAX_AGE").and_then(|raw| match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                r.problems
                    .push(format!("HSTS_MAX_AGE: expected seconds, got '{raw}'"));
                None
            }
        });
        let request_timeout = Duration::from_secs(r.parse(
            "REQUEST_TIMEOUT_SECONDS",
            30u64,
            "a whole number of seconds",
        ));
        let shutdown_timeout = Duration::from_secs(r.parse(
            "SHUTDOWN_TIMEOUT_SECONDS",
            30u64,
            "a whole number of seconds",
        ));
        let max_body_bytes = r.parse("MAX_BODY_BYTES", 64 * 1024usize, "a number of bytes");
        if request_timeout.is_zero() {
            r.problems
                .push("REQUEST_TIMEOUT_SECONDS: must be at least 1".to_owned());
        }

        let mut config = Config {
            environment,
            host,
            port,
            database_url: Secret::new(database_url),
            api_access_key: Secret::new(api_access_key.clone().unwrap_or_default()),
            api_keys,
            secret_key: Secret::new(secret_key.clone().unwrap_or_default()),
            secret_key_version,
            previous_secret_keys,
            generated_secrets: None,
            email,
            redis_url: redis_url.map(Secret::new),
            sentry_dsn: r.get("SENTRY_DSN").map(Secret::new),
            sentry_traces_sample_rate,
            log_level,
            log_format,
            cors_origins,
            trusted_proxies,
            rate_limit_fail_mode,
            rate_limit,
            digest_schedule,
            // An unknown zone was reported by the schedules' check above.
            digest_timezone: digest_timezone_name.parse().unwrap_or(chrono_tz::UTC),
            jobs,
            metrics_token: r.get("METRICS_TOKEN").map(Secret::new),
            hsts_max_age,
            request_timeout,
            max_body_bytes,
            shutdown_timeout,
        };
        if !r.problems.is_empty() {
            return Err(ConfigErrors(r.problems));
        }
        if api_access_key.is_none() || secret_key.is_none() {
            // Only reachable in development: production refused above.
            if let Err(problem) = config.load_dev_secrets() {
                return Err(ConfigErrors(vec![problem]));
            }
        }
        Ok(config)
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
    }

    fn dev_vars() -> Vec<(&'static str, &'static str)> {
        vec![("API_ACCESS_KEY", "dev-key"), ("SECRET_KEY", "dev-secret")]
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(&dev_vars()).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.host.to_string(), "127.0.0.1");
        assert_eq!(config.port, 8000);
        assert_eq!(config.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(config.email.provider, EmailProvider::Console);
        assert_eq!(config.email.from, "noreply@herald.localhost");
        assert_eq!(config.email.smtp.port, 587);
        assert_eq!(config.email.smtp.tls, SmtpTls::StartTls);
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.rate_limit_fail_mode, FailMode::Open);
        assert_eq!(config.digest_schedule, "0 9 * * SUN");
        assert!((config.sentry_traces_sample_rate - 1.0).abs() < f32::EPSILON);
    }

    #[test]
    fn production_refuses_to_start_without_its_secrets() {
        let errors = load(&[("HERALD_ENV", "production")]).unwrap_err().0;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("DATABASE_URL: required"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("API_ACCESS_KEY: required"))
        );
        assert!(errors.iter().any(|e| e.starts_with("SECRET_KEY: required")));
    }

    #[test]
    fn production_requires_a_long_api_key() {
        let errors = load(&[
            ("HERALD_ENV", "production"),
            ("DATABASE_URL", "postgres://db/herald"),
            ("API_ACCESS_KEY", "short"),
            ("SECRET_KEY", "s"),
        ])
        .unwrap_err()
        .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("at least 32 characters"));
    }

    #[test]
    fn production_tightens_defaults() {
        let config = load(&[
            ("HERALD_ENV", "production"),
            ("DATABASE_URL", "postgres://db/herald"),
            ("API_ACCESS_KEY", "0123456789abcdef0123456789abcdef"),
            ("SECRET_KEY", "signing-secret"),
        ])
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!((config.sentry_traces_sample_rate - 0.1).abs() < f32::EPSILON);
    }

    #[test]
    fn every_bad_value_is_reported_on_its_own_line() {
        let mut vars = dev_vars();
        vars.extend([
            ("PORT", "eighty"),
            ("EMAIL_PROVIDER", "pigeon"),
            ("SMTP_TLS", "maybe"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("RATE_LIMIT_FAIL_MODE", "sideways"),
        ]);
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("PORT: expected a port number"));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("EMAIL_PROVIDER: expected one of console, smtp, file"))
        );
    }

    #[test]
    fn an_smtp_timeout_must_fit_inside_the_outbox_lease() {
        let with = |seconds| {
            let mut vars = dev_vars();
            vars.push(("SMTP_TIMEOUT_SECONDS", seconds));
            load(&vars).map(|c| c.email.delivery.smtp_timeout)
        };
        assert_eq!(
            with("0").unwrap_err().0,
            ["SMTP_TIMEOUT_SECONDS: must be at least 1"]
        );
        assert_eq!(with("60").unwrap(), Duration::from_secs(60));
        assert_eq!(
            with("61").unwrap_err().0,
            ["SMTP_TIMEOUT_SECONDS: at most 60 (an attempt must end while its outbox lease holds)"]
        );
    }

    #[test]
    fn an_smtp_login_needs_both_user_and_password() {
        for half in ["SMTP_USER", "SMTP_PASS"] {
            let mut vars = dev_vars();
            vars.push((half, "x"));
            assert_eq!(
                load(&vars).unwrap_err().0,
                ["SMTP_USER, SMTP_PASS: set both to log in to the mail server, or neither"]
            );
        }
        let mut vars = dev_vars();
        vars.extend([("SMTP_USER", "herald"), ("SMTP_PASS", "x")]);
        assert!(load(&vars).is_ok());
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut vars = dev_vars();
        vars.extend([
            ("SMTP_USER", "herald"),
            ("SMTP_PASS", "smtp-password-value"),
            ("DATABASE_URL", "postgres://u:db-password-value@h/d"),
        ]);
        let debug = format!("{:?}", load(&vars).unwrap());
        for secret in [
            "dev-key",
            "dev-secret",
            "smtp-password-value",
            "db-password-value",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn api_keys_carry_an_optional_tier() {
        let mut vars = dev_vars();
        vars.push(("API_KEYS", "k1:pro, k2"));
        let keys = load(&vars).unwrap().api_keys;
        assert_eq!(keys.len(), 2);
        assert!(keys[0].key.matches("k1"));
        assert_eq!(keys[0].tier, "pro");
        assert_eq!(keys[1].tier, "free");
    }

    #[test]
    fn development_secrets_are_generated_once_and_kept_beside_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db?mode=rwc", dir.path().display());
        let first = load(&[("DATABASE_URL", &url)]).unwrap();
        assert!(first.generated_secrets.is_some());
        assert_eq!(first.api_access_key.expose().len(), 64);
        let second = load(&[("DATABASE_URL", &url)]).unwrap();
        assert!(second.generated_secrets.is_none());
        assert_eq!(first.api_access_key, second.api_access_key);
        assert_eq!(first.secret_key, second.secret_key);
        assert!(dir.path().join(DEV_SECRETS_FILE).exists());
    }

    #[test]
    fn env_example_lists_every_variable_the_service_reads() {
        let source = include_str!("mod.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        let example = include_str!("../../.env.example");
        let mut missing = Vec::new();
        for literal in code.split('"').skip(1).step_by(2) {
            let is_name = literal.len() > 2
                && literal.contains('_')
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if is_name
                && !example
                    .lines()
                    .any(|l| l.starts_with(&format!("{literal}=")))
            {
                missing.push(literal);
            }
        }
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }

    #[test]
    fn ip_blocks_match_addresses_inside_them() {
        let block: IpBlock = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains("10.1.2.3".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!block.contains("11.0.0.1".parse().unwrap()));
        let single: IpBlock = "2001:db8::1".parse().unwrap();
        assert!(single.contains("2001:db8::1".parse().unwrap()));
        assert!(!single.contains("2001:db8::2".parse().unwrap()));
        assert!("nonsense".parse::<IpBlock>().is_err());
    }
}
