//! Windows kept outside the process (Redis, implemented by the service), so that every
//! replica counts the same requests.
//!
//! The shard still owns what it uses: it opens the connection, lends it to the checking
//! tasks with a circuit [`Breaker`], and while the breaker is open it probes the backend in
//! the background with a fresh connection. A check never waits longer than the backend
//! timeout, and not at all while the breaker is open: the caller's fail mode decides. This
//! module does no I/O of its own; it never retries a check (a retried check could count a
//! request twice).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::store::ResetScope;
use super::window::{Decision, Policy};
use crate::port::PortError;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One open connection to the shared windows.
pub trait SharedWindows: Send + Sync + 'static {
    /// Counts a request of `key` under `policy` and decides it, in one atomic step with the
    /// backend's own clock.
    fn check(&self, key: u64, policy: Policy) -> BoxFuture<Result<Decision, PortError>>;
    /// Clears the windows in `scope`; returns how many were cleared.
    fn reset(&self, scope: ResetScope) -> BoxFuture<Result<usize, PortError>>;
    /// How many clients have a window.
    fn tracked(&self) -> BoxFuture<Result<usize, PortError>>;
}

/// Opens connections to the shared windows.
pub trait SharedBackend: Send + Sync + 'static {
    /// A fresh connection, proven to answer.
    fn connect(&self) -> BoxFuture<Result<Arc<dyn SharedWindows>, PortError>>;
}

/// How the shards use a shared backend.
#[derive(Clone)]
pub struct SharedConfig {
    pub backend: Arc<dyn SharedBackend>,
    /// The longest a check or a connection attempt may take.
    pub timeout: Duration,
    /// The longest a reset or a count may take: they walk the keyspace, a page of keys a
    /// round trip, so they get longer than a check and run beside the shard, not in it.
    pub bulk_timeout: Duration,
    pub breaker: BreakerPolicy,
}

/// When the breaker opens, and how often an open breaker is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failed checks that open the breaker.
    pub threshold: u32,
    /// Time between probes while the breaker is open.
    pub probe_every: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            threshold: 3,
            probe_every: Duration::from_millis(500),
        }
    }
}

/// A circuit breaker over the shared backend, shared by a shard and its checking tasks.
/// Lock-free: it is read on every check.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// 1 while open: checks fail at once and only the shard's probe may close it.
    open: AtomicU64,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire) != 0
    }

    /// Counts a failed check; returns true when this failure opened the breaker.
    pub fn failed(&self, threshold: u32) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= threshold.max(1) && self.open.swap(1, Ordering::AcqRel) == 0
    }

    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// Opens at once (the connection is gone).
    pub fn trip(&self) {
        self.open.store(1, Ordering::Release);
    }

    /// Closes after a successful probe.
    pub fn close(&self) {
        self.failures.store(0, Ordering::Release);
        self.open.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_only_a_probe_closes_it() {
        let breaker = Breaker::default();
        assert!(!breaker.failed(3));
        breaker.succeeded();
        assert!(!breaker.failed(3));
        assert!(!breaker.failed(3));
        assert!(breaker.failed(3), "the third failure in a row opens it");
        assert!(breaker.is_open());
        assert!(!breaker.failed(3), "opened once");
        breaker.succeeded();
        assert!(breaker.is_open(), "a late success does not close it");
        breaker.close();
        assert!(!breaker.is_open());
    }
}
