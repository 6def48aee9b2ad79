//! Which rate-limit refusals are worth a log line. A client refused once is logged once per
//! window; every refusal is counted in `/metrics`, and a periodic summary says how many there
//! were, so a flood from a refused client costs no log line per request. Memory is bounded:
//! past `MAX_TRACKED` clients, refusals are only counted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;
/// Clients remembered per shard; beyond it a refused client is counted, not logged.
const MAX_TRACKED: usize = 4096;

#[derive(Default)]
pub struct RefusalLog {
    /// Per client key: until when its refusals are not logged again. A std Mutex: held for a
    /// map lookup, never across an await.
    shards: [Mutex<HashMap<u64, i64>>; SHARDS],
    refused: AtomicU64,
    logged: AtomicU64,
}

/// What the refusals since the last summary came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub refused: u64,
    /// Refusals logged one by one (each a client's first in its window).
    pub logged: u64,
}

impl RefusalLog {
    /// Records a refusal of the client with limiter key `key`; true when it is the client's
    /// first in `window_ms` and should be logged.
    pub fn first_in_window(&self, key: u64, now_ms: i64, window_ms: i64) -> bool {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut shard = lock(&self.shards[(key % SHARDS as u64) as usize]);
        let first = match shard.get(&key) {
            Some(&until) => until <= now_ms,
            None => shard.len() < MAX_TRACKED,
        };
        if first {
            shard.insert(key, now_ms + window_ms.max(1));
            self.logged.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// The refusals since the last call, if any; forgets clients whose window has passed.
    pub fn take_summary(&self, now_ms: i64) -> Option<Summary> {
        for shard in &self.shards {
            lock(shard).retain(|_, until| *until > now_ms);
        }
        let summary = Summary {
            refused: self.refused.swap(0, Ordering::Relaxed),
            logged: self.logged.swap(0, Ordering::Relaxed),
        };
        (summary.refused > 0).then_some(summary)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_logged_once_per_window_and_every_refusal_is_counted() {
        let log = RefusalLog::default();
        assert!(log.first_in_window(7, 1_000, 60_000));
        for at in [1_001, 30_000, 60_999] {
            assert!(!log.first_in_window(7, at, 60_000));
        }
        assert!(log.first_in_window(8, 2_000, 60_000), "another client");
        assert!(log.first_in_window(7, 61_000, 60_000), "the next window");
        assert_eq!(
            log.take_summary(61_000),
            Some(Summary {
                refused: 6,
                logged: 3
            })
        );
        assert_eq!(log.take_summary(61_001), None, "nothing since");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_clients() {
        let log = RefusalLog::default();
        let clients = (SHARDS * MAX_TRACKED * 2) as u64;
        let logged = (0..clients)
            .filter(|&key| log.first_in_window(key, 0, 60_000))
            .count();
        assert_eq!(logged, SHARDS * MAX_TRACKED);
        let tracked: usize = log.shards.iter().map(|s| lock(s).len()).sum();
        assert_eq!(tracked, SHARDS * MAX_TRACKED);
        // Once their windows pass, the clients are forgotten.
        assert!(log.take_summary(60_000).is_some());
        assert_eq!(log.shards.iter().map(|s| lock(s).len()).sum::<usize>(), 0);
    }
}
