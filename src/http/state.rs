//! The state every handler shares.

use std::sync::Arc;
use std::time::Instant;

use herald_supervision::SupervisorRef;

use super::auth::KeyRing;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    /// The root of the supervision tree, for health and `/admin/actors`.
    pub root: SupervisorRef,
    pub metrics: &'static Metrics,
    pub started: Instant,
}
