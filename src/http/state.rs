//! The state every handler shares.

use std::sync::Arc;
use std::time::Instant;

use herald_actors::clock::SharedClock;
use herald_actors::dispatcher::DispatcherClient;
use herald_actors::limiter::LimiterClient;
use herald_actors::throttle::ThrottleClient;
use herald_supervision::SupervisorRef;

use crate::config::Config;
use crate::keys::KeyRing;
use crate::metrics::Metrics;
use crate::ratelimit::Policies;
use crate::store::Store;

/// Cheap to clone (one reference count): axum clones the state for every request and
/// every extractor that asks for it.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// Now by the state's clock, in the store's epoch milliseconds.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    pub store: Store,
    /// Group commit for hot writes (completions, the outbox).
    pub writes: crate::store::group_commit::GroupCommit,
    pub keys: Arc<KeyRing>,
    /// The root of the supervision tree, for health and `/admin/actors`.
    pub root: SupervisorRef,
    pub metrics: &'static Metrics,
    pub limiter: LimiterClient,
    pub policies: Arc<Policies>,
    /// Which rate-limit refusals get a log line (a client's first in its window).
    pub refusals: Arc<crate::ratelimit::RefusalLog>,
    pub throttle: ThrottleClient,
    pub dispatcher: DispatcherClient,
    pub scheduler: herald_actors::scheduler::SchedulerClient,
    /// The job bodies, for manual and dry runs.
    pub jobs: crate::jobs::JobContext,
    /// Summaries `/complete` hands to the dispatcher for the report email.
    pub reports: Arc<crate::email::ports::Reports>,
    /// Signs and verifies unsubscribe tokens.
    pub signer: Arc<crate::email::Signer>,
    /// Time for rules that depend on it; a manual clock in tests.
    pub clock: SharedClock,
    /// This replica as the others see it, for `/admin/replicas`.
    pub replica: Arc<crate::replicas::Me>,
    pub started: Instant,
}
