//! The per-recipient email throttle: rules, the actor that applies them one request at a
//! time, its port to the database and the client HTTP code uses.

pub mod actor;
pub mod client;
pub mod port;
pub mod rules;

pub use actor::{Admission, EmailThrottle, ThrottleMsg, TypeState};
pub use client::{ThrottleClient, ThrottleError};
pub use port::{LedgerState, Lookup, SendRequest, ThrottlePort, Verdict};
pub use rules::ThrottleRule;
