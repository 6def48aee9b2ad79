//! The throttle's port: decides each email against the ledger, the recipient's
//! preferences and `email_throttles`, and queues it with group commit.

use herald_actors::email::{Email, EmailType, SessionId};
use herald_actors::port::PortError;
use herald_actors::throttle::{
    Admission, LedgerState, Lookup, SendRequest, ThrottlePort, ThrottleRule, Verdict, rules,
};

use super::port_error;
use crate::store::group_commit::GroupCommit;
use crate::store::outbox::{self, LedgerKey};
use crate::store::{Store, throttles};

fn key(request: &SendRequest) -> LedgerKey<'_> {
    LedgerKey {
        idempotency_key: request.idempotency_key.as_str(),
        email: request.email.as_str(),
        email_type: request.email_type.as_str(),
        session_id: request.session_id.as_ref().map(SessionId::as_str),
        week_start: request.week_start.as_deref(),
        zone: request.zone.as_deref(),
    }
}

/// The throttle's port: the ledger, preferences and `email_throttles`.
pub struct StoreThrottlePort {
    pub store: Store,
    /// Queues emails with group commit.
    pub writes: GroupCommit,
}

impl ThrottlePort for StoreThrottlePort {
    /// On PostgreSQL several replicas may decide for one recipient.
    fn shared(&self) -> bool {
        self.store.backend() == crate::store::Backend::Postgres
    }

    async fn decide(
        &self,
        request: &SendRequest,
        rule: ThrottleRule,
        now_ms: i64,
    ) -> Result<Admission, PortError> {
        let at = request.counted_at(now_ms);
        let decided = throttles::decide_serialised(
            &self.store,
            &key(request),
            now_ms,
            at,
            at - rule.window_ms,
            |sends| {
                let sends = rules::around(sends, at, rule);
                rules::check(sends, at, rule).map_err(|retry_after_ms| {
                    let used = sends.len();
                    (retry_after_ms, rules::throttled_reason(used, rule))
                })
            },
        )
        .await
        .map_err(port_error)?;
        Ok(match decided {
            throttles::Decided::Duplicate => Admission::Duplicate,
            throttles::Decided::Suppressed => Admission::Suppressed,
            throttles::Decided::Queued => Admission::Queued,
            throttles::Decided::Throttled { retry_after_ms } => Admission::Throttled {
                retry_after_ms,
                rule,
            },
        })
    }

    async fn lookup(
        &self,
        request: &SendRequest,
        sends_since: Option<i64>,
    ) -> Result<Lookup, PortError> {
        let (status, enabled, sends) = outbox::lookup(&self.store, &key(request), sends_since)
            .await
            .map_err(port_error)?;
        Ok(Lookup {
            sends,
            ledger: status.map(|s| {
                if herald_actors::email::in_flight_or_sent(Some(&s)) {
                    LedgerState::InFlightOrSent
                } else {
                    LedgerState::Settled
                }
            }),
            enabled,
        })
    }

    async fn sends_since(
        &self,
        email: &Email,
        email_type: EmailType,
        since_ms: i64,
    ) -> Result<Vec<i64>, PortError> {
        throttles::sends_since(&self.store, email.as_str(), email_type.as_str(), since_ms)
            .await
            .map_err(port_error)
    }

    async fn record(
        &self,
        request: &SendRequest,
        verdict: &Verdict,
        at_ms: i64,
    ) -> Result<(), PortError> {
        let (status, reason) = match verdict {
            Verdict::Duplicate => {
                return outbox::record_duplicate(
                    &self.store,
                    request.idempotency_key.as_str(),
                    at_ms,
                )
                .await
                .map_err(port_error);
            }
            Verdict::Suppressed => (
                "suppressed",
                format!("{} disabled by the recipient", request.email_type.as_str()),
            ),
            Verdict::Throttled { reason } => ("throttled", reason.clone()),
        };
        // With group commit, as a queued email is: a digest run's recipients who turned
        // digests off share transactions with those it queues.
        self.writes
            .run(vec![outbox::record_statement(
                &key(request),
                status,
                Some(&reason),
                at_ms,
            )])
            .await
            .map(drop)
            .map_err(port_error)
    }

    async fn enqueue(&self, request: &SendRequest, at_ms: i64) -> Result<(), PortError> {
        self.writes
            .run(outbox::enqueue_statements(
                &key(request),
                at_ms,
                request.counted_at(at_ms),
            ))
            .await
            .map(drop)
            .map_err(port_error)
    }

    async fn reset(&self, email: &Email, email_type: Option<EmailType>) -> Result<u64, PortError> {
        throttles::reset(
            &self.store,
            email.as_str(),
            email_type.map(EmailType::as_str),
        )
        .await
        .map_err(port_error)
    }
}
