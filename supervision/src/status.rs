//! What the supervisor reports: per-child status snapshots and restart events.
//!
//! The [`Observer`] is the only way out of this crate for metrics and error reporting,
//! so the crate stays free of any telemetry dependency.

use std::time::SystemTime;

/// The lifecycle state of one child as the supervisor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Started and linked.
    Running,
    /// Died and waiting for its backoff before the next start.
    Restarting,
    /// Not running and not coming back (temporary child, normal exit, or shutdown).
    Stopped,
}

impl ChildState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

/// A snapshot of one child, as served by `GET /admin/actors`.
#[derive(Debug, Clone)]
pub struct ChildStatus {
    pub id: String,
    pub state: ChildState,
    pub restarts: u32,
    /// When and why the child last failed, if it ever did.
    pub last_failure: Option<(SystemTime, String)>,
    /// Children of this child, when it is itself a supervisor.
    pub children: Vec<ChildStatus>,
}

/// One restart decided by a supervisor.
#[derive(Debug, Clone)]
pub struct RestartEvent {
    pub supervisor: String,
    pub child: String,
    pub reason: String,
    /// How many times this child has been restarted, this one included.
    pub restarts: u32,
    pub at: SystemTime,
}

/// Hooks for metrics and error reporting. Called from the supervisor's task, never from
/// the failing child's thread, so a slow reporter cannot delay the failure's handling
/// beyond its own call.
pub trait Observer: Send + Sync + 'static {
    fn on_restart(&self, _event: &RestartEvent) {}
    fn on_meltdown(&self, _supervisor: &str, _recent: &[RestartEvent]) {}
}
