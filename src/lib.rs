//! herald: records learning sessions and delivers report emails and weekly digests safely.
//!
//! The service's library: `main` only calls [`cli::main`]. Data flows one way:
//! `cli` → `startup` → `http` / `store` → the actor crates.

pub mod cli;
pub mod config;
pub mod email;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod language;
pub mod metrics;
pub mod ratelimit;
pub mod redact;
pub mod replicas;
pub mod reports;
pub mod secret;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod templates;

/// Installs ring as the process's TLS crypto provider (for Sentry's transport, SMTP and
/// PostgreSQL TLS). Call once before any TLS client is built; later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Raises the process's limit on open files to the most it may have (the hard limit), as a
/// server does: a service manager's default soft limit (1,024 under systemd) would otherwise
/// cap the client connections herald serves at once (`HTTP_MAX_CONNECTIONS`' default). Left
/// as it is where it cannot be raised.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some() && limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}
