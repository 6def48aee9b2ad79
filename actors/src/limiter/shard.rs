//! A limiter shard: one actor owning the windows of the keys that hash to it.
//!
//! Thin by design: the arithmetic lives in [`super::window`] and the storage behind
//! [`super::store::WindowStore`]. A shard never does I/O of its own; if it crashes, only
//! its keys' windows are lost and it starts empty.
//!
//! The shard creates its store when it starts, sweeps it, resets it and drops it when it
//! fails; between those, it *lends* the store to the tasks that check requests (a lock
//! held for the ~150 ns of window arithmetic), so a check is not a message and a reply.
//! A loan is honoured only while the lending shard lives: a failed or stopped shard's
//! store answers no check (the fail mode decides), and its successor starts with a
//! fresh one.
//!
//! With a shared backend ([`super::shared`]) the shard lends a connection and its breaker
//! instead of a store: it opens the connection when it starts, and while the breaker is open
//! it probes with a fresh connection until the backend answers again. Its keys' windows then
//! live in the backend and survive the shard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};

use super::shared::{BoxFuture, Breaker, SharedConfig, SharedWindows};
use super::store::{AtCapacity, Checked, MemoryWindows, ResetScope, WindowStore};
use super::window::Policy;
use crate::clock::SharedClock;

/// How often a shard sweeps idle windows, and how many keys one sweep may examine.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
pub const SWEEP_BUDGET: usize = 2_048;

pub enum ShardMsg {
    /// Forget the windows in `scope`; `None` when the shared backend failed.
    Reset {
        scope: ResetScope,
        reply: RpcReplyPort<Option<usize>>,
    },
    Len(RpcReplyPort<Option<usize>>),
    Sweep,
    /// With a shared backend: reconnect if the breaker is open. The first, as the shard
    /// starts, warns when the backend does not answer (a wrong `REDIS_URL` would otherwise
    /// show only in health checks and metrics); later ones are quiet.
    Probe {
        first: bool,
    },
    /// Fails the shard on purpose (operations drills and tests).
    Crash,
}

/// The store a shard lends, and the shard that owns it.
struct Lent {
    shard: ActorCell,
    windows: Windows,
}

enum Windows {
    Memory(Box<dyn WindowStore>),
    Shared {
        /// `None` until the first connection succeeds.
        conn: Option<Arc<dyn SharedWindows>>,
        breaker: Arc<Breaker>,
    },
}

/// The shared connection (`None` before the first) and the breaker a shard lends.
type SharedLent = (Option<Arc<dyn SharedWindows>>, Arc<Breaker>);

/// Where a check goes.
pub enum Route {
    /// Decided in memory, under the loan's lock.
    Decided(Checked),
    /// To be decided by the shared backend over this connection.
    Shared(Arc<dyn SharedWindows>, Arc<Breaker>),
}

/// Where a shard lends its store: one lock, taken by each check for the window arithmetic
/// and by the shard for its sweeps and resets.
#[derive(Clone, Default)]
pub struct Loan(Arc<Mutex<Option<Lent>>>);

impl Loan {
    /// Runs `f` on the lent store while its shard lives; `None` if the shard has failed or
    /// stopped (and no successor has lent a new store yet), or the store was poisoned by a
    /// panic mid-check.
    pub fn with<T>(&self, f: impl FnOnce(&mut dyn WindowStore) -> T) -> Option<T> {
        self.live(|windows| match windows {
            Windows::Memory(windows) => Some(f(windows.as_mut())),
            Windows::Shared { .. } => None,
        })
    }

    /// Runs `f` on what the shard lends, while the shard lives.
    fn live<T>(&self, f: impl FnOnce(&mut Windows) -> Option<T>) -> Option<T> {
        let mut loan = self.0.lock().ok()?;
        let lent = loan.as_mut()?;
        if matches!(
            lent.shard.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        ) {
            return None;
        }
        f(&mut lent.windows)
    }

    /// Where a check of `key` goes: decided in memory at once, or the shared backend's
    /// connection. `None` when the shard is not running or its breaker is open.
    pub fn route(&self, key: u64, policy: Policy, now_ms: u64) -> Option<Route> {
        self.live(|windows| match windows {
            Windows::Memory(windows) => Some(Route::Decided(windows.check(key, policy, now_ms))),
            Windows::Shared { conn, breaker } => {
                if breaker.is_open() {
                    return None;
                }
                Some(Route::Shared(conn.clone()?, breaker.clone()))
            }
        })
    }

