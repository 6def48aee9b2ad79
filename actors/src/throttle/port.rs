//! The durable side of the throttle: the send ledger, preferences and `email_throttles`,
//! implemented by the service over its database.

use std::future::Future;

use super::rules::{Admission, ThrottleRule};
use crate::email::{Email, EmailType, IdempotencyKey};
use crate::port::PortError;

/// Ledger states that make a new request a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerState {
    /// `pending`, `sending` or `sent`: the email is on its way or gone.
    InFlightOrSent,
    /// `suppressed`, `throttled` or `failed`: a new request is decided afresh.
    Settled,
}

/// One request to send an email.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub email: Email,
    pub email_type: EmailType,
    pub idempotency_key: IdempotencyKey,
    pub session_id: Option<crate::email::SessionId>,
    pub week_start: Option<String>,
    /// A weekly digest's zone (an IANA name): its week's days are that zone's calendar's,
    /// the one the run that chose the recipient read, whatever zone they have when it goes
    /// out.
    pub zone: Option<String>,
}

impl SendRequest {
    /// The instant this email counts at in its recipient's throttle window: a weekly
    /// digest's at the start of the week it reports ([`super::rules::week_counted_at`]),
    /// any other's when it is decided (`now_ms`).
    pub fn counted_at(&self, now_ms: i64) -> i64 {
        match (self.email_type, self.week_start.as_deref()) {
            (EmailType::WeeklyDigest, Some(week)) => {
                super::rules::week_counted_at(week).unwrap_or(now_ms)
            }
            _ => now_ms,
        }
    }
}

/// What the ledger and preferences say about a request before the window is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub ledger: Option<LedgerState>,
    /// Whether the recipient still wants this type of email.
    pub enabled: bool,
    /// The recipient's sends of this type since the instant asked for, oldest first.
    pub sends: Option<Vec<i64>>,
}

/// A decision to write to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Suppressed,
    Throttled { reason: String },
    Duplicate,
}

pub trait ThrottlePort: Send + Sync + 'static {
    /// Whether other processes decide over the same database (PostgreSQL, several
    /// replicas): then what an actor caches may be stale, and every request is decided by
    /// [`ThrottlePort::decide`] instead.
    fn shared(&self) -> bool {
        false
    }
    /// Decides `request` in the database, in one transaction that holds a lock on the
    /// recipient: the ledger (duplicate), the preference, the window under `rule` (with
    /// [`super::rules::check`]), and the write of the outcome. Decisions about one
    /// recipient are so serialised across processes.
    fn decide(
        &self,
        request: &SendRequest,
        rule: ThrottleRule,
        now_ms: i64,
    ) -> impl Future<Output = Result<Admission, PortError>> + Send;
    /// The ledger and preference for `request`, and, given `sends_since`, the recipient's
    /// sends of its type at or after that instant: one read.
    fn lookup(
        &self,
        request: &SendRequest,
        sends_since: Option<i64>,
    ) -> impl Future<Output = Result<Lookup, PortError>> + Send;
    /// Sends recorded for the recipient and type at or after `since_ms`, oldest first.
    fn sends_since(
        &self,
        email: &Email,
        email_type: EmailType,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<i64>, PortError>> + Send;
    /// Records a decision that sends nothing.
    fn record(
        &self,
        request: &SendRequest,
        verdict: &Verdict,
        at_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Commits, in one transaction, the `pending` ledger row and the throttle slot it uses.
    fn enqueue(
        &self,
        request: &SendRequest,
        at_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Forgets the recorded sends of a recipient (all types when `None`); returns how many.
    fn reset(
        &self,
        email: &Email,
        email_type: Option<EmailType>,
    ) -> impl Future<Output = Result<u64, PortError>> + Send;
}
