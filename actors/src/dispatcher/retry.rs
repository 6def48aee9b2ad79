//! What to do after a delivery attempt, and the circuit breaker. Pure.

use std::time::Duration;

use crate::clock::millis;

/// How one attempt ended, as the transport saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent {
        message_id: String,
    },
    /// The recipient turned this type off between enqueue and send.
    Suppressed,
    /// 4xx or a timeout: worth trying again.
    Transient(String),
    /// Worth trying again, and the provider said not before `after_ms` (`Retry-After`):
    /// the later of that and the backoff.
    RetryAfter {
        error: String,
        after_ms: i64,
    },
    /// 5xx: the server refused for good.
    Permanent(String),
    /// No conversation happened (connection refused, DNS, TLS): the server is down, and the
    /// attempt does not count against the email.
    Unreachable(String),
}

/// How the ledger row changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Sent {
        message_id: String,
    },
    Suppressed,
    /// Back to `pending`, due at `next_attempt_at`; `counts` says whether the attempt counted.
    Retry {
        next_attempt_at: i64,
        error: String,
        counts: bool,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// After this long since the email was queued, a transient failure is final.
    pub max_lifetime: Duration,
    /// The first retry's delay; it doubles per attempt up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            max_lifetime: Duration::from_secs(24 * 3_600),
            base_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(3_600),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random, so retries of many
    /// emails after an outage spread out instead of arriving together. `jitter` is in [0, 1).
    pub fn delay_ms(&self, attempts_so_far: u32, jitter: f64) -> i64 {
        let exp = millis(self.base_delay)
            .saturating_mul(1i64 << attempts_so_far.saturating_sub(1).min(30))
            .min(millis(self.max_delay));
        exp / 2 + ((exp / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64
    }

    /// The ledger change for `attempt`, the `attempts` already counted before it, when the
    /// email was queued, and now.
    pub fn decide(
        &self,
        attempt: Attempt,
        attempts_before: u32,
        queued_at: i64,
        now: i64,
        jitter: f64,
        breaker_wait_ms: i64,
    ) -> Mark {
        match attempt {
            Attempt::Sent { message_id } => Mark::Sent { message_id },
            Attempt::Suppressed => Mark::Suppressed,
            Attempt::Permanent(error) => Mark::Failed { error },
            Attempt::Unreachable(error) => Mark::Retry {
                next_attempt_at: now + breaker_wait_ms,
                error,
                counts: false,
            },
            Attempt::Transient(error) => {
                self.retry(error, 0, attempts_before, queued_at, now, jitter)
            }
            Attempt::RetryAfter { error, after_ms } => {
                self.retry(error, after_ms, attempts_before, queued_at, now, jitter)
            }
        }
    }

    /// A counted retry, no sooner than `at_least_ms` from now, or the end of the email.
    fn retry(
        &self,
        error: String,
        at_least_ms: i64,
        attempts_before: u32,
        queued_at: i64,
        now: i64,
        jitter: f64,
    ) -> Mark {
        let attempts = attempts_before + 1;
        let next = now + self.delay_ms(attempts, jitter).max(at_least_ms);
        if attempts >= self.max_attempts || next - queued_at > millis(self.max_lifetime) {
            Mark::Failed {
                error: format!("gave up after {attempts} attempts: {error}"),
            }
        } else {
            Mark::Retry {
                next_attempt_at: next,
                error,
                counts: true,
            }
        }
    }
}

/// Opens after `threshold` consecutive unreachable attempts; while open, nothing is sent.
/// After `cooldown_ms` it lets one probe through (half-open); a success closes it.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown_ms: i64,
    consecutive: u32,
    open_until: Option<i64>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown_ms: i64) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms,
            consecutive: 0,
            open_until: None,
        }
    }

    pub fn cooldown_ms(&self) -> i64 {
        self.cooldown_ms
    }

    /// Whether sends may be attempted at `now`; `probe` says only one should go.
    pub fn allows(&self, now: i64) -> (bool, bool) {
        match self.open_until {
            None => (true, false),
            Some(until) if now >= until => (true, true),
            Some(_) => (false, false),
        }
    }

    pub fn is_open(&self, now: i64) -> bool {
        !self.allows(now).0
    }

    /// Records the result of an attempt: `reached` is false when no conversation happened.
    pub fn record(&mut self, reached: bool, now: i64) {
        if reached {
            self.consecutive = 0;
            self.open_until = None;
        } else {
            self.consecutive += 1;
            if self.consecutive >= self.threshold || self.open_until.is_some() {
                self.open_until = Some(now + self.cooldown_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        max_lifetime: Duration::from_millis(10_000_000),
        base_delay: Duration::from_millis(1_000),
        max_delay: Duration::from_millis(60_000),
    };

    #[test]
    fn backoff_doubles_with_jitter_within_bounds() {
        for (attempts, full) in [(1, 1_000), (2, 2_000), (3, 4_000), (10, 60_000)] {
            let low = POLICY.delay_ms(attempts, 0.0);
            let high = POLICY.delay_ms(attempts, 0.999_999);
            assert_eq!(low, full / 2);
            assert!(high < full && high >= full - 1, "{attempts}: {high}");
        }
    }

    #[test]
    fn transient_failures_retry_until_the_attempt_limit() {
        let mark = POLICY.decide(Attempt::Transient("451".into()), 0, 0, 0, 0.5, 0);
        assert!(matches!(mark, Mark::Retry { counts: true, .. }));
        let last = POLICY.decide(Attempt::Transient("451".into()), 2, 0, 0, 0.5, 0);
        assert!(matches!(last, Mark::Failed { .. }));
    }

    #[test]
    fn a_retry_after_is_honoured_when_longer_than_the_backoff() {
        let later = |after_ms| {
            POLICY.decide(
                Attempt::RetryAfter {
                    error: "429".into(),
                    after_ms,
                },
                0,
                0,
                100,
                0.0,
                0,
            )
        };
        assert!(matches!(
            later(120_000),
            Mark::Retry {
                next_attempt_at: 120_100,
                counts: true,
                ..
            }
        ));
        // Shorter than the backoff (500 ms at the first attempt, no jitter): the backoff.
        assert!(matches!(
            later(10),
            Mark::Retry {
                next_attempt_at: 600,
                ..
            }
        ));
    }

    #[test]
    fn transient_failures_stop_at_the_lifetime() {
        let policy = RetryPolicy {
            max_lifetime: Duration::from_millis(1_000),
            ..POLICY
        };
        let mark = policy.decide(Attempt::Transient("timeout".into()), 0, 0, 900, 0.0, 0);
        assert!(matches!(mark, Mark::Failed { .. }));
    }

    #[test]
    fn permanent_failures_fail_at_once_and_unreachable_does_not_count() {
        assert_eq!(
            POLICY.decide(
                Attempt::Permanent("550 no such user".into()),
                0,
                0,
                0,
                0.0,
                0
            ),
            Mark::Failed {
                error: "550 no such user".into()
            }
        );
        let mark = POLICY.decide(
            Attempt::Unreachable("refused".into()),
            5,
            0,
            100,
            0.0,
            2_000,
        );
        assert_eq!(
            mark,
            Mark::Retry {
                next_attempt_at: 2_100,
                error: "refused".into(),
                counts: false
            }
        );
    }

    #[test]
    fn the_breaker_opens_after_consecutive_unreachable_and_probes_after_cooldown() {
        let mut breaker = Breaker::new(3, 1_000);
        breaker.record(false, 0);
        breaker.record(false, 1);
        assert_eq!(breaker.allows(2), (true, false));
        breaker.record(false, 2);
        assert!(breaker.is_open(500));
        assert_eq!(breaker.allows(1_002), (true, true));
        breaker.record(false, 1_002);
        assert!(breaker.is_open(1_500), "a failed probe reopens it");
        breaker.record(true, 2_100);
        assert_eq!(breaker.allows(2_100), (true, false));
    }
}
