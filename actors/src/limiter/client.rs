//! The handle HTTP code uses to ask the limiter: hashes a key to its shard and checks it
//! against the store that shard lends (see [`super::shard`]). Operations that go through the
//! shard itself (reset, counts) wait with a deadline, so a restarting or overloaded shard can
//! never hang a request.

use std::hash::Hasher;
use std::time::Duration;

use herald_supervision::ChildSlot;
use ractor::{ActorRef, RpcReplyPort};

use super::shard::{Loan, ShardMsg};
use super::store::Checked;
use super::window::Policy;
use crate::clock::SharedClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterError {
    /// The shard is restarting, or did not answer within the deadline.
    Unavailable,
}

/// A limiter key: who is asking (`client`) in which group of endpoints (`group`, the low
/// byte, so a whole group can be reset without knowing its clients).
pub fn key(group: u8, client: &str) -> u64 {
    key_of(group, client)
}

/// [`key`] of `client`'s display form, hashed as it is written (no string is built).
pub fn key_of(group: u8, client: impl std::fmt::Display) -> u64 {
    struct Feed(std::collections::hash_map::DefaultHasher);
    impl std::fmt::Write for Feed {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    // A fixed hasher, so a key's shard is the same for every incarnation of a shard.
    let mut feed = Feed(std::collections::hash_map::DefaultHasher::new());
    let _ = std::fmt::write(&mut feed, format_args!("{client}"));
    // What `str`'s `Hash` appends, so a key is the hash of the client's string.
    feed.0.write_u8(0xFF);
    (feed.0.finish() & !0xFF) | u64::from(group)
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
    /// Where each shard lends its store, by shard index.
    loans: Vec<Loan>,
    timeout: Duration,
    clock: SharedClock,
}

impl LimiterClient {
    pub fn new(shards: Vec<(ChildSlot, Loan)>, timeout: Duration, clock: SharedClock) -> Self {
        assert!(!shards.is_empty(), "a limiter needs at least one shard");
        let (shards, loans) = shards.into_iter().unzip();
        Self {
            shards,
            loans,
            timeout,
            clock,
        }
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

    /// Counts a request of `key` under `policy` and decides it. Never waits for more than
    /// the window arithmetic of another check on the same shard.
    pub fn check(&self, key: u64, policy: Policy) -> Result<Checked, LimiterError> {
        let now_ms = self.clock.now_ms();
        self.loans[self.shard_of(key)]
            .with(|windows| windows.check(key, policy, now_ms))
            .ok_or(LimiterError::Unavailable)
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

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};

    use super::*;

    #[test]
    fn a_key_is_the_hash_of_the_clients_string_however_it_is_written() {
        let hashed = |s: &str| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            s.hash(&mut hasher);
            (hasher.finish() & !0xFF) | 3
        };
        let v6: std::net::Ipv6Addr = "2001:db8:1:2::".parse().unwrap();
        assert_eq!(key(3, "203.0.113.7"), hashed("203.0.113.7"));
        assert_eq!(
            key_of(3, format_args!("{v6}/64")),
            hashed("2001:db8:1:2::/64")
        );
        assert_eq!(
            key_of(3, format_args!("key:{}", "ab12")),
            hashed("key:ab12")
        );
        assert_ne!(key(3, "a"), key(4, "a"), "the group is part of the key");
    }
}
