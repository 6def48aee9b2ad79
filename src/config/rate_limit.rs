//! Rate limits: the default policy of every group, what a check does when the limiter
//! cannot answer, the limiter's sizing, and the shared windows in Redis.

use std::time::Duration;

use herald_actors::limiter::Policy;

use super::reader::Reader;

/// What a rate-limit check does when the limiter cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    Open,
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// The limiter's defaults and sizing.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Default policy of `stats` and `reports` until changed at runtime.
    pub default_policy: Policy,
    /// Default policy of `sessions` (`POST /api/v1/sessions/start`) until changed at
    /// runtime: a backend starts a session for every learner, so far more than the others.
    pub sessions_policy: Policy,
    pub fail_mode: FailMode,
    pub shards: usize,
    /// Hard cap of tracked clients per shard.
    pub max_keys_per_shard: usize,
    /// How long a reset or a count of tracked clients waits for a shard.
    pub check_timeout: Duration,
    /// Prefix of every Redis key herald writes (`REDIS_KEY_PREFIX`).
    pub redis_key_prefix: String,
    /// The longest a check waits for Redis before the fail mode applies.
    pub redis_timeout: Duration,
    /// Failed admin authentications a client may make per minute before it gets 429.
    pub auth_failures_per_minute: u32,
    /// How often each replica reloads the stored policies (on PostgreSQL), so a change made
    /// on one replica is in force on all within this time.
    pub policy_refresh: Duration,
}

impl RateLimitConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        let fail_mode = r.choice(
            "RATE_LIMIT_FAIL_MODE",
            FailMode::Open,
            &[("open", FailMode::Open), ("closed", FailMode::Closed)],
        );
        let max_requests = r.ranged("RATE_LIMIT_MAX_REQUESTS", 20u32, (1, 1_000_000), "requests");
        let window_seconds = r.ranged("RATE_LIMIT_WINDOW_SECONDS", 60u64, (1, 86_400), "seconds");
        let sessions_max = r.ranged(
            "RATE_LIMIT_SESSIONS_MAX_REQUESTS",
            600u32,
            (1, 1_000_000),
            "requests",
        );
        let sessions_window = r.ranged(
            "RATE_LIMIT_SESSIONS_WINDOW_SECONDS",
            60u64,
            (1, 86_400),
            "seconds",
        );
        let shards = r.ranged("RATE_LIMIT_SHARDS", 4usize, (1, 256), "shards");
        let max_keys_per_shard = r.parse(
            "RATE_LIMIT_MAX_KEYS_PER_SHARD",
            250_000usize,
            "a number of keys",
        );
        r.nonzero("RATE_LIMIT_MAX_KEYS_PER_SHARD", max_keys_per_shard == 0);
        let redis_key_prefix = r.get_or("REDIS_KEY_PREFIX", "herald:");
        if redis_key_prefix.contains(['{', '}', '*', '?', '[', ']']) {
            r.problem("REDIS_KEY_PREFIX: cannot contain braces or glob characters ({ } * ? [ ])");
        }
        let redis_timeout = r.millis("RATE_LIMIT_REDIS_TIMEOUT_MS", 50);
        if redis_timeout.is_zero() || redis_timeout > Duration::from_secs(5) {
            r.problem("RATE_LIMIT_REDIS_TIMEOUT_MS: must be from 1 to 5000");
        }
        let auth_failures_per_minute = r.ranged(
            "RATE_LIMIT_AUTH_FAILURES",
            10u32,
            (1, 10_000),
            "failures a minute",
        );
        let policy_refresh = r.millis("POLICY_REFRESH_MS", 1_000);
        if policy_refresh < Duration::from_millis(100) {
            r.problem("POLICY_REFRESH_MS: must be at least 100");
        }
        Self {
            default_policy: Policy::per_seconds(max_requests, window_seconds),
            sessions_policy: Policy::per_seconds(sessions_max, sessions_window),
            fail_mode,
            shards,
            max_keys_per_shard,
            check_timeout: r.millis("RATE_LIMIT_CHECK_TIMEOUT_MS", 100),
            redis_key_prefix,
            redis_timeout,
            auth_failures_per_minute,
            policy_refresh,
        }
    }
}
