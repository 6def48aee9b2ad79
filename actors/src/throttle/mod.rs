//! The per-recipient email throttle: rules, the actor that applies them one request at a
//! time, its port to the database and the client HTTP code uses.

pub mod actor;
pub mod client;
pub mod port;
pub mod rules;

pub use actor::{Admission, EmailThrottle, ThrottleMsg, TypeState};
pub use client::{ThrottleClient, ThrottleError};
pub use port::{LedgerState, Lookup, SendRequest, ThrottlePort, Verdict};
pub use rules::{ThrottleRule, throttled_reason};

use std::sync::Arc;
use std::time::Duration;

use herald_supervision::{ChildSlot, ChildSpec, Observer, SupervisorSpec};

/// The throttle's supervisor child (`email_throttle`, with `shards` shard actors) and the
/// client that routes each recipient to its shard.
pub fn email_throttle<P: ThrottlePort>(
    actor: EmailThrottle<P>,
    shards: usize,
    timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
) -> (ChildSpec, ThrottleClient) {
    let slots: Vec<ChildSlot> = (0..shards.max(1)).map(|_| ChildSlot::default()).collect();
    let client = ThrottleClient::new(slots.clone(), timeout);
    let child = ChildSpec::supervisor("email_throttle", move || {
        let children = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                ChildSpec::actor(format!("email_throttle-{i}"), actor.clone(), || ())
                    .with_slot(slot.clone())
            })
            .collect();
        let spec = SupervisorSpec::one_for_one(children);
        match &observer {
            Some(observer) => spec.observer(observer.clone()),
            None => spec,
        }
    });
    (child, client)
}
