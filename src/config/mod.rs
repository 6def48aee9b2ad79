//! Configuration: every environment variable read once, by section (server, storage, keys,
//! email, jobs, rate limits, telemetry), into the types the code uses (`Schedule`, `Tz`,
//! `Duration`, `Mailbox`, `Policy`, `ThrottleRule`), validated at start. Each problem is
//! reported as one line; `main` prints them all and exits 2.
//!
//! Secrets are held as [`Secret`] so no `Debug` of the configuration can leak them.

mod dev_secrets;
mod dkim;
mod email;
mod events;
mod ip;
mod jobs;
mod keys;
mod rate_limit;
mod reader;
mod server;
mod shared;
pub mod storage;
mod telemetry;

pub use dkim::{Dkim, DkimKey, SIGNED_HEADERS};
pub use email::{
    DeliveryConfig, EmailConfig, EmailProvider, OUTBOX_LEASE, SendGridConfig, SmtpConfig, SmtpTls,
};
pub use events::EventsConfig;
pub use ip::{IpBlock, canonical};
pub use jobs::{JobsConfig, RetentionConfig};
pub use keys::{ClientKey, GeneratedSecrets, KeysConfig};
pub use rate_limit::{FailMode, RateLimitConfig};
pub use server::{ServerConfig, StartAuth};
pub use shared::{SHARED_SETTINGS, SharedSettings};
pub use storage::{DEFAULT_DATABASE_URL, StorageConfig};
pub use telemetry::{LogFormat, TelemetryConfig};

use reader::Reader;

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

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub email: EmailConfig,
    pub events: EventsConfig,
    pub jobs: JobsConfig,
    pub rate_limit: RateLimitConfig,
    pub telemetry: TelemetryConfig,
    /// The settings every replica must share, as fingerprints to compare with the others'.
    pub shared: SharedSettings,
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

