//! Handlers, one file per area. Handlers are short: they parse, call the store or an
//! actor's client, and shape the response.

pub mod actors;
pub mod audit;
pub mod email_admin;
pub mod email_events;
pub mod email_retry;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod preferences;
pub mod rate_limits;
pub mod recipients;
pub mod replicas;
pub mod reports;
pub mod sessions;
pub mod stats;
pub mod suppressions;
pub mod unsubscribe;
