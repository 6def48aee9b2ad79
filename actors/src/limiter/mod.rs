//! The rate limiter: a supervisor of shard actors, each owning the sliding windows of the
//! keys that hash to it and lending them to the tasks that check requests.

pub mod client;
pub mod instants;
pub mod shard;
pub mod shared;
pub mod store;
pub mod window;

use std::time::Duration;

use std::sync::Arc;

use herald_supervision::{Backoff, ChildSlot, ChildSpec, Intensity, Observer, SupervisorSpec};

pub use client::{Check, LimiterClient, LimiterError, key, key_of};
pub use shard::Loan;
pub use shared::{BoxFuture, BreakerPolicy, SharedBackend, SharedConfig, SharedWindows};
pub use store::{AtCapacity, Checked, ResetScope};
pub use window::{Decision, Policy};

use crate::clock::SharedClock;

/// How the limiter is built.
#[derive(Clone)]
pub struct LimiterConfig {
    pub shards: usize,
    /// Hard cap of tracked keys per shard.
    pub keys_per_shard: usize,
    pub at_capacity: AtCapacity,
    /// How long a reset or a count waits for a shard.
    pub check_timeout: Duration,
    pub clock: SharedClock,
    /// Told of every shard restart (metrics, error reports).
    pub observer: Option<Arc<dyn Observer>>,
    /// Windows kept by a backend every replica shares, instead of in memory.
    pub shared: Option<SharedConfig>,
}

/// The limiter's supervisor child spec and the client that talks to its shards.
pub fn limiter(config: LimiterConfig) -> (ChildSpec, LimiterClient) {
    let shards: Vec<(ChildSlot, Loan)> = (0..config.shards.max(1))
        .map(|_| (ChildSlot::default(), Loan::default()))
        .collect();
    let mut client = LimiterClient::new(shards.clone(), config.check_timeout, config.clock.clone());
    if let Some(shared) = &config.shared {
        client = client.with_shared(
            shared.timeout,
            shared.breaker.threshold,
            shared.bulk_timeout,
        );
    }
    let shared = config.shared;
    let (clock, capacity, at_capacity) = (config.clock, config.keys_per_shard, config.at_capacity);
    let observer = config.observer;
    let child = ChildSpec::supervisor("rate_limiter", move || {
        // Rebuilt on every start of the limiter, around the same slots and loans the client
        // holds.
        let children = shards
            .iter()
            .enumerate()
            .map(|(i, (slot, loan))| {
                let shard = shard::Shard {
                    clock: clock.clone(),
                    capacity,
                    at_capacity,
                    loan: loan.clone(),
                    shared: shared.clone(),
                };
                ChildSpec::actor(format!("shard-{i}"), shard, || ())
                    .backoff(Backoff::none())
                    .with_slot(slot.clone())
            })
            .collect();
        let spec = SupervisorSpec::one_for_one(children).intensity(Intensity {
            max_restarts: 20,
            period: Duration::from_secs(10),
        });
        match &observer {
            Some(observer) => spec.observer(observer.clone()),
            None => spec,
        }
    });
    (child, client)
}
