//! The rate limiter: a supervisor of shard actors, each owning the sliding windows of the
//! keys that hash to it.

pub mod client;
pub mod shard;
pub mod store;
pub mod window;

use std::time::Duration;

use std::sync::Arc;

use herald_supervision::{Backoff, ChildSlot, ChildSpec, Intensity, Observer, SupervisorSpec};

pub use client::{LimiterClient, LimiterError, ResetScope, key};
pub use store::{AtCapacity, Checked};
pub use window::{Decision, Policy};

use crate::clock::SharedClock;

/// How the limiter is built.
#[derive(Clone)]
pub struct LimiterConfig {
    pub shards: usize,
    /// Hard cap of tracked keys per shard.
    pub keys_per_shard: usize,
    pub at_capacity: AtCapacity,
    /// How long a check waits for its shard before the fail mode decides.
    pub check_timeout: Duration,
    pub clock: SharedClock,
    /// Told of every shard restart (metrics, error reports).
    pub observer: Option<Arc<dyn Observer>>,
}

/// The limiter's supervisor child spec and the client that talks to its shards.
pub fn limiter(config: LimiterConfig) -> (ChildSpec, LimiterClient) {
    let shard = shard::Shard {
        clock: config.clock.clone(),
        capacity: config.keys_per_shard,
        at_capacity: config.at_capacity,
    };
    let slots: Vec<ChildSlot> = (0..config.shards.max(1))
        .map(|_| ChildSlot::default())
        .collect();
    let client = LimiterClient::new(slots.clone(), config.check_timeout);
    let observer = config.observer;
    let child = ChildSpec::supervisor("rate_limiter", move || {
        // Rebuilt on every start of the limiter, around the same slots the client holds.
        let children = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                ChildSpec::actor(format!("shard-{i}"), shard.clone(), || ())
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
