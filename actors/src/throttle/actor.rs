//! The EmailThrottle actor: the one place where "may this recipient get this email now?" is
//! decided, so concurrent requests are decided one at a time and exactly.
//!
//! It caches the recent sends of the recipients it has seen; the database holds the truth.
//! Every decision is committed through the port before the reply, and after a restart the
//! cache is rebuilt from the database on first use.
//!
//! When other processes share the database ([`ThrottlePort::shared`], PostgreSQL with
//! several replicas) the cache could be stale: then each decision is taken by the port in
//! one transaction serialised per recipient in the database, and the actor keeps nothing.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::port::{LedgerState, SendRequest, ThrottlePort, Verdict};
pub use super::rules::Admission;
use super::rules::{self, ThrottleRule};
use crate::clock::SharedClock;
use crate::email::{Email, EmailType, IdempotencyKey};
use crate::port::PortError;

/// The throttle state of one recipient and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeState {
    pub email_type: EmailType,
    pub rule: ThrottleRule,
    /// Sends inside the window, oldest first.
    pub sends: Vec<i64>,
}

pub enum ThrottleMsg {
    Admit(SendRequest, RpcReplyPort<Result<Admission, PortError>>),
    State(Email, RpcReplyPort<Result<Vec<TypeState>, PortError>>),
    Reset(
        Email,
        Option<EmailType>,
        RpcReplyPort<Result<u64, PortError>>,
    ),
    /// A queued email's ledger row is committed (or failed to be).
    Committed {
        key: IdempotencyKey,
        email: Email,
        ok: bool,
    },
}

pub struct EmailThrottle<P> {
    pub port: Arc<P>,
    pub clock: SharedClock,
    pub session_reports: ThrottleRule,
    pub weekly_digest: ThrottleRule,
}

impl<P> Clone for EmailThrottle<P> {
    fn clone(&self) -> Self {
        Self {
            port: self.port.clone(),
            clock: self.clock.clone(),
            session_reports: self.session_reports,
            weekly_digest: self.weekly_digest,
        }
    }
}

/// Recent sends per (recipient, type), oldest first.
pub struct ThrottleState {
    sends: HashMap<(Email, EmailType), Vec<i64>>,
    /// Keys decided `queued` whose ledger rows are still being committed, with the
    /// duplicates that arrived meanwhile (counted in the ledger once the row exists).
    committing: HashMap<IdempotencyKey, (SendRequest, u32)>,
}

/// Above this many cached recipients, entries with no send inside their window are dropped.
const CACHE_SOFT_CAP: usize = 100_000;

impl<P: ThrottlePort> EmailThrottle<P> {
    fn rule(&self, email_type: EmailType) -> ThrottleRule {
        match email_type {
            EmailType::SessionReport => self.session_reports,
            EmailType::WeeklyDigest => self.weekly_digest,
        }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    async fn sends<'a>(
        &self,
        state: &'a mut ThrottleState,
        email: &Email,
        email_type: EmailType,
        now: i64,
    ) -> Result<&'a mut Vec<i64>, PortError> {
        self.sends_with(state, email, email_type, now, None).await
    }

    /// The recipient's sends in the window, from the cache or `preloaded` or the database.
    async fn sends_with<'a>(
        &self,
        state: &'a mut ThrottleState,
        email: &Email,
        email_type: EmailType,
        now: i64,
        preloaded: Option<Vec<i64>>,
    ) -> Result<&'a mut Vec<i64>, PortError> {
        let rule = self.rule(email_type);
        let key = (email.clone(), email_type);
        if !state.sends.contains_key(&key) {
            let loaded = match preloaded {
                Some(loaded) => loaded,
                None => {
                    self.port
                        .sends_since(email, email_type, now - rule.window_ms)
                        .await?
                }
            };
            if state.sends.len() >= CACHE_SOFT_CAP {
                let (session_reports, weekly_digest) = (self.session_reports, self.weekly_digest);
                state.sends.retain(|(_, t), sends| {
                    let rule = match t {
                        EmailType::SessionReport => session_reports,
                        EmailType::WeeklyDigest => weekly_digest,
                    };
                    !rules::in_window(sends, now, rule).is_empty()
                });
            }
            state.sends.insert(key.clone(), loaded);
        }
        let sends = state.sends.get_mut(&key).expect("inserted above");
        let live_from = sends.len() - rules::in_window(sends, now, rule).len();
        sends.drain(..live_from);
        Ok(sends)
    }

    async fn admit(
        &self,
        state: &mut ThrottleState,
        request: SendRequest,
    ) -> Result<Admission, PortError> {
        let now = self.now();
        if let Some((_, duplicates)) = state.committing.get_mut(&request.idempotency_key) {
            *duplicates += 1;
            return Ok(Admission::Duplicate);
        }
        let rule = self.rule(request.email_type);
        if request.email_type == EmailType::WeeklyDigest {
            return self.admit_digest(state, request, now, rule).await;
        }
        // A recipient not in the cache has its sends read with the ledger.
        let cached = state
            .sends
            .contains_key(&(request.email.clone(), request.email_type));
        let since = (!cached).then_some(now - rule.window_ms);
        let lookup = self.port.lookup(&request, since).await?;
        if let Some(settled) = self.settled(&request, &lookup, now).await? {
            return Ok(settled);
        }
        let sends = self
            .sends_with(state, &request.email, request.email_type, now, lookup.sends)
            .await?;
        if let Some(throttled) = self.over_limit(&request, sends, now, now, rule).await? {
            return Ok(throttled);
        }
        // Counted now; committed by a task of its own so that queued emails of many
        // recipients share a transaction (see `handle`).
        sends.push(now);
        state
            .committing
            .insert(request.idempotency_key.clone(), (request, 0));
        Ok(Admission::Queued)
    }
}

