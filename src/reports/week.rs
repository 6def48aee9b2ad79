//! The digest's week: which seven days an occurrence reports, where a local day starts,
//! and one recipient's numbers for those days. Pure.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub const WEEK_MS: i64 = 7 * 86_400_000;

/// One recipient's week.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecipientWeek {
    pub email: String,
    pub sessions: i64,
    pub total_seconds: i64,
    pub longest_seconds: i64,
    pub events_by_kind: BTreeMap<String, i64>,
    pub answers_correct: i64,
    pub answers_total: i64,
    /// The most practised subjects, most sessions first (at most three).
    pub top_subjects: Vec<String>,
}

/// The week that the occurrence at `scheduled_for` reports: the seven days before the
/// occurrence's local date.
pub fn week_before(scheduled_for_ms: i64, tz: Tz) -> NaiveDate {
    let local = Utc
        .timestamp_millis_opt(scheduled_for_ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz);
    local.date_naive() - chrono::Duration::days(7)
}

/// Midnight of `date` in `timezone`, as epoch milliseconds.
pub fn day_start_ms(date: NaiveDate, tz: Tz) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight).earliest().map_or_else(
        || midnight.and_utc().timestamp_millis(),
        |t| t.timestamp_millis(),
    )
}

/// A date given on the command line or in an admin request.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}
