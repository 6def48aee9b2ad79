//! A limiter shard: one actor owning the windows of the keys that hash to it.
//!
//! Thin by design: the arithmetic lives in [`super::window`] and the storage behind
//! [`super::store::WindowStore`]. A shard never does I/O of its own; if it crashes, only
//! its keys' windows are lost and it starts empty.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::client::ResetScope;
use super::store::{AtCapacity, Checked, MemoryWindows, WindowStore};
use super::window::Policy;
use crate::clock::SharedClock;

/// How often a shard sweeps idle windows, and how many keys one sweep may examine.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
pub const SWEEP_BUDGET: usize = 2_048;

pub enum ShardMsg {
    Check {
        key: u64,
        policy: Policy,
        reply: RpcReplyPort<Checked>,
    },
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

#[derive(Clone)]
pub struct Shard {
    pub clock: SharedClock,
    pub capacity: usize,
    pub at_capacity: AtCapacity,
}

pub struct ShardState {
    windows: Box<dyn WindowStore>,
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
        Ok(ShardState {
            windows: Box::new(MemoryWindows::new(
                self.capacity,
                self.at_capacity,
                self.clock.now_ms(),
            )),
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
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ShardMsg::Check { key, policy, reply } => {
                let checked = state.windows.check(key, policy, self.clock.now_ms());
                let _ = reply.send(checked);
            }
            ShardMsg::Reset { scope, reply } => {
                let cleared = match scope {
                    ResetScope::All => state.windows.reset(None),
                    ResetScope::Group(group) => {
                        state.windows.reset(Some(&|k| k & 0xFF == u64::from(group)))
                    }
                    ResetScope::Keys(keys) => state.windows.reset(Some(&|k| keys.contains(&k))),
                };
                let _ = reply.send(cleared);
            }
            ShardMsg::Len(reply) => {
                let _ = reply.send(state.windows.len());
            }
            ShardMsg::Sweep => {
                state.windows.sweep(self.clock.now_ms(), SWEEP_BUDGET);
            }
            ShardMsg::Crash => return Err("shard crash requested".into()),
        }
        Ok(())
    }
}
