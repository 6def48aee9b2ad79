//! Black-box tests: the real application on 127.0.0.1:0, a fresh database per test, real
//! HTTP. Tests listed in `on_both_backends!` run on SQLite and on PostgreSQL.

mod helpers;

mod audit;
mod auth;
mod browser;
mod check;
mod cli;
mod contract;
mod dkim;
mod edge;
mod email;
mod email_events;
mod erasure;
#[cfg(feature = "fault-injection")]
mod faults;
mod fuzz;
mod health;
mod jobs;
mod load;
mod local_digest;
mod observability;
mod outage;
mod preferences;
mod rate_limit;
mod replicas;
mod runbook;
mod sendgrid;
mod sessions;
mod smtp;
mod store;
mod suppressions;
