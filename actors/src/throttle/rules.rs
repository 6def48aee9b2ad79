//! Per-recipient throttle arithmetic: at most `limit` sends of one email type in any
//! `window`. Pure, with the time passed in.

/// How many emails of one type a recipient may get per how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub limit: u32,
    pub window_ms: i64,
}

impl ThrottleRule {
    /// `limit` sends per `window` (milliseconds beyond `i64` are clamped: no window is
    /// that long).
    pub fn new(limit: u32, window: std::time::Duration) -> Self {
        Self {
            limit,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    pub fn window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::try_from(self.window_ms).unwrap_or(0))
    }

    /// "24 hours", "7 days": the seed's wording of a window.
    pub fn window_text(&self) -> String {
        let hours = self.window_ms / 3_600_000;
        if hours > 24 && hours % 24 == 0 {
            let days = hours / 24;
            format!("{days} day{}", if days == 1 { "" } else { "s" })
        } else if hours >= 1 {
            format!("{hours} hour{}", if hours == 1 { "" } else { "s" })
        } else {
            format!("{} minutes", self.window_ms / 60_000)
        }
    }
}

/// The outcome of a request to send an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Queued,
    Duplicate,
    Suppressed,
    Throttled {
        retry_after_ms: i64,
        rule: ThrottleRule,
    },
}

/// The ledger's reason for a throttled request, `used` sends being inside the window.
pub fn throttled_reason(used: usize, rule: ThrottleRule) -> String {
    format!("{used} of {} in {} used", rule.limit, rule.window_text())
}

/// The instant a weekly digest counts at in its recipient's window: the start of the week it
/// reports (`YYYY-MM-DD`), at 00:00 UTC whatever the recipient's zone. Counted by the week
/// it reports, one digest a week passes a weekly window however its sending instant
/// drifts: a daylight-saving change moves a 09:00 by an hour, a caught-up run comes late, a
/// recipient who moved zone gets theirs at another hour of the day.
pub fn week_counted_at(week_start: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(week_start, "%Y-%m-%d").ok()?;
    Some(
        date.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis(),
    )
}

/// The sends (oldest first) that share a window with one at `at`: those less than a window
/// before or after it (a send after `at` exists when an older week's digest is run late).
pub fn around(sends: &[i64], at: i64, rule: ThrottleRule) -> &[i64] {
    let live = in_window(sends, at, rule);
    &live[..live.partition_point(|&t| t < at.saturating_add(rule.window_ms))]
}

/// The sends (oldest first) still inside the window at `now`.
pub fn in_window(sends: &[i64], now: i64, rule: ThrottleRule) -> &[i64] {
    let first = sends.partition_point(|&t| t + rule.window_ms <= now);
    &sends[first..]
}

/// `Ok` when one more send is allowed at `now`, else the milliseconds until one is.
pub fn check(sends: &[i64], now: i64, rule: ThrottleRule) -> Result<(), i64> {
    let live = in_window(sends, now, rule);
    if (live.len() as u64) < u64::from(rule.limit) {
        Ok(())
    } else {
        let blocking = live[live.len() - rule.limit as usize];
        Err((blocking + rule.window_ms - now).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: ThrottleRule = ThrottleRule {
        limit: 5,
        window_ms: 86_400_000,
    };

    #[test]
    fn five_per_day_then_wait_for_the_oldest_to_age_out() {
        let sends: Vec<i64> = (0..5).map(|i| i * 1_000).collect();
        assert_eq!(check(&sends[..4], 10_000, RULE), Ok(()));
        assert_eq!(check(&sends, 10_000, RULE), Err(86_400_000 - 10_000));
        assert_eq!(check(&sends, 86_400_000, RULE), Ok(()));
    }

    #[test]
    fn windows_are_worded_like_the_seed() {
        assert_eq!(RULE.window_text(), "24 hours");
        assert_eq!(
            ThrottleRule {
                limit: 1,
                window_ms: 7 * 86_400_000
            }
            .window_text(),
            "7 days"
        );
        assert_eq!(
            ThrottleRule {
                limit: 1,
                window_ms: 3_600_000
            }
            .window_text(),
            "1 hour"
        );
    }

    #[test]
    fn a_lowered_limit_waits_for_enough_sends_to_age_out() {
        let sends = [0, 10, 20];
        let rule = ThrottleRule {
            limit: 2,
            window_ms: 100,
        };
        assert_eq!(check(&sends, 30, rule), Err(80));
    }

    #[test]
    fn a_weekly_digest_counts_at_its_weeks_start_so_consecutive_weeks_always_pass() {
        let week = ThrottleRule {
            limit: 1,
            window_ms: 7 * 86_400_000,
        };
        let first = week_counted_at("2026-03-01").unwrap();
        let second = week_counted_at("2026-03-08").unwrap();
        assert_eq!(second - first, 7 * 86_400_000);
        assert_eq!(check(around(&[first], second, week), second, week), Ok(()));
        // A second digest of the same week, or one for a week starting three days later,
        // is over the limit; so is an older week run after a newer one.
        assert!(check(around(&[first], first, week), first, week).is_err());
        let wednesday = week_counted_at("2026-03-04").unwrap();
        assert!(check(around(&[first], wednesday, week), wednesday, week).is_err());
        assert!(check(around(&[second], wednesday, week), wednesday, week).is_err());
        assert_eq!(week_counted_at("last week"), None);
    }
}
