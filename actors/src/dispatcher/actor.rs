//! The dispatcher actor: claims due outbox rows, sends each through the port with bounded
//! concurrency, writes the outcome, and holds the circuit breaker.
//!
//! Each send runs in its own task that writes its own outcome to the ledger, so a send in
//! flight when the dispatcher stops still finishes and is recorded; `post_stop` waits for
//! them. The actor only keeps counts and the breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;

use super::port::{Claimed, DispatchObserver, DispatchPort};
use super::retry::{Attempt, Breaker, Mark, RetryPolicy};
use crate::clock::SharedClock;

pub enum DispatcherMsg {
    /// New rows were queued.
    Wake,
    /// Periodic: due retries, expired leases, depth gauge.
    Tick,
    /// A send task finished; `reached` is false when the server could not be reached.
    Finished { reached: bool },
}

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub concurrency: usize,
    pub lease_ms: i64,
    pub poll_every: Duration,
    pub retry: RetryPolicy,
    pub breaker_threshold: u32,
    pub breaker_cooldown_ms: i64,
    /// How long `post_stop` waits for sends in flight.
    pub drain_timeout: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            lease_ms: 120_000,
            poll_every: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            breaker_threshold: 3,
            breaker_cooldown_ms: 5_000,
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
    in_flight: JoinSet<()>,
    breaker: Breaker,
    ticker: Option<tokio::task::JoinHandle<()>>,
    /// A probe is out while the breaker is half-open.
    probing: bool,
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

    /// Claims and starts as many sends as the concurrency and the breaker allow.
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
            self.config
                .concurrency
                .saturating_sub(state.in_flight.len())
        };
        if free == 0 {
            return Ok(());
        }
        let claimed = self.port.claim(free, now, self.config.lease_ms).await?;
        state.probing = probe && !claimed.is_empty();
        for row in claimed {
            self.spawn_send(myself, state, row);
        }
        Ok(())
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
        state.in_flight.spawn(async move {
            let started = Instant::now();
            let attempt = this.port.deliver(&row).await;
            let reached = !matches!(attempt, Attempt::Unreachable(_));
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
            this.observer.attempted(&row, &mark, started.elapsed());
            if let Mark::Failed { error } = &mark {
                tracing::warn!(%error, "email failed");
            }
            let _ = myself.send_message(DispatcherMsg::Finished { reached });
        });
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
        let ticker = myself.send_interval(self.config.poll_every, || DispatcherMsg::Tick);
        // Rows left pending by a previous run start going at once.
        let _ = myself.send_message(DispatcherMsg::Tick);
        Ok(DispatcherState {
            in_flight: JoinSet::new(),
            breaker: Breaker::new(
                self.config.breaker_threshold,
                self.config.breaker_cooldown_ms,
            ),
            ticker: Some(ticker),
            probing: false,
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

    async fn handle(
        &self,
        myself: ActorRef<DispatcherMsg>,
        message: DispatcherMsg,
        state: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
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
                let now = self.now();
                let was_open = state.breaker.is_open(now);
                state.breaker.record(reached, now);
                state.probing = false;
                let open = state.breaker.is_open(now);
                if open != was_open {
                    self.observer.provider_up(!open);
                    if open {
                        tracing::warn!("mail server unreachable; pausing sends");
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
