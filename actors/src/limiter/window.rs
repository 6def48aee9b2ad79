//! The strict sliding window: never more than `max` admitted in any interval of `window`.
//!
//! A window keeps the instants of the requests it admitted (a log, not a counter), so the
//! rule holds exactly for every interval, not just on average. Pure: the caller passes the
//! time, which makes the rule testable against a brute-force oracle.

/// How many requests are allowed per how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub max_requests: u32,
    pub window_ms: u64,
}

impl Policy {
    pub fn per_seconds(max_requests: u32, seconds: u64) -> Self {
        Self {
            max_requests,
            window_ms: seconds * 1000,
        }
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    pub limit: u32,
    /// Requests still allowed in the current window after this one.
    pub remaining: u32,
    /// Milliseconds until the next request would be admitted (0 when it would be now).
    pub retry_after_ms: u64,
    /// Milliseconds until the window has fully drained.
    pub reset_ms: u64,
}

use super::instants::Instants;

/// The admitted instants of one client, oldest first, as milliseconds relative to the
/// shard's epoch (`u32`: 49 days of range, half the memory of `u64`).
#[derive(Debug, Clone, Default)]
pub struct Window {
    admitted: Instants,
}

impl Window {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks (and, when admitted, records) a request at `now` under `policy`.
    ///
    /// A lowered limit applies at once (instants already admitted still count); a raised
    /// one grants no burst beyond what the admitted instants leave room for.
    pub fn check(&mut self, now: u32, policy: Policy) -> Decision {
        let window = u32::try_from(policy.window_ms).unwrap_or(u32::MAX);
        self.expire(now, window);
        let limit = policy.max_requests;
        let count = self.admitted.len();
        if (count as u64) < u64::from(limit) {
            self.admitted.push_back(now);
            let oldest = self.admitted.front().unwrap_or(now);
            Decision {
                admitted: true,
                limit,
                remaining: limit - count as u32 - 1,
                retry_after_ms: 0,
                reset_ms: u64::from(oldest.saturating_add(window) - now),
            }
        } else {
            // Admission needs `count - limit + 1` instants to leave the window; the last of
            // them is at index `count - limit`.
            let blocking = self.admitted.get(count - limit as usize).unwrap_or(now);
            let newest = self.admitted.back().unwrap_or(now);
            Decision {
                admitted: false,
                limit,
                remaining: 0,
                retry_after_ms: u64::from(blocking.saturating_add(window).saturating_sub(now)),
                reset_ms: u64::from(newest.saturating_add(window).saturating_sub(now)),
            }
        }
    }

    /// Forgets instants that have left the window `(now - window, now]`.
    pub fn expire(&mut self, now: u32, window: u32) {
        while let Some(oldest) = self.admitted.front() {
            if oldest.saturating_add(window) <= now {
                self.admitted.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether nothing admitted is still inside a window of `window` ms at `now`.
    pub fn is_idle(&self, now: u32, window: u32) -> bool {
        self.admitted
            .back()
            .is_none_or(|newest| newest.saturating_add(window) <= now)
    }

    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }

    /// Moves every instant `by` ms earlier, when the shard moves its epoch forward.
    pub fn rebase(&mut self, by: u32) {
        self.admitted.update(|instant| instant.saturating_sub(by));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: Policy = Policy {
        max_requests: 3,
        window_ms: 1000,
    };

    #[test]
    fn admits_up_to_the_limit_then_refuses() {
        let mut w = Window::new();
        for i in 0..3 {
            let d = w.check(i * 10, POLICY);
            assert!(d.admitted);
            assert_eq!(d.remaining, 2 - i);
        }
        let refused = w.check(30, POLICY);
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after_ms, 970);
    }

    #[test]
    fn a_request_at_the_retry_after_moment_is_admitted() {
        let mut w = Window::new();
        for t in [0, 100, 200] {
            assert!(w.check(t, POLICY).admitted);
        }
        let refused = w.check(500, POLICY);
        let at = 500 + refused.retry_after_ms as u32;
        assert!(!w.check(at - 1, POLICY).admitted);
        assert!(w.check(at, POLICY).admitted);
    }

    #[test]
    fn a_lowered_limit_applies_at_once_and_a_raised_one_grants_no_burst() {
        let mut w = Window::new();
        for t in 0..3 {
            assert!(w.check(t, POLICY).admitted);
        }
        let lower = Policy {
            max_requests: 2,
            ..POLICY
        };
        let d = w.check(10, lower);
        assert!(!d.admitted);
        // Two of the three must leave before a fourth fits under a limit of two.
        assert_eq!(d.retry_after_ms, 1001 - 10);
        let higher = Policy {
            max_requests: 5,
            ..POLICY
        };
        assert!(w.check(20, higher).admitted);
        assert!(w.check(21, higher).admitted);
        assert!(
            !w.check(22, higher).admitted,
            "only 5 in any window, counting the earlier 3"
        );
    }

    #[test]
    fn idle_once_the_newest_instant_has_left_the_window() {
        let mut w = Window::new();
        w.check(100, POLICY);
        assert!(!w.is_idle(1099, 1000));
        assert!(w.is_idle(1100, 1000));
    }

    /// The oracle: admit iff fewer than `max` admitted instants lie in `(t - w, t]`.
    fn oracle(arrivals: &[u32], policy: Policy) -> Vec<bool> {
        let mut admitted: Vec<u32> = Vec::new();
        arrivals
            .iter()
            .map(|&t| {
                let in_window = admitted
                    .iter()
                    .filter(|&&a| u64::from(a) + policy.window_ms > u64::from(t))
                    .count();
                let ok = in_window < policy.max_requests as usize;
                if ok {
                    admitted.push(t);
                }
                ok
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_brute_force_trailing_window_oracle(
            gaps in proptest::collection::vec(0u32..200, 1..300),
            max in 1u32..40,
            window_ms in 1u64..2000,
        ) {
            let policy = Policy { max_requests: max, window_ms };
            let arrivals: Vec<u32> = gaps.iter().scan(0u32, |t, g| { *t += g; Some(*t) }).collect();
            let mut w = Window::new();
            let ours: Vec<bool> = arrivals.iter().map(|&t| w.check(t, policy).admitted).collect();
            prop_assert_eq!(ours, oracle(&arrivals, policy));
        }

        #[test]
        fn retry_after_is_exact(
            gaps in proptest::collection::vec(0u32..50, 1..100),
            max in 1u32..40,
        ) {
            let policy = Policy { max_requests: max, window_ms: 500 };
            let mut t = 0u32;
            let mut w = Window::new();
            for g in gaps {
                t += g;
                let d = w.check(t, policy);
                if !d.admitted {
                    let at = t + d.retry_after_ms as u32;
                    let mut probe = w.clone();
                    prop_assert!(!probe.check(at - 1, policy).admitted);
                    let mut probe = w.clone();
                    prop_assert!(probe.check(at, policy).admitted);
                }
            }
        }
    }
}
