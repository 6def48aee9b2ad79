//! herald-actors: the domain actors and the pure engines they own.
//!
//! Knows nothing of HTTP or SQL: where an actor needs I/O it declares a small trait that the
//! service implements. Each actor owns one piece of mutable state; clients talk to it
//! through typed handles with timeouts.

pub mod clock;
pub mod dispatcher;
pub mod email;
pub mod fault;
pub mod limiter;
pub mod port;
pub mod scheduler;
pub mod throttle;

/// What a panic said, when it said it in text (a panic's payload is the `&str` or `String`
/// of its message); a fixed sentence otherwise.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
