//! When jobs run: cron expressions evaluated in a time zone, and which missed occurrence to
//! catch up after downtime. Pure: instants are passed in as epoch milliseconds.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::port::JobLedger;

/// A parsed schedule: a cron expression and the zone its wall-clock times are in.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    expression: String,
}

/// Why a schedule could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("'{expression}' is not a cron expression: {reason}")]
    Cron { expression: String, reason: String },
    #[error("'{0}' is not a time zone name (e.g. UTC, Europe/Berlin)")]
    Zone(String),
    #[error("'{0}' never fires (a day no month has, such as 31 February)")]
    Never(String),
}

impl Schedule {
    /// A schedule in an already parsed zone.
    pub fn new(expression: &str, tz: Tz) -> Result<Self, ScheduleError> {
        let cron = Cron::from_str(expression).map_err(|e| ScheduleError::Cron {
            expression: expression.to_owned(),
            reason: e.to_string(),
        })?;
        // Any real date fires within four years (29 February); a job whose schedule names
        // none would never run and say nothing.
        let reference = tz.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).earliest();
        if reference.is_none_or(|start| cron.find_next_occurrence(&start, false).is_err()) {
            return Err(ScheduleError::Never(expression.to_owned()));
        }
        Ok(Self {
            cron,
            tz,
            expression: expression.to_owned(),
        })
    }

    /// A schedule from a cron expression and an IANA zone name.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = Tz::from_str(timezone).map_err(|_| ScheduleError::Zone(timezone.to_owned()))?;
        Self::new(expression, tz)
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The same expression read in `tz` (the digest of a zone: `DIGEST_SCHEDULE` there).
    pub fn in_zone(&self, tz: Tz) -> Self {
        Self { tz, ..self.clone() }
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    fn local(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&self.tz))
    }

    /// The first occurrence strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = self.local(after_ms)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The latest occurrence at or before `at_ms`.
    pub fn latest_at_or_before(&self, at_ms: i64) -> Option<i64> {
        let start = self.local(at_ms)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

/// What to do with occurrences missed while herald was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedPolicy {
    /// Run the latest missed occurrence once.
    CatchUp,
    /// Wait for the next one.
    Skip,
}

/// The occurrence to run at start, if any: the latest one at or before `now`, when it has
/// not run yet (`last_scheduled` is the latest occurrence in the ledger), is within
/// `horizon_ms`, and the policy says to catch up. Never more than one.
pub fn catch_up(
    schedule: &Schedule,
    now_ms: i64,
    last_scheduled: Option<i64>,
    policy: MissedPolicy,
    horizon_ms: i64,
) -> Option<i64> {
    if policy == MissedPolicy::Skip {
        return None;
    }
    // A job that never ran has missed nothing: a fresh install waits for its first occurrence.
    let last = last_scheduled?;
    let latest = schedule.latest_at_or_before(now_ms)?;
    (last < latest && now_ms - latest <= horizon_ms).then_some(latest)
}

