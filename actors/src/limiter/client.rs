//! The handle HTTP code uses to ask the limiter: hashes a key to its shard and asks it,
//! with a deadline, so a restarting or overloaded shard can never hang a request.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use herald_supervision::ChildSlot;
use ractor::{ActorRef, RpcReplyPort};

use super::shard::ShardMsg;
use super::store::Checked;
use super::window::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterError {
    /// The shard is restarting, or did not answer within the deadline.
    Unavailable,
}

/// A limiter key: who is asking (`client`) in which group of endpoints (`group`, the low
/// byte, so a whole group can be reset without knowing its clients).
pub fn key(group: u8, client: &str) -> u64 {
    // A fixed hasher, so a key's shard is the same for every incarnation of a shard.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    client.hash(&mut hasher);
    (hasher.finish() & !0xFF) | u64::from(group)
}

/// Which windows a reset clears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetScope {
    All,
    Group(u8),
    Keys(Vec<u64>),
}

#[derive(Clone)]
pub struct LimiterClient {
    shards: Vec<ChildSlot>,
    timeout: Duration,
}

impl LimiterClient {
    pub fn new(shards: Vec<ChildSlot>, timeout: Duration) -> Self {
        assert!(!shards.is_empty(), "a limiter needs at least one shard");
        Self { shards, timeout }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The index of the shard that owns `key`.
    pub fn shard_of(&self, key: u64) -> usize {
        // The high bits: the low ones also pick the bucket inside the shard's map.
        ((key >> 32) % self.shards.len() as u64) as usize
    }

    async fn ask<T: Send + 'static>(
        &self,
        shard: usize,
        build: impl FnOnce(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, LimiterError> {
        let actor: ActorRef<ShardMsg> =
            self.shards[shard].get().ok_or(LimiterError::Unavailable)?;
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .send_message(build(tx.into()))
            .map_err(|_| LimiterError::Unavailable)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(LimiterError::Unavailable),
        }
    }

    pub async fn check(&self, key: u64, policy: Policy) -> Result<Checked, LimiterError> {
        self.ask(self.shard_of(key), |reply| ShardMsg::Check {
            key,
            policy,
            reply,
        })
        .await
    }

    /// Clears the windows in `scope`; returns how many were cleared.
    pub async fn reset(&self, scope: ResetScope) -> Result<usize, LimiterError> {
        let mut cleared = 0;
        match scope {
            ResetScope::Keys(keys) => {
                let mut by_shard = vec![Vec::new(); self.shards.len()];
                for key in keys {
                    by_shard[self.shard_of(key)].push(key);
                }
                for (shard, keys) in by_shard.into_iter().enumerate() {
                    if keys.is_empty() {
                        continue;
                    }
                    let scope = ResetScope::Keys(keys);
                    cleared += self
                        .ask(shard, |reply| ShardMsg::Reset { scope, reply })
                        .await?;
                }
            }
            scope => {
                for shard in 0..self.shards.len() {
                    let scope = scope.clone();
                    cleared += self
                        .ask(shard, |reply| ShardMsg::Reset { scope, reply })
                        .await?;
                }
            }
        }
        Ok(cleared)
    }

    /// Tracked keys across the shards that answered.
    pub async fn tracked_keys(&self) -> usize {
        let mut total = 0;
        for shard in 0..self.shards.len() {
            total += self.ask(shard, ShardMsg::Len).await.unwrap_or(0);
        }
        total
    }

    /// Fails the shard that owns `key` (drills and tests).
    pub fn crash_shard_of(&self, key: u64) {
        if let Some(actor) = self.shards[self.shard_of(key)].get::<ShardMsg>() {
            let _ = actor.send_message(ShardMsg::Crash);
        }
    }
}