impl Config {
    /// What is allowed but probably not meant, in production: said at start, not refused
    /// (one replica on SQLite, or on PostgreSQL without Redis, is a deployment of its own).
    pub fn production_warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.environment != Environment::Production {
            return warnings;
        }
        if self.storage.is_sqlite() {
            warnings.push(
                "DATABASE_URL is SQLite: it serves one process. Several replicas each on \
                 a SQLite file of their own would each keep their own unsubscribes, \
                 throttles and ledger; they need PostgreSQL",
            );
        } else if self.storage.redis_url.is_none() {
            warnings.push(
                "REDIS_URL is unset: this replica keeps its rate-limit windows to itself, \
                 so with several replicas a client gets each one's limit. Set REDIS_URL \
                 whenever more than one replica serves",
            );
        }
        warnings
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(lookup);
        let environment = r.choice(
            "HERALD_ENV",
            Environment::Development,
            &[
                ("development", Environment::Development),
                ("production", Environment::Production),
            ],
        );
        let production = environment == Environment::Production;
        let storage = StorageConfig::read(&mut r, production);
        let server = ServerConfig::read(&mut r, storage.max_connections);
        let mut keys = KeysConfig::read(&mut r, production);
        let email = EmailConfig::read(&mut r, production, server.port);
        let events = EventsConfig::read(&mut r);
        let jobs = JobsConfig::read(&mut r);
        let rate_limit = RateLimitConfig::read(&mut r);
        let telemetry = TelemetryConfig::read(&mut r, production);
        let in_force = r.in_force();
        r.finish().map_err(ConfigErrors)?;
        if keys.incomplete() {
            // Only reachable in development: production refused above.
            keys.load_dev_secrets(storage.secrets_dir())
                .map_err(|problem| ConfigErrors(vec![problem]))?;
        }
        let shared = SharedSettings::read(
            &|name| in_force.get(name).cloned().or_else(|| lookup(name)),
            &keys,
            email.dkim.as_ref(),
        );
        Ok(Config {
            environment,
            server,
            storage,
            keys,
            email,
            events,
            jobs,
            rate_limit,
            telemetry,
            shared,
        })
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
        assert_eq!(config.server.host.to_string(), "127.0.0.1");
        assert_eq!(config.server.port, 8000);
        assert_eq!(config.storage.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(config.storage.max_connections, 10);
        assert_eq!(config.email.provider, EmailProvider::Console);
        assert_eq!(config.email.from.to_string(), "noreply@herald.localhost");
        assert_eq!(config.email.sender_domain(), "herald.localhost");
        assert_eq!(config.email.api_base_url, "http://localhost:8000");
        assert_eq!(config.email.smtp.port, 587);
        assert_eq!(config.email.smtp.tls, SmtpTls::StartTls);
        assert_eq!(config.telemetry.log_format, LogFormat::Pretty);
        assert_eq!(config.rate_limit.fail_mode, FailMode::Open);
        assert_eq!(config.jobs.digest.expression(), "0 9 * * SUN");
        assert_eq!(config.jobs.timezone, chrono_tz::UTC);
        assert_eq!(config.rate_limit.default_policy.max_requests, 20);
        assert_eq!(
            config.email.delivery.session_reports.window_text(),
            "24 hours"
        );
        assert!((config.telemetry.traces_sample_rate - 1.0).abs() < f32::EPSILON);
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
        // What every parent sees: the development defaults point at this machine.
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("API_BASE_URL: required"))
        );
        assert!(errors.iter().any(|e| e.starts_with("EMAIL_FROM: required")));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("EMAIL_PROVIDER: required"))
        );
    }

    fn production_vars() -> Vec<(&'static str, &'static str)> {
        vec![
            ("HERALD_ENV", "production"),
            ("DATABASE_URL", "postgres://db/herald"),
            ("API_ACCESS_KEY", "0123456789abcdef0123456789abcdef"),
            ("SECRET_KEY", "a-signing-secret-of-32-characters"),
            ("API_BASE_URL", "https://herald.example.org"),
            ("EMAIL_FROM", "Reports <reports@example.org>"),
            ("EMAIL_PROVIDER", "file"),
        ]
    }

    #[test]
    fn production_points_out_what_only_one_replica_can_run_on() {
        let config = load(&production_vars()).unwrap();
        let warnings = config.production_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("REDIS_URL is unset"));

        let mut vars = production_vars();
        vars.push(("REDIS_URL", "redis://cache:6379"));
        assert!(load(&vars).unwrap().production_warnings().is_empty());

        vars.push(("DATABASE_URL", "sqlite:///var/lib/herald/herald.db"));
        let warnings = load(&vars).unwrap().production_warnings();
        assert!(
            warnings[0].starts_with("DATABASE_URL is SQLite"),
            "{warnings:?}"
        );

        let mut development = vars.clone();
        development.push(("HERALD_ENV", "development"));
        assert!(load(&development).unwrap().production_warnings().is_empty());
    }

    #[test]
    fn production_refuses_links_that_only_this_machine_can_open() {
        for base in [
            "http://localhost:8000",
            "http://LOCALHOST",
            "https://herald.localhost/",
            "http://127.0.0.1:8000",
            "http://0.0.0.0",
            "http://[::1]:8000/herald",
        ] {
            let problem = base_url_problem(production_vars(), base);
            assert!(problem.contains("own address"), "{problem}");
        }
        let mut vars = production_vars();
        vars.push(("API_BASE_URL", "https://example.org/herald/"));
        let config = load(&vars).unwrap();
        assert_eq!(config.email.api_base_url, "https://example.org/herald");
    }

    #[test]
    fn production_refuses_to_send_the_mail_servers_password_in_clear_text() {
        let mut vars = production_vars();
        vars.extend([
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "mail.example.org"),
            ("SMTP_USER", "herald"),
            ("SMTP_PASS", "password"),
            ("SMTP_TLS", "none"),
        ]);
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("SMTP_TLS: none would send SMTP_PASS in clear text"));
        // A relay on this machine, or STARTTLS: the password does not cross the network in
        // clear text.
        for (name, value) in [
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_HOST", "localhost"),
            ("SMTP_TLS", "starttls"),
        ] {
            let mut allowed = vars.clone();
            allowed.push((name, value));
            assert!(load(&allowed).is_ok(), "{name}={value}");
        }
        let mut development = vars.clone();
        development.push(("HERALD_ENV", "development"));
        assert!(load(&development).is_ok());
    }

    #[test]
    fn an_api_base_url_must_be_one_that_paths_can_be_appended_to() {
        for base in [
            "herald.example.org",
            "http://",
            "ftp://example.org",
            "https://example.org/?a=b",
            "https://example.org/#top",
        ] {
            base_url_problem(dev_vars(), base);
        }
    }

    /// The one problem `API_BASE_URL=base` makes on top of `vars`.
    fn base_url_problem(mut vars: Vec<(&'static str, &'static str)>, base: &'static str) -> String {
        vars.push(("API_BASE_URL", base));
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(errors.len(), 1, "{base}: {errors:?}");
        assert!(errors[0].starts_with("API_BASE_URL:"), "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn in_development_the_links_follow_the_port_herald_listens_on() {
        let mut vars = dev_vars();
        vars.push(("PORT", "8111"));
        let mut config = load(&vars).unwrap();
        assert_eq!(config.email.api_base_url, "http://localhost:8111");
        // With PORT=0 the port is known once bound.
        config.email.listening_on(40123);
        assert_eq!(config.email.api_base_url, "http://localhost:40123");
        // A base that was set stays as it was.
        vars.push(("API_BASE_URL", "http://10.0.0.5:8000/"));
        let mut config = load(&vars).unwrap();
        config.email.listening_on(40123);
        assert_eq!(config.email.api_base_url, "http://10.0.0.5:8000");
    }

    #[test]
    fn production_requires_long_keys() {
        let mut vars = production_vars();
        vars.push(("API_ACCESS_KEY", "tiny"));
        vars.push(("SECRET_KEY", "signing-secret"));
        vars.push((
            "API_KEYS",
            "client-one:pro,0123456789abcdef0123456789abcdef:free",
        ));
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(
            errors,
            [
                "API_ACCESS_KEY: must be at least 32 characters when HERALD_ENV=production",
                "SECRET_KEY: must be at least 32 characters when HERALD_ENV=production",
                "API_KEYS: 1 of the keys shorter than 32 characters; each must be at least that \
                 long when HERALD_ENV=production"
            ]
        );
        // No key is ever shown, short or not.
        assert!(
            !errors
                .iter()
                .any(|e| e.contains("client-one") || e.contains("tiny") || e.contains("signing"))
        );
    }

    #[test]
    fn production_tightens_defaults() {
        let config = load(&production_vars()).unwrap();
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        assert!((config.telemetry.traces_sample_rate - 0.1).abs() < f32::EPSILON);
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
            ("DATABASE_MAX_CONNECTIONS", "1"),
            ("RETENTION_SESSIONS_DAYS", "7"),
        ]);
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(errors.len(), 7, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e
                    .starts_with("RETENTION_SESSIONS_DAYS: sessions are kept at least 30 days"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e == "DATABASE_MAX_CONNECTIONS: must be from 2 to 1000")
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("PORT: expected a port number"))
        );
        assert!(errors.iter().any(|e| {
            e.starts_with("EMAIL_PROVIDER: expected one of console, smtp, file, sendgrid")
        }));
    }

    #[test]
    fn schedules_zones_and_senders_are_parsed_once_and_reported_by_name() {
        let mut vars = dev_vars();
        vars.extend([
            ("DIGEST_SCHEDULE", "every sunday"),
            ("DIGEST_TIMEZONE", "Mars/Olympus"),
            ("EMAIL_FROM", "not an address"),
            ("EMAIL_REPLY_TO", "help@example.org\r\nBcc: x@example.org"),
            ("EMAIL_FEEDBACK_ID", "acme:reports"),
        ]);
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("EMAIL_FROM: expected an email address"));
        assert!(errors[1].starts_with("EMAIL_REPLY_TO: expected an email address"));
        assert!(
            errors[2].starts_with("EMAIL_FEEDBACK_ID: ")
                && errors[2].ends_with("got 'acme:reports'"),
            "{errors:?}"
        );
        assert!(errors[3].starts_with("DIGEST_TIMEZONE: expected a time zone name"));
        assert!(errors[4].starts_with("DIGEST_SCHEDULE: 'every sunday' is not a cron expression"));

        let mut vars = dev_vars();
        vars.push(("PURGE_SCHEDULE", "30 3 31 2 *"));
        let errors = load(&vars).unwrap_err().0;
        assert_eq!(
            errors,
            ["PURGE_SCHEDULE: '30 3 31 2 *' never fires (a day no month has, such as 31 February)"]
        );

        let mut vars = dev_vars();
        vars.extend([
            ("DIGEST_SCHEDULE", "0 18 * * FRI"),
            ("DIGEST_TIMEZONE", "Europe/Berlin"),
            ("EMAIL_FROM", "Herald Reports <reports@example.org>"),
            ("EMAIL_REPLY_TO", "Support <help@example.org>"),
            ("EMAIL_FEEDBACK_ID", "acme-learning.eu"),
            ("MISSED_RUN_POLICY", "skip"),
        ]);
        let config = load(&vars).unwrap();
        assert_eq!(config.jobs.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(config.jobs.digest.timezone(), "Europe/Berlin");
        assert_eq!(config.jobs.purge.timezone(), "Europe/Berlin");
        assert_eq!(
            config.jobs.missed,
            herald_actors::scheduler::MissedPolicy::Skip
        );
        assert_eq!(config.email.sender_domain(), "example.org");
        assert_eq!(config.email.from.name.as_deref(), Some("Herald Reports"));
        let reply_to = config.email.reply_to.expect("EMAIL_REPLY_TO is read");
        assert_eq!(reply_to.to_string(), "Support <help@example.org>");
        assert_eq!(
            config.email.feedback_id.as_deref(),
            Some("acme-learning.eu")
        );
        let defaults = load(&dev_vars()).unwrap().email;
        assert_eq!((defaults.reply_to, defaults.feedback_id), (None, None));
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
        assert_eq!(with("60").unwrap(), std::time::Duration::from_secs(60));
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
        let keys = load(&vars).unwrap().keys.api_keys;
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
        assert!(first.keys.generated_secrets.is_some());
        assert_eq!(first.keys.api_access_key.expose().len(), 64);
        let second = load(&[("DATABASE_URL", &url)]).unwrap();
        assert!(second.keys.generated_secrets.is_none());
        assert_eq!(first.keys.api_access_key, second.keys.api_access_key);
        assert_eq!(first.keys.secret_key, second.keys.secret_key);
        assert!(dir.path().join(DEV_SECRETS_FILE).exists());
    }

    #[test]
    fn processes_starting_at_once_on_an_empty_directory_agree_on_the_secrets() {
        // The service and a command run beside it (`herald migrate`, `herald jobs list`)
        // started together the first time: each must end up with the keys the file keeps.
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}/herald.db?mode=rwc", dir.path().display());
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let starts: Vec<_> = (0..6)
                .map(|_| {
                    let (url, start) = (url.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        let keys = load(&[("DATABASE_URL", &url)]).unwrap().keys;
                        let generated = keys.generated_secrets.is_some();
                        (keys.api_access_key, keys.secret_key, generated)
                    })
                })
                .collect();
            let seen: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
            let kept = load(&[("DATABASE_URL", &url)]).unwrap().keys;
            for (api_access_key, secret_key, _) in &seen {
                assert_eq!(api_access_key, &kept.api_access_key);
                assert_eq!(secret_key, &kept.secret_key);
            }
            let generating = seen.iter().filter(|(_, _, generated)| *generated).count();
            assert_eq!(
                generating, 1,
                "one start generates, the others read its file"
            );
        }
    }

    #[test]
    fn only_the_secrets_the_environment_left_unset_are_generated() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db?mode=rwc", dir.path().display());
        let given = "0123456789abcdef0123456789abcdef";
        let config = load(&[("DATABASE_URL", &url), ("API_ACCESS_KEY", given)]).unwrap();
        let generated = config.keys.generated_secrets.expect("SECRET_KEY generated");
        assert!(!generated.api_access_key && generated.secret_key);
        assert!(config.keys.api_access_key.matches(given));
        let kept = std::fs::read_to_string(dir.path().join(DEV_SECRETS_FILE)).unwrap();
        assert!(
            !kept.contains(given),
            "the given key is not copied into the file"
        );
        // A later start without it generates the admin key and keeps the signing key.
        let later = load(&[("DATABASE_URL", &url)]).unwrap().keys;
        let generated = later.generated_secrets.expect("API_ACCESS_KEY generated");
        assert!(generated.api_access_key && !generated.secret_key);
        assert_eq!(later.secret_key, config.keys.secret_key);
        let again = load(&[("DATABASE_URL", &url)]).unwrap().keys;
        assert!(again.generated_secrets.is_none());
        assert_eq!(again.api_access_key, later.api_access_key);
    }

    #[test]
    fn env_example_lists_every_variable_the_service_reads() {
        // Every section's source, without its tests.
        let sources = [
            include_str!("mod.rs"),
            include_str!("server.rs"),
            include_str!("storage.rs"),
            include_str!("keys.rs"),
            include_str!("email.rs"),
            include_str!("dkim.rs"),
            include_str!("events.rs"),
            include_str!("jobs.rs"),
            include_str!("rate_limit.rs"),
            include_str!("telemetry.rs"),
        ];
        let code: String = sources
            .iter()
            .map(|source| source.split("#[cfg(test)]").next().unwrap_or_default())
            .collect();
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