impl<P: ThrottlePort> EmailThrottle<P> {
    /// A request the ledger or the preference decides before the window: a duplicate of one
    /// in flight or sent (recorded), or a type the recipient turned off (`Suppressed`, which
    /// the caller records: see `handle`).
    async fn settled(
        &self,
        request: &SendRequest,
        lookup: &super::port::Lookup,
        now: i64,
    ) -> Result<Option<Admission>, PortError> {
        if lookup.ledger == Some(LedgerState::InFlightOrSent) {
            self.port.record(request, &Verdict::Duplicate, now).await?;
            return Ok(Some(Admission::Duplicate));
        }
        if !lookup.enabled {
            return Ok(Some(Admission::Suppressed));
        }
        Ok(None)
    }

    /// `Throttled` (recorded) when `sends` leave no room for one more counted at `at`.
    async fn over_limit(
        &self,
        request: &SendRequest,
        sends: &[i64],
        at: i64,
        now: i64,
        rule: ThrottleRule,
    ) -> Result<Option<Admission>, PortError> {
        let Err(retry_after_ms) = rules::check(sends, at, rule) else {
            return Ok(None);
        };
        let reason = rules::throttled_reason(sends.len(), rule);
        self.port
            .record(request, &Verdict::Throttled { reason }, now)
            .await?;
        Ok(Some(Admission::Throttled {
            retry_after_ms,
            rule,
        }))
    }

    /// A weekly digest counts at the start of the week it reports, not now
    /// ([`SendRequest::counted_at`]), so its window is read with the ledger each time (a
    /// run decides each recipient once: a cache would not be read again), with the digests
    /// of the recipient still being committed.
    async fn admit_digest(
        &self,
        state: &mut ThrottleState,
        request: SendRequest,
        now: i64,
        rule: ThrottleRule,
    ) -> Result<Admission, PortError> {
        let at = request.counted_at(now);
        let lookup = self
            .port
            .lookup(&request, Some(at - rule.window_ms))
            .await?;
        if let Some(settled) = self.settled(&request, &lookup, now).await? {
            return Ok(settled);
        }
        let mut sends = lookup.sends.unwrap_or_default();
        sends.extend(
            state
                .committing
                .values()
                .filter(|(r, _)| r.email == request.email && r.email_type == request.email_type)
                .map(|(r, _)| r.counted_at(now)),
        );
        sends.sort_unstable();
        let sends = rules::around(&sends, at, rule);
        if let Some(throttled) = self.over_limit(&request, sends, at, now, rule).await? {
            return Ok(throttled);
        }
        // What the state view caches is read again.
        state
            .sends
            .remove(&(request.email.clone(), request.email_type));
        state
            .committing
            .insert(request.idempotency_key.clone(), (request, 0));
        Ok(Admission::Queued)
    }