/// The occurrence catching up starts after ([`catch_up`]'s `last_scheduled`): the ledger's
/// latest, or `since` (the latest occurrence before the job came into this process) when
/// that is later and the ledger holds no run that started before it: runs that all started
/// after it (an old week run by hand on a fresh install) are no sign the install existed at
/// it.
pub fn caught_up_to(ledger: Option<JobLedger>, since: Option<i64>) -> Option<i64> {
    match ledger {
        Some(ledger) => {
            let newer = since.is_some_and(|s| ledger.first_started > s);
            Some(ledger.latest).max(since.filter(|_| newer))
        }
        None => since,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Any text as a cron expression or a zone is accepted or refused with a reason,
        /// never a panic; an accepted one always has a next occurrence or says it has none.
        #[test]
        fn any_schedule_text_is_parsed_or_refused_without_a_panic(
            expression in "([0-9*/,\\- ]|[A-Z]{3}|\\PC){0,40}",
            zone in "(UTC|Europe/Berlin|\\PC{0,20})",
        ) {
            if let Ok(schedule) = Schedule::parse(&expression, &zone) {
                let _ = schedule.next_after(1_800_000_000_000);
                let _ = schedule.latest_at_or_before(1_800_000_000_000);
            }
        }
    }

    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn utc(ms: i64) -> String {
        Utc.timestamp_millis_opt(ms).unwrap().to_rfc3339()
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for expression in ["0 9 31 2 *", "0 0 30 2 *", "0 9 31 4,6,9,11 *"] {
            assert_eq!(
                Schedule::parse(expression, "Europe/Berlin").unwrap_err(),
                ScheduleError::Never(expression.to_owned())
            );
        }
        // 29 February fires, once in four years.
        let leap = Schedule::parse("0 9 29 2 *", "UTC").unwrap();
        assert_eq!(
            utc(leap.next_after(ms("2026-12-06T00:00:00Z")).unwrap()),
            "2028-02-29T09:00:00+00:00"
        );
    }

    #[test]
    fn sunday_nine_in_utc() {
        let schedule = Schedule::parse("0 9 * * SUN", "UTC").unwrap();
        // 2026-11-21 is a Saturday.
        let next = schedule.next_after(ms("2026-11-21T12:00:00Z")).unwrap();
        assert_eq!(utc(next), "2026-11-22T09:00:00+00:00");
        assert_eq!(
            utc(schedule.next_after(next).unwrap()),
            "2026-11-29T09:00:00+00:00"
        );
    }

    #[test]
    fn next_occurrences_follow_local_time_across_daylight_saving() {
        let schedule = Schedule::parse("0 9 * * SUN", "Europe/Berlin").unwrap();
        // Summer time starts on Sunday 2026-03-29 at 02:00 local.
        let before = schedule.next_after(ms("2026-03-20T00:00:00Z")).unwrap();
        assert_eq!(utc(before), "2026-03-22T08:00:00+00:00", "09:00 CET");
        let after = schedule.next_after(before).unwrap();
        assert_eq!(
            utc(after),
            "2026-03-29T07:00:00+00:00",
            "09:00 CEST, one week of 167 hours"
        );
        // And back in autumn: 2026-10-25.
        let autumn = schedule.next_after(ms("2026-10-20T00:00:00Z")).unwrap();
        assert_eq!(utc(autumn), "2026-10-25T08:00:00+00:00", "09:00 CET again");
    }

    #[test]
    fn a_time_that_does_not_exist_on_the_spring_forward_day_is_not_run_twice() {
        let schedule = Schedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let mut at = ms("2026-03-27T12:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..4 {
            at = schedule.next_after(at).unwrap();
            seen.push(utc(at));
        }
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 4, "{seen:?}");
    }

    #[test]
    fn after_three_missed_weeks_exactly_the_latest_occurrence_is_caught_up() {
        let schedule = Schedule::parse("0 9 * * SUN", "UTC").unwrap();
        let last_run = ms("2026-11-01T09:00:00Z");
        let now = ms("2026-11-24T10:00:00Z");
        let horizon = 8 * 86_400_000;
        assert_eq!(
            catch_up(
                &schedule,
                now,
                Some(last_run),
                MissedPolicy::CatchUp,
                horizon
            )
            .map(utc)
            .as_deref(),
            Some("2026-11-22T09:00:00+00:00")
        );
        let caught = ms("2026-11-22T09:00:00Z");
        assert_eq!(
            catch_up(&schedule, now, Some(caught), MissedPolicy::CatchUp, horizon),
            None,
            "once"
        );
        assert_eq!(
            catch_up(&schedule, now, Some(last_run), MissedPolicy::Skip, horizon),
            None
        );
        assert_eq!(
            catch_up(&schedule, now, None, MissedPolicy::CatchUp, horizon),
            None,
            "a fresh install"
        );
        let long_after = ms("2026-12-05T10:00:00Z");
        assert_eq!(
            catch_up(
                &schedule,
                long_after,
                Some(last_run),
                MissedPolicy::CatchUp,
                3_600_000
            ),
            None,
            "beyond the horizon"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_a_reason() {
        assert!(
            Schedule::parse("every sunday", "UTC")
                .unwrap_err()
                .to_string()
                .contains("cron")
        );
        assert!(
            Schedule::parse("0 9 * * SUN", "Mars/Olympus")
                .unwrap_err()
                .to_string()
                .contains("time zone")
        );
    }
}

#[cfg(test)]
mod caught_up_to {
    use super::{JobLedger, caught_up_to};

    const WEEK: i64 = 7 * 86_400_000;
    /// The Sunday before this process started.
    const SINCE: i64 = 100 * WEEK;

    fn ledger(latest: i64, first_started: i64) -> Option<JobLedger> {
        Some(JobLedger {
            latest,
            first_started,
        })
    }

    #[test]
    fn a_ledger_with_runs_from_before_says_where_catching_up_starts() {
        // Down over SINCE: its occurrence is after the ledger's latest, so it is caught up.
        let before = ledger(SINCE - WEEK, SINCE - 10 * WEEK);
        assert_eq!(caught_up_to(before, Some(SINCE)), Some(SINCE - WEEK));
        assert_eq!(caught_up_to(ledger(SINCE, 0), Some(SINCE)), Some(SINCE));
    }

    #[test]
    fn runs_that_all_started_after_since_do_not_reach_back_before_it() {
        // A fresh install, an old week run by hand after it began.
        let by_hand = ledger(SINCE - 3 * WEEK, SINCE + 3_600_000);
        assert_eq!(caught_up_to(by_hand, Some(SINCE)), Some(SINCE));
        // Its own runs since are later than SINCE anyway.
        let own = ledger(SINCE + WEEK, SINCE + 1_000);
        assert_eq!(caught_up_to(own, Some(SINCE)), Some(SINCE + WEEK));
    }

    #[test]
    fn an_empty_ledger_starts_from_since() {
        assert_eq!(caught_up_to(None, Some(SINCE)), Some(SINCE));
        assert_eq!(caught_up_to(None, None), None);
    }
}

#[cfg(test)]
mod daylight_saving {
    use chrono::{TimeZone, Utc};

    use super::Schedule;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp_millis()
    }

    /// The occurrences in `[from, to)`, as UTC instants.
    fn between(schedule: &Schedule, from: i64, to: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut after = from - 1;
        while let Some(next) = schedule.next_after(after) {
            if next >= to {
                break;
            }
            out.push(next);
            after = next;
        }
        out
    }

    #[test]
    fn nine_on_sunday_in_new_york_follows_the_clocks_across_both_2026_changes() {
        let s = Schedule::parse("0 9 * * SUN", "America/New_York").unwrap();
        // Spring forward on 8 March: 09:00 is 14:00 UTC before, 13:00 after.
        assert_eq!(
            between(&s, utc(2026, 3, 1, 0, 0), utc(2026, 3, 16, 0, 0)),
            [
                utc(2026, 3, 1, 14, 0),
                utc(2026, 3, 8, 13, 0),
                utc(2026, 3, 15, 13, 0)
            ]
        );
        // Fall back on 1 November: 13:00 UTC before, 14:00 after.
        assert_eq!(
            between(&s, utc(2026, 10, 25, 0, 0), utc(2026, 11, 9, 0, 0)),
            [
                utc(2026, 10, 25, 13, 0),
                utc(2026, 11, 1, 14, 0),
                utc(2026, 11, 8, 14, 0)
            ]
        );
    }

    #[test]
    fn a_time_that_happens_twice_runs_once_and_one_that_does_not_exist_still_runs() {
        // 01:30 on 1 November 2026 happens twice in New York (EDT, then EST).
        let twice = Schedule::parse("30 1 * * SUN", "America/New_York").unwrap();
        // Both 05:30 and 06:30 UTC fall on that day.
        let on_the_day = between(&twice, utc(2026, 11, 1, 0, 0), utc(2026, 11, 2, 0, 0));
        assert_eq!(on_the_day.len(), 1, "{on_the_day:?}");
        // 02:30 on 8 March 2026 does not exist in New York: the week still has its run.
        let missing = Schedule::parse("30 2 * * SUN", "America/New_York").unwrap();
        let week = between(&missing, utc(2026, 3, 2, 0, 0), utc(2026, 3, 9, 12, 0));
        assert_eq!(week.len(), 1, "{week:?}");
    }
}
