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
//! actor.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
            let attempt = this.port.deliver(&row).await;
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
            if let Err(err) = this.port.mark(&row, &mark, now).await {
                // The lease runs out and the row is claimed again: sent at most once more.
                tracing::error!(error = %err, "could not record a delivery outcome");
            }
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
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::clock::ManualClock;
    use crate::port::PortError;

    /// An outbox in memory whose sends wait for a permit, as do the writes of outcomes. A
    /// claimed row whose lease ran out is claimed again, as in the database.
    struct Outbox {
        pending: Mutex<VecDeque<Claimed>>,
        leased: Mutex<Vec<Claimed>>,
        claims: Mutex<Vec<usize>>,
        delivered: Mutex<Vec<String>>,
        sent: Mutex<Vec<String>>,
        released: Mutex<Vec<String>>,
        gate: Semaphore,
        mark_gate: Semaphore,
        /// While set, each claim fails with it.
        refusal: Mutex<Option<PortError>>,
        refused: Mutex<usize>,
    }

    const OPEN: usize = 1_000_000;

    impl Outbox {
        fn with_rows(n: usize) -> Arc<Self> {
            let rows = (0..n).map(|i| Claimed {
                id: format!("row{i}"),
                attempts: 0,
                created_at: 0,
                email_type: "session_reports".into(),
                lease_until: i64::MAX,
            });
            Arc::new(Self {
                pending: Mutex::new(rows.collect()),
                leased: Mutex::default(),
                claims: Mutex::default(),
                delivered: Mutex::default(),
                sent: Mutex::default(),
                released: Mutex::default(),
                gate: Semaphore::new(0),
                mark_gate: Semaphore::new(OPEN),
                refusal: Mutex::default(),
                refused: Mutex::default(),
            })
        }
    }

    impl Outbox {
        /// Waits for the first round of claims, lets one send through, and waits until its
        /// free slot has claimed the next round.
        async fn second_round(&self) {
            let claims = || self.claims.lock().unwrap().len();
            until("the first round", || claims() == 1).await;
            self.gate.add_permits(1);
            until("the second round", || claims() == 2).await;
        }
    }

    impl DispatchPort for Outbox {
        async fn claim(
            &self,
            limit: usize,
            now: i64,
            lease_ms: i64,
        ) -> Result<Vec<Claimed>, PortError> {
            if let Some(refusal) = self.refusal.lock().unwrap().clone() {
                *self.refused.lock().unwrap() += 1;
                return Err(refusal);
            }
            let mut leased = self.leased.lock().unwrap();
            let (expired, live): (Vec<Claimed>, Vec<Claimed>) =
                leased.drain(..).partition(|row| row.lease_until < now);
            *leased = live;
            let mut pending = self.pending.lock().unwrap();
            let take = limit.saturating_sub(expired.len()).min(pending.len());
            let claimed: Vec<Claimed> = expired
                .into_iter()
                .chain(pending.drain(..take))
                .map(|row| Claimed {
                    lease_until: now + lease_ms,
                    ..row
                })
                .collect();
            self.claims.lock().unwrap().push(claimed.len());
            leased.extend(claimed.iter().cloned());
            Ok(claimed)
        }

        async fn release(&self, claimed: &[Claimed]) -> Result<(), PortError> {
            let mut released = self.released.lock().unwrap();
            released.extend(claimed.iter().map(|row| row.id.clone()));
            self.leased
                .lock()
                .unwrap()
                .retain(|row| !claimed.iter().any(|c| c.id == row.id));
            let mut pending = self.pending.lock().unwrap();
            for row in claimed.iter().rev() {
                pending.push_front(row.clone());
            }
            Ok(())
        }

        async fn deliver(&self, claimed: &Claimed) -> Attempt {
            self.gate.acquire().await.unwrap().forget();
            self.delivered.lock().unwrap().push(claimed.id.clone());
            Attempt::Sent {
                message_id: claimed.id.clone(),
            }
        }

        async fn mark(&self, claimed: &Claimed, _: &Mark, _: i64) -> Result<(), PortError> {
            drop(self.mark_gate.acquire().await.unwrap());
            self.leased
                .lock()
                .unwrap()
                .retain(|row| row.id != claimed.id);
            self.sent.lock().unwrap().push(claimed.id.clone());
            Ok(())
        }

        async fn depth(&self) -> Result<u64, PortError> {
            Ok(self.pending.lock().unwrap().len() as u64)
        }
    }

    struct Quiet;
    impl DispatchObserver for Quiet {}

    async fn start(outbox: &Arc<Outbox>, concurrency: usize) -> ActorRef<DispatcherMsg> {
        start_with_clock(outbox, concurrency, ManualClock::new(1_000_000)).await
    }

    async fn start_with_clock(
        outbox: &Arc<Outbox>,
        concurrency: usize,
        clock: ManualClock,
    ) -> ActorRef<DispatcherMsg> {
        let dispatcher = Dispatcher {
            port: outbox.clone(),
            observer: Arc::new(Quiet),
            clock: Arc::new(clock),
            config: DispatcherConfig {
                concurrency,
                poll_every: Duration::from_secs(3600),
                drain_timeout: Duration::from_millis(50),
                ..DispatcherConfig::default()
            },
        };
        Actor::spawn(None, dispatcher, ()).await.unwrap().0
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_busy_outbox_is_claimed_a_round_at_a_time_not_a_row_at_a_time() {
        let outbox = Outbox::with_rows(40);
        outbox.gate.add_permits(1_000);
        let actor = start(&outbox, 4).await;
        until("every row sent", || outbox.sent.lock().unwrap().len() == 40).await;
        let claims = outbox.claims.lock().unwrap().clone();
        // Ten full rounds of four, then at most one empty look per slot as the last finish.
        let (full, empty): (Vec<usize>, Vec<usize>) = claims.iter().partition(|&&n| n > 0);
        assert_eq!(full, [4; 10], "{claims:?}");
        assert!(empty.len() <= 4, "{claims:?}");
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn rows_waiting_for_a_slot_are_handed_back_when_the_dispatcher_stops() {
        let outbox = Outbox::with_rows(10);
        let actor = start(&outbox, 4).await;
        // Four sends hang; one is let through, so its slot claims a new round of four,
        // starts one of them and queues three.
        outbox.second_round().await;
        actor.stop_and_wait(None, None).await.unwrap();
        let released = outbox.released.lock().unwrap().clone();
        assert_eq!(released, ["row5", "row6", "row7"]);
        assert_eq!(outbox.sent.lock().unwrap().clone(), ["row0"]);
    }

    #[tokio::test]
    async fn a_row_that_waited_through_half_its_lease_is_handed_back_and_claimed_afresh() {
        let outbox = Outbox::with_rows(4);
        let clock = ManualClock::new(1_000_000);
        let actor = start_with_clock(&outbox, 2, clock.clone()).await;
        // One send went out; its slot claimed row2 and row3, started row2 and queued row3.
        outbox.second_round().await;
        clock.advance_ms(DispatcherConfig::default().lease.as_millis() as u64 / 2);
        outbox.gate.add_permits(1);
        until("row3 handed back", || {
            !outbox.released.lock().unwrap().is_empty()
        })
        .await;
        assert_eq!(outbox.released.lock().unwrap().clone(), ["row3"]);
        outbox.gate.add_permits(10);
        until("every row sent", || outbox.sent.lock().unwrap().len() == 4).await;
        let mut sent = outbox.sent.lock().unwrap().clone();
        sent.sort();
        assert_eq!(sent, ["row0", "row1", "row2", "row3"], "each once");
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_slot_is_free_once_the_server_answered_while_the_outcome_is_written() {
        let outbox = Outbox::with_rows(6);
        let closed = outbox.mark_gate.acquire_many(OPEN as u32).await.unwrap();
        outbox.gate.add_permits(OPEN);
        let actor = start(&outbox, 2).await;
        // Two slots, and no outcome written yet: every email still goes out.
        until("every row delivered", || {
            outbox.delivered.lock().unwrap().len() == 6
        })
        .await;
        assert!(outbox.sent.lock().unwrap().is_empty());
        drop(closed);
        until("every outcome written", || {
            outbox.sent.lock().unwrap().len() == 6
        })
        .await;
        actor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_row_still_being_sent_when_its_lease_runs_out_is_not_sent_again() {
        let outbox = Outbox::with_rows(1);
        let clock = ManualClock::new(1_000_000);
        let actor = start_with_clock(&outbox, 2, clock.clone()).await;
        until("row0 claimed", || outbox.claims.lock().unwrap().len() == 1).await;
        // Its send outlasts the lease: the database hands the row out again.
        clock.advance_ms(DispatcherConfig::default().lease.as_millis() as u64 + 1);
        actor.send_message(DispatcherMsg::Wake).unwrap();
        until("row0 claimed again", || {
            outbox.claims.lock().unwrap().clone() == [1, 1]
        })
        .await;
        outbox.gate.add_permits(10);
        until("row0 recorded", || !outbox.sent.lock().unwrap().is_empty()).await;
        actor.stop_and_wait(None, None).await.unwrap();
        assert_eq!(outbox.delivered.lock().unwrap().clone(), ["row0"]);
        assert_eq!(outbox.sent.lock().unwrap().clone(), ["row0"]);
    }

    #[tokio::test]
    async fn a_claim_waits_for_a_database_that_is_away_and_fails_on_one_that_cannot_work() {
        let outbox = Outbox::with_rows(1);
        outbox.gate.add_permits(OPEN);
        *outbox.refusal.lock().unwrap() = Some(PortError::unavailable("connection refused"));
        let actor = start(&outbox, 2).await;
        for _ in 0..3 {
            actor.send_message(DispatcherMsg::Wake).unwrap();
        }
        until("four claims refused", || {
            *outbox.refused.lock().unwrap() == 4
        })
        .await;
        assert_eq!(actor.get_status(), ractor::ActorStatus::Running);
        // The database is back: the next poll sends.
        *outbox.refusal.lock().unwrap() = None;
        actor.send_message(DispatcherMsg::Wake).unwrap();
        until("row0 sent", || outbox.sent.lock().unwrap().len() == 1).await;
        // A claim that cannot work is the actor's failure, for its supervisor to see.
        *outbox.refusal.lock().unwrap() = Some(PortError::new("no such table: email_send_logs"));
        actor.send_message(DispatcherMsg::Wake).unwrap();
        until("the dispatcher failed", || {
            actor.get_status() == ractor::ActorStatus::Stopped
        })
        .await;
    }
}
