//! What actors ask of the outside world when they need I/O.

/// A failure of a port's I/O (database, provider), as text: actors only log and report it,
/// and tell a resource that is away for now (worth waiting for) from a request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub message: String,
    /// The resource could not be reached (refused, lost, out of connections, unable to
    /// take writes): the same request may succeed once it is back.
    pub unavailable: bool,
}

impl PortError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            unavailable: false,
        }
    }

    /// A failure because the resource is away for now.
    pub fn unavailable(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            unavailable: true,
        }
    }
}
