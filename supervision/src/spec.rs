//! How a supervisor is told what to run: strategies, child lifetimes, intensity, backoff
//! and the child specifications themselves.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr};

/// When a child that stopped is started again (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whatever the reason it stopped.
    Permanent,
    /// Restarted only when it failed (panic or `Err`); a normal stop is final.
    Transient,
    /// Never restarted.
    Temporary,
}

/// Which children are restarted when one fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child: the others are stopped in reverse order, then all start again in order.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// More than `max_restarts` restarts within `period` makes the supervisor give up: it stops
/// its children, then fails itself so its own supervisor sees the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            period: Duration::from_secs(10),
        }
    }
}

/// The pause before a restart. The first restart within the intensity period is immediate;
/// the following ones wait `initial`, doubling up to `max`, so a child that fails at once on
/// every start cannot spin a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Restart at once, every time.
    pub const fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
        }
    }

    /// The delay before the `nth` restart within the current intensity period (1-based).
    pub fn delay(&self, nth: u32) -> Duration {
        if nth <= 1 {
            return Duration::ZERO;
        }
        let doublings = (nth - 2).min(20);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
        }
    }
}

/// What a child's start function returns.
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;
type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

/// The current incarnation of a child, shared with the clients that message it.
///
/// The supervisor fills it on every (re)start and empties it when the child dies, so a
/// client never holds a reference to a dead incarnation and can answer "unavailable" at
/// once while a restart is pending. A `std` lock because it is held only to clone a cell.
#[derive(Clone, Default)]
pub struct ChildSlot(Arc<RwLock<Option<ActorCell>>>);

impl ChildSlot {
    pub fn cell(&self) -> Option<ActorCell> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current incarnation as a typed reference.
    pub fn get<M: ractor::Message>(&self) -> Option<ActorRef<M>> {
        self.cell().map(ActorRef::from)
    }

    pub(crate) fn set(&self, cell: Option<ActorCell>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = cell;
    }
}

impl fmt::Debug for ChildSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChildSlot")
            .field(&self.cell().map(|c| c.get_id()))
            .finish()
    }
}

/// One child of a supervisor: how to start it and how to treat its exits.
pub struct ChildSpec {
    pub id: String,
    pub restart: Restart,
    /// How long an orderly stop may take before the child is killed.
    pub shutdown: Duration,
    pub backoff: Backoff,
    pub(crate) start: StartFn,
    pub(crate) slot: ChildSlot,
    /// Set for a child that is itself a [`crate::Supervisor`], so status snapshots nest.
    pub(crate) nested: bool,
}

impl ChildSpec {
    /// A child started by an arbitrary function; the function receives the supervisor's cell
    /// and must link the new actor to it (`Actor::spawn_linked`).
    pub fn new<F>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ActorCell) -> StartFuture + Send + Sync + 'static,
    {
        Self {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            backoff: Backoff::default(),
            start: Arc::new(start),
            slot: ChildSlot::default(),
            nested: false,
        }
    }

    /// A child running `actor`, started with fresh arguments from `args` on every start.
    pub fn actor<A, F>(id: impl Into<String>, actor: A, args: F) -> Self
    where
        A: Actor + Clone + Sync,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        Self::new(id, move |supervisor| {
            let actor = actor.clone();
            let args = args();
            Box::pin(async move {
                let (actor_ref, _join) = Actor::spawn_linked(None, actor, args, supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        })
    }

    /// A nested supervisor, built from a fresh spec on every start.
    pub fn supervisor<F>(id: impl Into<String>, spec: F) -> Self
    where
        F: Fn() -> crate::SupervisorSpec + Send + Sync + 'static,
    {
        let id = id.into();
        let name = id.clone();
        let mut child = Self::new(id, move |parent| {
            let spec = spec();
            let name = name.clone();
            Box::pin(async move {
                let (sup, _join) = crate::Supervisor::spawn(name, spec, Some(parent)).await?;
                Ok(sup.cell())
            })
        });
        child.nested = true;
        child.shutdown = Duration::from_secs(15);
        child
    }

    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Uses `slot` for this child, so a spec rebuilt by a restarting parent keeps feeding
    /// the clients that already hold the slot.
    pub fn with_slot(mut self, slot: ChildSlot) -> Self {
        self.slot = slot;
        self
    }

    /// A handle on this child's current incarnation, for its clients.
    pub fn slot(&self) -> ChildSlot {
        self.slot.clone()
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_first_then_doubles_up_to_max() {
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        let delays: Vec<_> = (1..=6).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![0, 10, 20, 40, 50, 50]);
    }

    #[test]
    fn backoff_never_overflows() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(30));
    }
}