    /// Several processes share the database: every question goes to it. Decisions run in
    /// tasks of their own, so recipients do not wait for one another; the database
    /// serialises the decisions about one recipient.
    #[tracing::instrument(level = "debug", skip_all, fields(actor = "email_throttle"))]
    async fn handle_shared(&self, message: ThrottleMsg) -> Result<(), ActorProcessingErr> {
        match message {
            ThrottleMsg::Admit(request, reply) => {
                let (port, rule, now) =
                    (self.port.clone(), self.rule(request.email_type), self.now());
                tokio::spawn(async move {
                    let _ = reply.send(port.decide(&request, rule, now).await);
                });
            }
            ThrottleMsg::State(email, reply) => {
                let now = self.now();
                let mut out = Vec::new();
                for email_type in [EmailType::SessionReport, EmailType::WeeklyDigest] {
                    let rule = self.rule(email_type);
                    match self
                        .port
                        .sends_since(&email, email_type, now - rule.window_ms)
                        .await
                    {
                        Ok(sends) => out.push(TypeState {
                            email_type,
                            rule,
                            sends: rules::in_window(&sends, now, rule).to_vec(),
                        }),
                        Err(err) => {
                            let _ = reply.send(Err(err));
                            return Ok(());
                        }
                    }
                }
                let _ = reply.send(Ok(out));
            }
            ThrottleMsg::Reset(email, email_type, reply) => {
                let _ = reply.send(self.port.reset(&email, email_type).await);
            }
            ThrottleMsg::Committed { .. } => {}
        }
        Ok(())
    }
}

impl<P: ThrottlePort> Actor for EmailThrottle<P> {
    type Msg = ThrottleMsg;
    type State = ThrottleState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<ThrottleMsg>,
        _: (),
    ) -> Result<ThrottleState, ActorProcessingErr> {
        Ok(ThrottleState {
            sends: HashMap::new(),
            committing: HashMap::new(),
        })
    }

    #[tracing::instrument(level = "debug", skip_all, fields(actor = "email_throttle"))]
    async fn handle(
        &self,
        myself: ActorRef<ThrottleMsg>,
        message: ThrottleMsg,
        state: &mut ThrottleState,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::inject("email_throttle");
        if self.port.shared() {
            return self.handle_shared(message).await;
        }
        match message {
            ThrottleMsg::Admit(request, reply) => {
                let result = self.admit(state, request.clone()).await;
                match result {
                    Ok(Admission::Queued) => {
                        // The reply waits for the commit; the actor does not, so the next
                        // decisions go on and their commits can share a transaction. Until
                        // the commit lands, the key answers `duplicate`.
                        let (port, now) = (self.port.clone(), self.now());
                        tokio::spawn(async move {
                            let committed = port.enqueue(&request, now).await;
                            let ok = committed.is_ok();
                            let _ = reply.send(committed.map(|()| Admission::Queued));
                            let _ = myself.send_message(ThrottleMsg::Committed {
                                key: request.idempotency_key,
                                email: request.email,
                                ok,
                            });
                        });
                    }
                    Ok(Admission::Suppressed) => {
                        // Recorded as a queued email is committed: the reply waits, the actor
                        // does not, so a digest run's recipients who turned digests off share
                        // transactions too. A repeat meanwhile is decided and recorded again,
                        // to the same row.
                        let (port, now) = (self.port.clone(), self.now());
                        tokio::spawn(async move {
                            let recorded = port.record(&request, &Verdict::Suppressed, now).await;
                            let _ = reply.send(recorded.map(|()| Admission::Suppressed));
                        });
                    }
                    other => {
                        if other.is_err() {
                            // The database is the truth; after an I/O failure, trust nothing cached.
                            state.sends.clear();
                        }
                        let _ = reply.send(other);
                    }
                }
            }
            ThrottleMsg::Committed { key, email, ok } => {
                if let Some((request, duplicates)) = state.committing.remove(&key)
                    && ok
                    && duplicates > 0
                {
                    let (port, now) = (self.port.clone(), self.now());
                    tokio::spawn(async move {
                        for _ in 0..duplicates {
                            let _ = port.record(&request, &Verdict::Duplicate, now).await;
                        }
                    });
                }
                if !ok {
                    // The send was counted but not committed: reload this recipient.
                    state.sends.retain(|(e, _), _| e != &email);
                }
            }
            ThrottleMsg::State(email, reply) => {
                let now = self.now();
                let mut out = Vec::new();
                for email_type in [EmailType::SessionReport, EmailType::WeeklyDigest] {
                    match self.sends(state, &email, email_type, now).await {
                        Ok(sends) => out.push(TypeState {
                            email_type,
                            rule: self.rule(email_type),
                            sends: sends.clone(),
                        }),
                        Err(err) => {
                            let _ = reply.send(Err(err));
                            return Ok(());
                        }
                    }
                }
                let _ = reply.send(Ok(out));
            }
            ThrottleMsg::Reset(email, email_type, reply) => {
                let result = self.port.reset(&email, email_type).await;
                state
                    .sends
                    .retain(|(e, t), _| !(e == &email && email_type.is_none_or(|only| only == *t)));
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}
