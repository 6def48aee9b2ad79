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
