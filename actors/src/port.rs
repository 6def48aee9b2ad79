//! What actors ask of the outside world when they need I/O.

/// A failure of a port's I/O (database, provider), as text: actors only log and report it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

impl PortError {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Self(message.to_string())
    }
}
