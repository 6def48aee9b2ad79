//! Jobs: when the digest and the purge run, in which zone, what happens to occurrences missed
//! while herald was down, and how long data is kept.

use std::time::Duration;

use chrono_tz::Tz;
use herald_actors::scheduler::{MissedPolicy, Schedule};

use super::reader::Reader;

const DEFAULT_DIGEST_SCHEDULE: &str = "0 9 * * SUN";
const DEFAULT_PURGE_SCHEDULE: &str = "30 3 * * *";

/// The fewest days sessions are kept.
pub const SESSIONS_MINIMUM_DAYS: u64 = 30;

/// How long each kind of record is kept by `purge_old`.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    pub send_log_days: u64,
    /// Sessions (a learner's name, a parent's address) by when they started, with their
    /// events; never below [`SESSIONS_MINIMUM_DAYS`].
    pub sessions_days: u64,
    pub session_events_days: u64,
    /// Never below 50 days.
    pub audit_log_days: u64,
}

#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The zone digest weeks and job schedules are read in (`DIGEST_TIMEZONE`).
    pub timezone: Tz,
    /// When `weekly_digest` runs (`DIGEST_SCHEDULE`, in `timezone`).
    pub digest: Schedule,
    /// When `purge_old` runs (`PURGE_SCHEDULE`, in `timezone`).
    pub purge: Schedule,
    /// What start-up does with an occurrence missed while herald was down.
    pub missed: MissedPolicy,
    /// `DIGEST_DELIVERY=local` (the default): each recipient's digest at `DIGEST_SCHEDULE`'s
    /// time in their own zone; `global`: everyone's at one instant, in `timezone`.
    pub local_delivery: bool,
    pub catch_up_horizon: Duration,
    /// How long a claimed run is its replica's without a renewal.
    pub lease: Duration,
    /// How soon an occurrence the database could not start is tried again.
    pub retry_every: Duration,
    pub retention: RetentionConfig,
}

impl JobsConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        let timezone = r.parse(
            "DIGEST_TIMEZONE",
            chrono_tz::UTC,
            "a time zone name (e.g. UTC, Europe/Berlin)",
        );
        let digest = schedule(r, "DIGEST_SCHEDULE", DEFAULT_DIGEST_SCHEDULE, timezone);
        let purge = schedule(r, "PURGE_SCHEDULE", DEFAULT_PURGE_SCHEDULE, timezone);
        let missed = r.choice(
            "MISSED_RUN_POLICY",
            MissedPolicy::CatchUp,
            &[
                ("catch_up", MissedPolicy::CatchUp),
                ("skip", MissedPolicy::Skip),
            ],
        );
        let local_delivery = r.choice(
            "DIGEST_DELIVERY",
            true,
            &[("local", true), ("global", false)],
        );
        let retention = RetentionConfig {
            send_log_days: r.parse("RETENTION_SEND_LOG_DAYS", 180u64, "whole days"),
            sessions_days: r.parse("RETENTION_SESSIONS_DAYS", 365u64, "whole days"),
            session_events_days: r.parse("RETENTION_SESSION_EVENTS_DAYS", 365u64, "whole days"),
            audit_log_days: r.parse("RETENTION_AUDIT_LOG_DAYS", 400u64, "whole days"),
        };
        if retention.sessions_days < SESSIONS_MINIMUM_DAYS {
            r.problem(format!(
                "RETENTION_SESSIONS_DAYS: sessions are kept at least {SESSIONS_MINIMUM_DAYS} days \
                 (a weekly digest reads two weeks of them, and may run a week late)"
            ));
        }
        if retention.audit_log_days < 50 {
            r.problem("RETENTION_AUDIT_LOG_DAYS: the audit log is kept at least 50 days");
        }
        Self {
            timezone,
            digest,
            purge,
            missed,
            local_delivery,
            catch_up_horizon: r.hours("CATCH_UP_HORIZON_HOURS", 192),
            lease: r.seconds("JOB_LEASE_SECONDS", 300),
            retry_every: Duration::from_secs(r.ranged(
                "JOB_RETRY_SECONDS",
                10u64,
                (1, 3_600),
                "seconds",
            )),
            retention,
        }
    }
}

/// The schedule in `name`, parsed once; a bad one is recorded and the default stands in
/// until start-up refuses.
fn schedule(r: &mut Reader<'_>, name: &str, default: &str, timezone: Tz) -> Schedule {
    let expression = r.get_or(name, default);
    Schedule::new(&expression, timezone).unwrap_or_else(|problem| {
        r.problem(format!("{name}: {problem}"));
        Schedule::new(default, timezone).expect("the default schedules parse")
    })
}
