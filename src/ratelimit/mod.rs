//! Rate limiting of herald's own endpoints: which policy applies to whom (policies,
//! identity) and the shared windows in Redis. The windows themselves are owned by the
//! `herald-actors` limiter shards; the axum layer that asks them is `http::limit`. Nothing
//! here knows of HTTP routing.

pub mod identity;
pub mod policies;
pub mod redis;
pub mod refusals;

pub use policies::{GROUPS, Group, Policies};
pub use refusals::RefusalLog;
