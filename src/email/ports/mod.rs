//! The service's side of the throttle and dispatcher ports: the database through the
//! store, and the mail server through the [`Mailer`](super::Mailer). The throttle's port
//! decides and queues; the outbox's port claims, renders, sends and records.

mod outbox;
mod throttle;

use herald_actors::port::PortError;

use crate::reports::SessionSummary;

pub use outbox::{MetricsObserver, OutboxPort};
pub use throttle::StoreThrottlePort;

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Values one step passes in memory to a later step, so the later step need not read them
/// back. Bounded: a value nobody takes only costs the later step its shortcut.
pub struct HandOff<V>(std::sync::Mutex<std::collections::HashMap<String, V>>);

impl<V> Default for HandOff<V> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<V> HandOff<V> {
    const CAPACITY: usize = 10_000;

    pub fn put(&self, key: String, value: V) {
        let mut values = lock(&self.0);
        if values.len() >= Self::CAPACITY {
            values.clear();
        }
        values.insert(key, value);
    }

    pub fn take(&self, key: &str) -> Option<V> {
        lock(&self.0).remove(key)
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// Session summaries computed by `/complete`, by idempotency key, for the report email.
pub type Reports = HandOff<SessionSummary>;

fn port_error(err: impl std::fmt::Display) -> PortError {
    PortError::new(crate::redact::mask_emails_in(&err.to_string()))
}

/// A store error as a port's, telling a database that is away from a statement that failed.
fn store_error(err: crate::store::StoreError) -> PortError {
    PortError {
        unavailable: err.is_unavailable(),
        ..port_error(&err)
    }
}
