//! Fault injection for the resilience tests, compiled only with the `fault-injection` cargo
//! feature; the default build has none of it and [`inject`] is an empty inline function.
//!
//! With `HERALD_FAULT_EVERY=N` in the environment, each actor panics on every N-th message
//! it handles (counted per actor kind: all limiter shards share one count), so a test can
//! watch herald answer, restart and lose nothing while its actors fail. With
//! `HERALD_FAULT_EVERY=1` every message fails: a restart storm.

/// Called first in each actor's `handle`.
#[cfg(feature = "fault-injection")]
pub fn inject(actor: &'static str) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    static EVERY: OnceLock<Option<u64>> = OnceLock::new();
    static COUNTS: Mutex<Option<HashMap<&'static str, u64>>> = Mutex::new(None);
    let every = *EVERY.get_or_init(|| {
        std::env::var("HERALD_FAULT_EVERY")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
    });
    let Some(every) = every else {
        return;
    };
    let count = {
        let mut counts = COUNTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts
            .get_or_insert_with(HashMap::new)
            .entry(actor)
            .or_insert(0);
        *count += 1;
        *count
    };
    if count.is_multiple_of(every) {
        panic!("injected fault: {actor} fails its message {count}");
    }
}

/// Called first in each actor's `handle`; nothing without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn inject(_actor: &'static str) {}
