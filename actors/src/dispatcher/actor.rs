//! The dispatcher actor: claims due outbox rows, sends each through the port with bounded
//! concurrency, writes the outcome, and holds the circuit breaker.
//!
//! Rows are claimed a round at a time (as many as the concurrency) and wait in a queue of
//! their own until a send slot frees up, so a busy outbox costs one claim per round rather
//! than one per email. A queued row is sent only while more than half its lease is left;
//! an older one is handed back to the database and claimed afresh, as is the whole queue
//! when the breaker opens or the actor stops.
//!
//! Each send runs in its own task that writes its own outcome to the ledger, so a send in
//! flight when the dispatcher stops still finishes and is recorded; `post_stop` waits for
//! them. The actor keeps only counts, the queue of claimed rows, the ids being sent (so a
//! row handed out again while its send goes on is not sent twice) and the breaker. A claim
//! refused because the database is away is tried again at the next poll, not by failing the
//! actor. A send that panics (a defect in building the email) fails that email with a
//! reason that says so, rather than taking its send slot with it and being claimed again and
//! again once its lease runs out.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;

use super::port::{Claimed, DispatchObserver, DispatchPort};
use super::retry::{Attempt, Breaker, Mark, RetryPolicy};
use crate::clock::{SharedClock, millis};

pub enum DispatcherMsg {
    /// New rows were queued.
    Wake,
    /// Periodic: due retries, expired leases, depth gauge.
    Tick,
    /// A send is over (its outcome may still be being written); `reached` is false when
    /// the server could not be reached.
    Finished { reached: bool },
}

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub concurrency: usize,
    /// How long a claimed row is this dispatcher's.
    pub lease: Duration,
    pub poll_every: Duration,
    pub retry: RetryPolicy,
    /// Failed connections in a row that pause sending.
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// How long `post_stop` waits for sends in flight.
    pub drain_timeout: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            lease: Duration::from_secs(120),
            poll_every: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

pub struct Dispatcher<P, O> {
    pub port: Arc<P>,
    pub observer: Arc<O>,
    pub clock: SharedClock,
    pub config: DispatcherConfig,
}

impl<P, O> Clone for Dispatcher<P, O> {
    fn clone(&self) -> Self {
        Self {
            port: self.port.clone(),
            observer: self.observer.clone(),
            clock: self.clock.clone(),
            config: self.config.clone(),
        }
    }
}

pub struct DispatcherState {
    /// Send tasks, until their outcome is written.
    in_flight: JoinSet<()>,
    /// Sends talking to the server: what the concurrency bounds.
    sending: usize,
    /// The rows whose send tasks run, until their outcome is written: a row whose lease
    /// ran out meanwhile (a send slower than the lease) and is claimed again is left to
    /// its send, not sent a second time.
    in_flight_ids: Arc<Mutex<HashSet<String>>>,
    /// Claimed rows waiting for a send slot, oldest claim first.
    ready: VecDeque<Claimed>,
    breaker: Breaker,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// A probe is out while the breaker is half-open.
    probing: bool,
    /// The last claim failed (the database away): said once, not at every poll.
    claims_failing: bool,
}