    /// With a shared backend, whether its breaker is closed; `None` in memory.
    pub fn shared_up(&self) -> Option<bool> {
        let loan = self.0.lock().ok()?;
        match &loan.as_ref()?.windows {
            Windows::Memory(_) => None,
            Windows::Shared { conn, breaker } => Some(conn.is_some() && !breaker.is_open()),
        }
    }

    /// The owning shard's own use of its store.
    fn owner<T>(&self, f: impl FnOnce(&mut dyn WindowStore) -> T) -> Result<T, ActorProcessingErr> {
        // A check panicked while holding the lock: fail, so the supervisor starts a fresh
        // store.
        let mut loan = self
            .0
            .lock()
            .map_err(|_| "window store poisoned by a panic")?;
        let lent = loan.as_mut().ok_or("window store not lent")?;
        match &mut lent.windows {
            Windows::Memory(windows) => Ok(f(windows.as_mut())),
            Windows::Shared { .. } => Err("no window store in memory".into()),
        }
    }

    /// The shared connection and breaker this shard lends.
    fn shared(&self) -> Option<SharedLent> {
        let loan = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &loan.as_ref()?.windows {
            Windows::Shared { conn, breaker } => Some((conn.clone(), breaker.clone())),
            Windows::Memory(_) => None,
        }
    }

    /// Replaces the shared connection (after a successful probe).
    fn reconnected(&self, fresh: Arc<dyn SharedWindows>) {
        let mut loan = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Lent {
            windows: Windows::Shared { conn, breaker },
            ..
        }) = loan.as_mut()
        {
            *conn = Some(fresh);
            breaker.close();
        }
    }

    /// Lends a fresh store, replacing whatever a failed predecessor left.
    fn lend(&self, shard: ActorCell, windows: Windows) {
        self.0.clear_poison();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Lent { shard, windows });
    }
}

#[derive(Clone)]
pub struct Shard {
    pub clock: SharedClock,
    pub capacity: usize,
    pub at_capacity: AtCapacity,
    /// Where this shard lends its store to the checking tasks.
    pub loan: Loan,
    /// Windows kept by a shared backend instead of this process.
    pub shared: Option<SharedConfig>,
}

