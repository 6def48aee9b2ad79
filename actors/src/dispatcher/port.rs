//! The dispatcher's side effects: the outbox in the database and the mail transport,
//! implemented by the service.

use std::future::Future;

use super::retry::{Attempt, Mark};
use crate::port::PortError;

/// An outbox row the dispatcher has claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    /// Attempts already counted.
    pub attempts: u32,
    pub created_at: i64,
    /// `session_reports` or `weekly_digest`, for metrics.
    pub email_type: String,
    /// When the claim's lease runs out and another claim may take the row.
    pub lease_until: i64,
}

pub trait DispatchPort: Send + Sync + 'static {
    /// Claims up to `limit` rows that are due (`pending` and due, or `sending` with an
    /// expired lease), leasing them until `now + lease_ms`.
    fn claim(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<Claimed>, PortError>> + Send;
    /// Hands claimed rows that will not be sent now back to the queue; a row whose lease
    /// ran out and was claimed again since is left alone.
    fn release(&self, claimed: &[Claimed]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Renders and sends one claimed email (re-checking the recipient's preference first).
    fn deliver(&self, claimed: &Claimed) -> impl Future<Output = Attempt> + Send;
    /// Writes the result of an attempt.
    fn mark(
        &self,
        claimed: &Claimed,
        mark: &Mark,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Rows waiting to be sent (`pending` or `sending`).
    fn depth(&self) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Called each time the dispatcher starts, the first time and after every restart: puts
    /// back in the queue the rows an earlier dispatcher of this process left `sending`,
    /// where no other process can be sending them (a database one process serves), so they
    /// need not wait out their leases. Returns how many.
    fn recover(&self) -> impl Future<Output = Result<u64, PortError>> + Send {
        std::future::ready(Ok(0))
    }
}

/// What the dispatcher reports as it works (metrics hang here).
pub trait DispatchObserver: Send + Sync + 'static {
    fn attempted(&self, _claimed: &Claimed, _mark: &Mark, _elapsed: std::time::Duration) {}
    fn depth(&self, _depth: u64) {}
    fn provider_up(&self, _up: bool) {}
    /// The send of `claimed` panicked with `message` (the panic's text, which may quote the
    /// email's data); the email is failed with [`super::actor::PANICKED`].
    fn panicked(&self, _claimed: &Claimed, _message: &str) {}
}
