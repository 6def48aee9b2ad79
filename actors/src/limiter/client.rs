//! The handle HTTP code uses to ask the limiter: hashes a key to its shard and checks it
//! against the store that shard lends (see [`super::shard`]). Operations that go through the
//! shard itself (reset, counts) wait with a deadline, so a restarting or overloaded shard can
//! never hang a request.

use std::hash::Hasher;
use std::time::Duration;

use herald_supervision::ChildSlot;
use ractor::{ActorRef, RpcReplyPort};

use super::shard::{Loan, Route, ShardMsg};
use super::shared::BoxFuture;
use super::store::{Checked, ResetScope};
use super::window::Policy;
use crate::clock::SharedClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterError {
    /// The shard is restarting, or did not answer within the deadline, or its shared
    /// backend's breaker is open.
    Unavailable,
    /// The shared backend failed this check or did not answer within its timeout.
    Backend,
}

/// A check's answer: at once (in memory, or refused without asking a backend that is
/// down), or from the shared backend.
pub enum Check {
    Ready(Result<Checked, LimiterError>),
    Pending(BoxFuture<Result<Checked, LimiterError>>),
}

/// How checks use the shared backend: their deadline, the failures that open a shard's
/// breaker, and the deadline of resets and counts.
#[derive(Debug, Clone, Copy)]
struct SharedChecks {
    timeout: Duration,
    threshold: u32,
    bulk_timeout: Duration,
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

#[derive(Clone)]
pub struct LimiterClient {
    shards: Vec<ChildSlot>,
    /// Where each shard lends its store, by shard index.
    loans: Vec<Loan>,
    timeout: Duration,
    clock: SharedClock,
    shared: Option<SharedChecks>,
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
            shared: None,
        }
    }

    /// Checks go to a shared backend, each bounded by `timeout`; `threshold` failures in a
    /// row open a shard's breaker; resets and counts are bounded by `bulk_timeout`.
    pub fn with_shared(
        mut self,
        timeout: Duration,
        threshold: u32,
        bulk_timeout: Duration,
    ) -> Self {
        self.shared = Some(SharedChecks {
            timeout,
            threshold,
            bulk_timeout,
        });
        self
    }

    /// With a shared backend, whether every shard reaches it; `None` when the windows are
    /// in memory.
    pub fn shared_up(&self) -> Option<bool> {
        self.shared?;
        Some(self.loans.iter().all(|loan| loan.shared_up() == Some(true)))
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The index of the shard that owns `key`.
    pub fn shard_of(&self, key: u64) -> usize {
        // The high bits: the low ones also pick the bucket inside the shard's map.
        ((key >> 32) % self.shards.len() as u64) as usize
    }

    async fn ask(
        &self,
        shard: usize,
        build: impl FnOnce(RpcReplyPort<Option<usize>>) -> ShardMsg,
    ) -> Result<usize, LimiterError> {
        let actor: ActorRef<ShardMsg> =
            self.shards[shard].get().ok_or(LimiterError::Unavailable)?;
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .send_message(build(tx.into()))
            .map_err(|_| LimiterError::Unavailable)?;
        // A shared backend's own timeout bounds the shard's work; the reply waits for both.
        let deadline = self.timeout + self.shared.map_or(Duration::ZERO, |s| s.bulk_timeout);
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(Some(value))) => Ok(value),
            Ok(Ok(None)) => Err(LimiterError::Backend),
            _ => Err(LimiterError::Unavailable),
        }
    }

    /// Counts a request of `key` under `policy` and decides it. In memory it never waits
    /// for more than the window arithmetic of another check on the same shard; with a
    /// shared backend it waits at most the backend timeout, and not at all while the
    /// shard's breaker is open.
    pub fn check(&self, key: u64, policy: Policy) -> Check {
        let now_ms = self.clock.now_ms();
        match self.loans[self.shard_of(key)].route(key, policy, now_ms) {
            None => Check::Ready(Err(LimiterError::Unavailable)),
            Some(Route::Decided(checked)) => Check::Ready(Ok(checked)),
            Some(Route::Shared(conn, breaker)) => {
                let SharedChecks {
                    timeout, threshold, ..
                } = self.shared.unwrap_or(SharedChecks {
                    timeout: self.timeout,
                    threshold: 1,
                    bulk_timeout: self.timeout,
                });
                Check::Pending(Box::pin(async move {
                    match tokio::time::timeout(timeout, conn.check(key, policy)).await {
                        Ok(Ok(decision)) => {
                            breaker.succeeded();
                            Ok(Checked {
                                decision,
                                tracked: true,
                            })
                        }
                        failed => {
                            let why = match failed {
                                Ok(Err(err)) => err.message,
                                _ => format!("no answer within {timeout:?}"),
                            };
                            if breaker.failed(threshold) {
                                tracing::warn!(error = %why, "shared rate-limit windows failing; breaker open");
                            }
                            Err(LimiterError::Backend)
                        }
                    }
                }))
            }
        }
    }

    /// [`Self::check`], awaited.
    pub async fn check_now(&self, key: u64, policy: Policy) -> Result<Checked, LimiterError> {
        match self.check(key, policy) {
            Check::Ready(result) => result,
            Check::Pending(pending) => pending.await,
        }
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
            // The shared windows are one keyspace: one shard clears them for all.
            scope if self.shared.is_some() => {
                cleared += self
                    .ask(0, |reply| ShardMsg::Reset { scope, reply })
                    .await?;
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
        if self.shared.is_some() {
            return self.ask(0, ShardMsg::Len).await.unwrap_or(0);
        }
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
