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

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};

use super::client::ResetScope;
use super::store::{AtCapacity, MemoryWindows, WindowStore};
use crate::clock::SharedClock;

/// How often a shard sweeps idle windows, and how many keys one sweep may examine.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
pub const SWEEP_BUDGET: usize = 2_048;

pub enum ShardMsg {
    /// Forget the windows in `scope`.
    Reset {
        scope: ResetScope,
        reply: RpcReplyPort<usize>,
    },
    Len(RpcReplyPort<usize>),
    Sweep,
    /// Fails the shard on purpose (operations drills and tests).
    Crash,
}

/// The store a shard lends, and the shard that owns it.
struct Lent {
    shard: ActorCell,
    windows: Box<dyn WindowStore>,
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
        let mut loan = self.0.lock().ok()?;
        let lent = loan.as_mut()?;
        if matches!(
            lent.shard.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        ) {
            return None;
        }
        Some(f(lent.windows.as_mut()))
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
        Ok(f(lent.windows.as_mut()))
    }

    /// Lends a fresh store, replacing whatever a failed predecessor left.
    fn lend(&self, shard: ActorCell, windows: Box<dyn WindowStore>) {
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
        let sweeper = myself.send_interval(SWEEP_EVERY, || ShardMsg::Sweep);
        let windows = MemoryWindows::new(self.capacity, self.at_capacity, self.clock.now_ms());
        // Honoured from here until ractor marks this shard stopping (failed or stopped).
        self.loan.lend(myself.get_cell(), Box::new(windows));
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

    async fn handle(
        &self,
        _: ActorRef<ShardMsg>,
        message: ShardMsg,
        _: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Reset { scope, reply } => {
                let cleared = self.loan.owner(|windows| match scope {
                    ResetScope::All => windows.reset(None),
                    ResetScope::Group(group) => {
                        windows.reset(Some(&|k| k & 0xFF == u64::from(group)))
                    }
                    ResetScope::Keys(keys) => windows.reset(Some(&|k| keys.contains(&k))),
                })?;
                let _ = reply.send(cleared);
            }
            ShardMsg::Len(reply) => {
                let _ = reply.send(self.loan.owner(|windows| windows.len())?);
            }
            ShardMsg::Sweep => {
                let now_ms = self.clock.now_ms();
                self.loan
                    .owner(|windows| windows.sweep(now_ms, SWEEP_BUDGET))?;
            }
            ShardMsg::Crash => return Err("shard crash requested".into()),
        }
        Ok(())
    }
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