pub struct ShardState {
    sweeper: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Shard {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        _: (),
    ) -> Result<ShardState, ActorProcessingErr> {
        if let Some(shared) = &self.shared {
            // Open until the first connection answers; the probe runs at once and then on
            // its timer, so start-up never waits on the backend.
            let breaker = Arc::new(Breaker::default());
            breaker.trip();
            self.loan.lend(
                myself.get_cell(),
                Windows::Shared {
                    conn: None,
                    breaker,
                },
            );
            let _ = myself.send_message(ShardMsg::Probe { first: true });
            let prober = myself.send_interval(shared.breaker.probe_every, || ShardMsg::Probe {
                first: false,
            });
            return Ok(ShardState {
                sweeper: Some(prober),
            });
        }
        let sweeper = myself.send_interval(SWEEP_EVERY, || ShardMsg::Sweep);
        let windows = MemoryWindows::new(self.capacity, self.at_capacity, self.clock.now_ms());
        // Honoured from here until ractor marks this shard stopping (failed or stopped).
        self.loan
            .lend(myself.get_cell(), Windows::Memory(Box::new(windows)));
        Ok(ShardState {
            sweeper: Some(sweeper),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<ShardMsg>,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(sweeper) = state.sweeper.take() {
            sweeper.abort();
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(actor = "rate_limiter"))]
    async fn handle(
        &self,
        _: ActorRef<ShardMsg>,
        message: ShardMsg,
        _: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::inject("rate_limiter");
        if let Some(shared) = &self.shared {
            return self.handle_shared(shared, message).await;
        }
        match message {
            ShardMsg::Reset { scope, reply } => {
                let cleared = self.loan.owner(|windows| match scope {
                    ResetScope::All => windows.reset(None),
                    ResetScope::Group(group) => {
                        windows.reset(Some(&|k| k & 0xFF == u64::from(group)))
                    }
                    ResetScope::Keys(keys) => windows.reset(Some(&|k| keys.contains(&k))),
                })?;
                let _ = reply.send(Some(cleared));
            }
            ShardMsg::Len(reply) => {
                let _ = reply.send(Some(self.loan.owner(|windows| windows.len())?));
            }
            ShardMsg::Sweep => {
                let now_ms = self.clock.now_ms();
                self.loan
                    .owner(|windows| windows.sweep(now_ms, SWEEP_BUDGET))?;
            }
            ShardMsg::Probe { .. } => {}
            ShardMsg::Crash => return Err("shard crash requested".into()),
        }
        Ok(())
    }
}

impl Shard {
    /// A shard over a shared backend: resets and counts go to the backend (bounded by its
    /// timeout); probes reconnect while the breaker is open. The backend failing never
    /// fails the shard: the breaker and the caller's fail mode handle it.
    #[tracing::instrument(level = "debug", skip_all, fields(actor = "rate_limiter"))]
    async fn handle_shared(
        &self,
        shared: &SharedConfig,
        message: ShardMsg,
    ) -> Result<(), ActorProcessingErr> {
        let Some((conn, breaker)) = self.loan.shared() else {
            return Err("shared windows not lent".into());
        };
        let timeout = shared.timeout;
        match message {
            ShardMsg::Probe { first } => {
                if conn.is_some() && !breaker.is_open() {
                    return Ok(());
                }
                let why = match tokio::time::timeout(timeout, shared.backend.connect()).await {
                    Ok(Ok(fresh)) => {
                        self.loan.reconnected(fresh);
                        tracing::info!("shared rate-limit windows reachable");
                        return Ok(());
                    }
                    Ok(Err(err)) => err.message,
                    Err(_) => format!("no answer within {timeout:?}"),
                };
                if first {
                    tracing::warn!(
                        error = %why,
                        "shared rate-limit windows unreachable as the shard starts; checks \
                         apply RATE_LIMIT_FAIL_MODE until they answer"
                    );
                } else {
                    tracing::debug!(error = %why, "shared windows probe failed");
                }
            }
            ShardMsg::Reset { scope, reply } => {
                beside(conn, shared.bulk_timeout, reply, move |conn| {
                    conn.reset(scope)
                });
            }
            ShardMsg::Len(reply) => beside(conn, shared.bulk_timeout, reply, |conn| conn.tracked()),
            ShardMsg::Sweep => {}
            ShardMsg::Crash => return Err("shard crash requested".into()),
        }
        Ok(())
    }
}

/// Runs `work` on the shared connection beside the shard, so a long walk of the keyspace
/// never holds up its probes, bounded by `within`; replies `None` when it failed, timed out
/// or there is no connection.
fn beside<T: Send + 'static>(
    conn: Option<Arc<dyn SharedWindows>>,
    within: Duration,
    reply: RpcReplyPort<Option<T>>,
    work: impl FnOnce(Arc<dyn SharedWindows>) -> BoxFuture<Result<T, crate::port::PortError>>
    + Send
    + 'static,
) {
    tokio::spawn(async move {
        let answer = match conn {
            Some(conn) => tokio::time::timeout(within, work(conn))
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let _ = reply.send(answer);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::limiter::window::Policy;

    #[tokio::test]
    async fn a_loan_is_honoured_only_while_its_shard_runs() {
        let clock = Arc::new(ManualClock::new(1_000));
        let loan = Loan::default();
        assert!(loan.with(|w| w.len()).is_none(), "nothing lent yet");
        let shard = Shard {
            clock: clock.clone(),
            capacity: 10,
            at_capacity: AtCapacity::Admit,
            loan: loan.clone(),
            shared: None,
        };
        let (actor, join) = Actor::spawn(None, shard, ()).await.unwrap();
        let policy = Policy::per_seconds(1, 60);
        let check = || loan.with(|w| w.check(7, policy, 1_000).decision.admitted);
        assert_eq!(check(), Some(true));
        assert_eq!(check(), Some(false), "the lent store is the shard's own");

        // The shard fails: its store answers no more checks.
        actor.send_message(ShardMsg::Crash).unwrap();
        join.await.unwrap();
        assert!(check().is_none());
    }
}
