//! Restart intensity: "more than `max_restarts` within `period`" as a pure sliding window.
//!
//! Kept free of actors and clocks (the caller passes `now`) so the rule is unit-tested
//! exactly, without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The instants of recent restarts, trimmed to the intensity period.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    max_restarts: u32,
    period: Duration,
    /// Oldest first; never longer than `max_restarts + 1`, so memory is bounded.
    recent: VecDeque<Instant>,
}

impl RestartWindow {
    pub fn new(max_restarts: u32, period: Duration) -> Self {
        Self {
            max_restarts,
            period,
            recent: VecDeque::with_capacity(max_restarts as usize + 1),
        }
    }

    /// Records a restart at `now` and says whether the intensity is still respected.
    ///
    /// Returns `false` when this restart is one too many: the caller must escalate.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.period {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        if self.recent.len() > self.max_restarts as usize + 1 {
            self.recent.pop_front();
        }
        self.recent.len() <= self.max_restarts as usize
    }

    /// How many restarts fall inside the current period.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_exactly_max_restarts_within_the_period() {
        let start = Instant::now();
        let mut window = RestartWindow::new(3, Duration::from_secs(10));
        for i in 0..3 {
            assert!(window.record(start + Duration::from_secs(i)), "restart {i}");
        }
        assert!(!window.record(start + Duration::from_secs(3)));
    }

    #[test]
    fn restarts_older_than_the_period_are_forgotten() {
        let start = Instant::now();
        let mut window = RestartWindow::new(2, Duration::from_secs(10));
        assert!(window.record(start));
        assert!(window.record(start + Duration::from_secs(1)));
        // The first restart leaves the window exactly at 10 s.
        assert!(window.record(start + Duration::from_secs(10)));
        assert!(!window.record(start + Duration::from_secs(10)));
    }

    #[test]
    fn zero_max_restarts_escalates_on_the_first_failure() {
        let mut window = RestartWindow::new(0, Duration::from_secs(5));
        assert!(!window.record(Instant::now()));
    }

    #[test]
    fn memory_stays_bounded_under_a_restart_storm() {
        let start = Instant::now();
        let mut window = RestartWindow::new(5, Duration::from_secs(60));
        for i in 0..10_000 {
            window.record(start + Duration::from_millis(i));
        }
        assert!(window.len() <= 6);
    }
}
