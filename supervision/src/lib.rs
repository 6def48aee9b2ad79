//! herald-supervision: an Erlang/OTP-style supervisor for [ractor] actors.
//!
//! ractor links children to a parent and tells the parent when a child dies, but it has
//! no restart policy of its own. This crate owns that policy: restart strategies
//! ([`Strategy`]), child lifetimes ([`Restart`]), restart intensity with escalation
//! ([`Intensity`]), a backoff between restarts ([`Backoff`]), ordered shutdown and a
//! status snapshot ([`ChildStatus`]).
//!
//! It knows nothing of the domain: metrics and error reporting hang off an [`Observer`]
//! supplied by the application.

mod intensity;
mod spec;
mod status;
mod supervisor;

pub use intensity::RestartWindow;
pub use spec::{Backoff, ChildSlot, ChildSpec, Intensity, Restart, StartFuture, Strategy};
pub use status::{ChildState, ChildStatus, Observer, RestartEvent};
pub use supervisor::{Supervisor, SupervisorError, SupervisorMsg, SupervisorRef, SupervisorSpec};
