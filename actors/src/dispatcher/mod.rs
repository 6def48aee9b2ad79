//! The email dispatcher: the actor that works the outbox, the retry and breaker rules it
//! follows, and its port to the database and the mail transport.

pub mod actor;
pub mod client;
pub mod port;
pub mod retry;

pub use actor::{Dispatcher, DispatcherConfig, DispatcherMsg};
pub use client::DispatcherClient;
pub use port::{Claimed, DispatchObserver, DispatchPort};
pub use retry::{Attempt, Breaker, Mark, RetryPolicy};
