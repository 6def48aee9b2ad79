//! Rate limiting of herald's own endpoints: which policy applies to whom (policies,
//! identity) and the axum layer that asks the limiter actors. The windows themselves live
//! in the `herald-actors` limiter shards.

pub mod identity;
pub mod layer;
pub mod policies;
pub mod redis;

pub use layer::RateLimitLayer;
pub use policies::{GROUPS, Group, Policies};