/// A std Mutex, never held across an await; a task that panicked holding it left the set
/// whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A row's place in the set of rows being sent, from its send's start until its outcome is
/// written (or its task ends any other way).
struct InFlight {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl InFlight {
    fn new(ids: &Arc<Mutex<HashSet<String>>>, id: &str) -> Self {
        lock(ids).insert(id.to_owned());
        Self {
            ids: ids.clone(),
            id: id.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.ids).remove(&self.id);
    }
}

/// Why an email failed whose send panicked. The panic's text, which may quote the email's
/// data, goes to the observer (the log and Sentry, addresses masked); the ledger says where
/// to look.
pub const PANICKED: &str = "herald failed while building or sending this email (a defect: see the panic in the log \
     or Sentry); once it is fixed, send it again";

fn jitter() -> f64 {
    // Sub-second clock noise is random enough to spread retries.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

impl<P: DispatchPort, O: DispatchObserver> Dispatcher<P, O> {
    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Claims and starts as many sends as the concurrency and the breaker allow. A claim
    /// the database refuses for being away is tried again at the next poll; any other
    /// failure (a statement that cannot work) fails the actor.
    async fn pump(
        &self,
        myself: &ActorRef<DispatcherMsg>,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        // Reap finished tasks so the count is right.
        while state.in_flight.try_join_next().is_some() {}
        let now = self.now();
        let (allowed, probe) = state.breaker.allows(now);
        if !allowed || (probe && state.probing) {
            return Ok(());
        }
        let free = if probe {
            1
        } else {
            self.config.concurrency.saturating_sub(state.sending)
        };
        if free == 0 {
            return Ok(());
        }
        // A row that waited through half its lease goes back and is claimed afresh (with a
        // new lease, and the preference read again). Claims come in order, so those lead.
        let fresh_from = state
            .ready
            .iter()
            .position(|row| row.lease_until - now > millis(self.config.lease) / 2)
            .unwrap_or(state.ready.len());
        let stale: Vec<Claimed> = state.ready.drain(..fresh_from).collect();
        self.release(stale).await;
        if state.ready.is_empty() {
            let round = if probe { 1 } else { self.config.concurrency };
            let claimed = match self.port.claim(round, now, millis(self.config.lease)).await {
                Ok(claimed) => {
                    if std::mem::take(&mut state.claims_failing) {
                        tracing::info!("emails are claimed again");
                    }
                    claimed
                }
                // The database is away: the next poll tries again (a restart would not
                // bring it back, and restarts in a row would end the process).
                Err(err) if err.unavailable => {
                    if !std::mem::replace(&mut state.claims_failing, true) {
                        tracing::warn!(error = %err, "cannot claim emails to send; trying again every poll");
                    }
                    return Ok(());
                }
                Err(err) => return Err(err.into()),
            };
            let in_flight = lock(&state.in_flight_ids);
            state.ready.extend(
                claimed
                    .into_iter()
                    .filter(|row| !in_flight.contains(&row.id)),
            );
        }
        let mut started = 0;
        while started < free {
            let Some(row) = state.ready.pop_front() else {
                break;
            };
            self.spawn_send(myself, state, row);
            started += 1;
        }
        state.probing = probe && started > 0;
        Ok(())
    }

    /// Hands claimed rows back to the database.
    async fn release(&self, rows: Vec<Claimed>) {
        if rows.is_empty() {
            return;
        }
        if let Err(err) = self.port.release(&rows).await {
            // Their leases run out and they are claimed again.
            tracing::warn!(error = %err, "could not hand queued emails back");
        }
    }

    /// Writes the outcome of an attempt. A database that is away is waited for while the
    /// row's lease lasts, the row kept as in flight here: an email the server accepted whose
    /// outcome is lost would be claimed and sent again once its lease ran out. An outcome
    /// the database refuses for another reason, or still cannot take when the lease is
    /// out, is given up: the row is claimed again and sent at most once more.
    async fn record(&self, row: &Claimed, mark: &Mark, now: i64) {
        let lease_left = u64::try_from(row.lease_until.saturating_sub(now)).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(lease_left);
        let mut wait = Duration::from_millis(50);
        let mut waited = false;
        loop {
            match self.port.mark(row, mark, now).await {
                Ok(()) if waited => {
                    tracing::info!("a delivery outcome was recorded once the database was back");
                    return;
                }
                Ok(()) => return,
                Err(err) if err.unavailable && Instant::now() + wait < deadline => {
                    if !std::mem::replace(&mut waited, true) {
                        tracing::warn!(error = %err, "cannot record a delivery outcome; trying again while its lease lasts");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(err) => {
                    tracing::error!(error = %err, "could not record a delivery outcome; the row is claimed again when its lease runs out");
                    return;
                }
            }
        }
    }

    fn spawn_send(
        &self,
        myself: &ActorRef<DispatcherMsg>,
        state: &mut DispatcherState,
        row: Claimed,
    ) {
        let this = self.clone();
        let myself = myself.clone();
        let breaker_wait = state.breaker.cooldown_ms();
        let in_flight = InFlight::new(&state.in_flight_ids, &row.id);
        state.in_flight.spawn(async move {
            let started = Instant::now();
            let attempt = std::panic::AssertUnwindSafe(this.port.deliver(&row))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    this.observer
                        .panicked(&row, crate::panic_text(panic.as_ref()));
                    Attempt::Permanent(PANICKED.to_owned())
                });
            let elapsed = started.elapsed();
            let reached = !matches!(attempt, Attempt::Unreachable(_));
            // The slot is free once the server has answered; the outcome is written after,
            // in a transaction shared with other writes, without holding the slot.
            let _ = myself.send_message(DispatcherMsg::Finished { reached });
            let now = this.now();
            let mark = this.config.retry.decide(
                attempt,
                row.attempts,
                row.created_at,
                now,
                jitter(),
                breaker_wait,
            );
            this.record(&row, &mark, now).await;
            drop(in_flight);
            this.observer.attempted(&row, &mark, elapsed);
            if let Mark::Failed { error } = &mark {
                tracing::warn!(%error, "email failed");
            }
        });
        state.sending += 1;
    }
}

impl<P: DispatchPort, O: DispatchObserver> Actor for Dispatcher<P, O> {
    type Msg = DispatcherMsg;
    type State = DispatcherState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<DispatcherMsg>,
        _: (),
    ) -> Result<DispatcherState, ActorProcessingErr> {
        match self.port.recover().await {
            Ok(0) => {}
            Ok(recovered) => tracing::warn!(
                recovered,
                "emails left mid-send by a stopped dispatcher go out again"
            ),
            Err(err) => tracing::warn!(error = %err, "could not recover emails left mid-send"),
        }
        let ticker = myself.send_interval(self.config.poll_every, || DispatcherMsg::Tick);
        // Rows left pending by a previous run start going at once.
        let _ = myself.send_message(DispatcherMsg::Tick);
        Ok(DispatcherState {
            in_flight: JoinSet::new(),
            sending: 0,
            in_flight_ids: Arc::default(),
            ready: VecDeque::new(),
            breaker: Breaker::new(
                self.config.breaker_threshold,
                millis(self.config.breaker_cooldown),
            ),
            ticker: Some(ticker),
            probing: false,
            claims_failing: false,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<DispatcherMsg>,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(ticker) = state.ticker.take() {
            ticker.abort();
        }
        self.release(state.ready.drain(..).collect()).await;
        let drain = async { while state.in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                "sends still in flight at shutdown; their leases will expire and they will be retried"
            );
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(actor = "email_dispatcher"))]
    async fn handle(
        &self,
        myself: ActorRef<DispatcherMsg>,
        message: DispatcherMsg,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::inject("email_dispatcher");
        match message {
            DispatcherMsg::Wake => self.pump(&myself, state).await?,
            DispatcherMsg::Tick => {
                if let Ok(depth) = self.port.depth().await {
                    self.observer.depth(depth);
                }
                self.observer
                    .provider_up(!state.breaker.is_open(self.now()));
                self.pump(&myself, state).await?;
            }
            DispatcherMsg::Finished { reached } => {
                state.sending = state.sending.saturating_sub(1);
                let now = self.now();
                let was_open = state.breaker.is_open(now);
                state.breaker.record(reached, now);
                state.probing = false;
                let open = state.breaker.is_open(now);
                if open != was_open {
                    self.observer.provider_up(!open);
                    if open {
                        tracing::warn!("mail server unreachable; pausing sends");
                        // Claimed again, preference and all, when the server is back.
                        self.release(state.ready.drain(..).collect()).await;
                    }
                }
                if !open && reached {
                    self.pump(&myself, state).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
