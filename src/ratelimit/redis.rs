//! The rate-limit windows in Redis, shared by every replica (`REDIS_URL`).
//!
//! The same strict sliding window as the in-process store: a client's window is a sorted
//! set of the instants it was admitted at, and one Lua script per check expires what left
//! the window, counts, admits or refuses, and computes `Retry-After`, atomically and with
//! Redis's own clock (`TIME`), so replicas' clocks do not matter. The script is loaded when
//! a connection opens and run by `EVALSHA`. Keys are `{prefix}rl:{<key>}`: namespaced, and
//! hash-tagged so each lives whole on one Cluster slot; each expires with its window.
//!
//! This module only talks to Redis: the shard actors own the connections, the breaker and
//! the timeouts (see `herald_actors::limiter::shared`).

use std::sync::Arc;

use herald_actors::limiter::{
    BoxFuture, Decision, Policy, ResetScope, SharedBackend, SharedWindows,
};
use herald_actors::port::PortError;
use redis::aio::MultiplexedConnection;

/// KEYS[1]: the window; ARGV[1]: max requests; ARGV[2]: window in ms.
/// Returns {admitted, remaining, retry_after_ms, reset_ms}.
const CHECK: &str = r"
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < max then
  -- (instant, count) is unique: within one millisecond the count only grows.
  redis.call('ZADD', KEYS[1], now, now .. '-' .. count)
  redis.call('PEXPIRE', KEYS[1], window)
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, max - count - 1, 0, tonumber(oldest[2]) + window - now}
end
-- Admission needs count - max + 1 instants to leave; the last of them is at count - max.
local blocking = redis.call('ZRANGE', KEYS[1], count - max, count - max, 'WITHSCORES')
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #blocking == 0 then
  return {0, 0, window, window}
end
return {0, 0, tonumber(blocking[2]) + window - now, tonumber(newest[2]) + window - now}
";

/// Opens connections to one Redis.
pub struct RedisWindows {
    client: redis::Client,
    prefix: Arc<str>,
    timeout: std::time::Duration,
}

impl RedisWindows {
    /// Fails only on a URL redis cannot read; nothing is connected yet.
    pub fn new(url: &str, prefix: &str, timeout: std::time::Duration) -> Result<Self, PortError> {
        let client = redis::Client::open(url).map_err(|e| PortError::new(described(&e)))?;
        Ok(Self {
            client,
            prefix: Arc::from(prefix),
            timeout,
        })
    }
}

/// A Redis error as redis words it (what failed and why: a refused connection's I/O error,
/// a failed login, the server's reply), which never holds the URL and its password.
fn described(err: &redis::RedisError) -> String {
    format!("redis: {err}")
}

/// The key of a limiter key's window.
pub fn window_key(prefix: &str, key: u64) -> String {
    format!("{prefix}rl:{{{key:016x}}}")
}

impl SharedBackend for RedisWindows {
    fn connect(&self) -> BoxFuture<Result<Arc<dyn SharedWindows>, PortError>> {
        let (client, prefix, timeout) = (self.client.clone(), self.prefix.clone(), self.timeout);
        Box::pin(async move {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| PortError::new(described(&e)))?;
            let script = redis::Script::new(CHECK);
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| PortError::new(described(&e)))?;
            Ok(Arc::new(RedisConnection {
                conn,
                script: Arc::new(script),
                prefix,
            }) as Arc<dyn SharedWindows>)
        })
    }
}

struct RedisConnection {
    conn: MultiplexedConnection,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
}

impl RedisConnection {
    /// Calls `page` with each `SCAN` page of the keys matching `pattern`; returns the sum of
    /// what it returned.
    async fn scan<F, Fut>(
        mut conn: MultiplexedConnection,
        pattern: String,
        mut page: F,
    ) -> redis::RedisResult<usize>
    where
        F: FnMut(MultiplexedConnection, Vec<String>) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<usize>>,
    {
        let mut cursor = 0u64;
        let mut total = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                total += page(conn.clone(), keys).await?;
            }
            if next == 0 {
                return Ok(total);
            }
            cursor = next;
        }
    }

    /// Deletes every key matching `pattern`.
    async fn delete_matching(
        conn: MultiplexedConnection,
        pattern: String,
    ) -> redis::RedisResult<usize> {
        Self::scan(conn, pattern, |mut conn, keys| async move {
            redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await
        })
        .await
    }
}

impl SharedWindows for RedisConnection {
    fn check(&self, key: u64, policy: Policy) -> BoxFuture<Result<Decision, PortError>> {
        let mut conn = self.conn.clone();
        let script = self.script.clone();
        let window_key = window_key(&self.prefix, key);
        Box::pin(async move {
            let answer: Vec<i64> = script
                .key(window_key)
                .arg(policy.max_requests)
                .arg(policy.window_ms)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| PortError::new(described(&e)))?;
            let [admitted, remaining, retry_after_ms, reset_ms] = answer[..] else {
                return Err(PortError::new("the window script answered in a bad shape"));
            };
            let ms = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(Decision {
                admitted: admitted == 1,
                limit: policy.max_requests,
                remaining: u32::try_from(remaining).unwrap_or(0),
                retry_after_ms: ms(retry_after_ms),
                reset_ms: ms(reset_ms),
            })
        })
    }

    fn reset(&self, scope: ResetScope) -> BoxFuture<Result<usize, PortError>> {
        let conn = self.conn.clone();
        let prefix = self.prefix.clone();
        Box::pin(async move {
            let result = match scope {
                ResetScope::All => Self::delete_matching(conn, format!("{prefix}rl:{{*}}")).await,
                // The group is the key's low byte: the last two hex digits.
                ResetScope::Group(group) => {
                    Self::delete_matching(conn, format!("{prefix}rl:{{*{group:02x}}}")).await
                }
                ResetScope::Keys(keys) => {
                    let mut conn = conn;
                    let keys: Vec<String> = keys.iter().map(|k| window_key(&prefix, *k)).collect();
                    if keys.is_empty() {
                        Ok(0)
                    } else {
                        redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await
                    }
                }
            };
            result.map_err(|e| PortError::new(described(&e)))
        })
    }

    fn tracked(&self) -> BoxFuture<Result<usize, PortError>> {
        let conn = self.conn.clone();
        let pattern = format!("{}rl:{{*}}", self.prefix);
        Box::pin(async move {
            Self::scan(conn, pattern, |_, keys| async move { Ok(keys.len()) })
                .await
                .map_err(|e| PortError::new(described(&e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_hash_tagged_with_the_group_last() {
        let key = herald_actors::limiter::key(1, "203.0.113.7");
        let name = window_key("herald:", key);
        assert!(name.starts_with("herald:rl:{"), "{name}");
        assert!(name.ends_with("01}"), "the group is the last byte: {name}");
        assert_eq!(name.len(), "herald:rl:{}".len() + 16);
    }

    /// A Redis that cannot be reached is said with why (the log and `herald check` show
    /// it), and never with the URL's password.
    #[tokio::test]
    async fn a_refused_connection_says_why_without_the_password() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("redis://:s3cret-pw@127.0.0.1:{port}");
        let windows =
            RedisWindows::new(&url, "herald:", std::time::Duration::from_secs(2)).unwrap();
        let Err(err) = windows.connect().await else {
            panic!("connected to a closed port");
        };
        assert!(
            err.message.contains("Connection refused"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("s3cret"), "{}", err.message);
    }
}
