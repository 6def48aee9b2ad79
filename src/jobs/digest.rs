//! The weekly digest: for every recipient with activity in [week_start, week_start + 7 days)
//! an email with their week's numbers, sent through the outbox like any other email.
//!
//! Recipients are streamed from three ordered queries merged as they come, so memory does
//! not grow with their number. The job does not pre-filter unsubscribed recipients: each is
//! decided, and suppressed, like any other email (and the dispatcher checks again before it
//! sends); a dry run reports what would happen and writes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use futures_util::StreamExt;
use herald_actors::email::{Email, EmailType, IdempotencyKey};
use herald_actors::throttle::{Admission, SendRequest, ThrottleClient, ThrottleRule};
use serde::Serialize;

use crate::store::{Store, StoreError, activity, outbox};

/// Why a digest run stopped before deciding every recipient.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the email throttle did not answer: {0}")]
    Throttle(String),
    #[error("a real run needs the email throttle to send through")]
    NoThrottle,
}

/// What the digest did, or would do, for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Queued,
    Duplicate,
    Throttled,
    /// Turned off by the recipient, or suppressed: not queued.
    Unsubscribed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Duplicate => "duplicate",
            Self::Throttled => "throttled",
            Self::Unsubscribed => "unsubscribed",
        }
    }
}

pub use crate::reports::week::{RecipientWeek, WEEK_MS, day_start_ms, parse_date, week_before};

/// What a digest run did, or would do.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct DigestReport {
    pub week_start: String,
    pub dry_run: bool,
    pub recipients_with_activity: u64,
    /// Recipients known to herald with no completed session that week.
    pub skipped_no_activity: u64,
    pub queued: u64,
    pub duplicate: u64,
    pub throttled: u64,
    /// Recipients who turned digests off (or whose address is suppressed): not queued.
    pub unsubscribed: u64,
    /// A few recipients per outcome (addresses masked).
    pub sample: BTreeMap<String, Vec<String>>,
    /// Dry runs with local delivery: every zone's next digest, soonest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upcoming: Vec<Upcoming>,
}

/// One zone's next digest occurrence, as a dry run lists them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Upcoming {
    /// The job that will run it (`weekly_digest@Asia/Tokyo`).
    pub job: String,
    pub timezone: String,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Recipients whose zone it is.
    pub recipients: i64,
}

impl DigestReport {
    fn count(&mut self, outcome: Outcome, email: &str) {
        *match outcome {
            Outcome::Queued => &mut self.queued,
            Outcome::Duplicate => &mut self.duplicate,
            Outcome::Throttled => &mut self.throttled,
            Outcome::Unsubscribed => &mut self.unsubscribed,
        } += 1;
        let sample = self.sample.entry(outcome.as_str().to_owned()).or_default();
        if sample.len() < 5 {
            sample.push(crate::redact::mask_email(email));
        }
    }
}

pub struct DigestRun<'a> {
    pub store: &'a Store,
    pub throttle: Option<&'a ThrottleClient>,
    pub week_start: NaiveDate,
    pub timezone: chrono_tz::Tz,
    pub dry_run: bool,
    pub now_ms: i64,
    /// The weekly digest throttle, for dry runs.
    pub throttle_rule: ThrottleRule,
    /// With local delivery, the recipients of one zone; `None`: everyone.
    pub zone: Option<activity::ZoneScope>,
}

pub async fn run(job: DigestRun<'_>) -> Result<DigestReport, DigestError> {
    let from = day_start_ms(job.week_start, job.timezone);
    let week = job.week_start.format("%Y-%m-%d").to_string();
    let mut report = DigestReport {
        week_start: week.clone(),
        dry_run: job.dry_run,
        ..Default::default()
    };
    let skipped =
        activity::inactive_recipients(job.store, from, from + WEEK_MS, job.zone.as_ref()).await?;
    report.skipped_no_activity = skipped.max(0) as u64;

    // A std Mutex: it is never held across an await.
    let decider = Decider {
        store: job.store.clone(),
        throttle: job.throttle.cloned(),
        dry_run: job.dry_run,
        now_ms: job.now_ms,
        throttle_rule: job.throttle_rule,
        week: week.clone(),
        zone: job.timezone.name().to_owned(),
    };
    // Shared with the concurrent deciders; std Mutexes, never held across an await.
    let report = Arc::new(std::sync::Mutex::new(report));
    let first_error: Arc<std::sync::Mutex<Option<DigestError>>> = Arc::default();
    // The query streams recipients into a small channel; up to DIGEST_CONCURRENCY of them
    // are decided at once, so their ledger writes share transactions (group commit) while
    // memory stays bounded by the channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<RecipientWeek>(256);
    let producer = async move {
        let result = activity::for_each_recipient(
            job.store,
            from,
            from + WEEK_MS,
            None,
            job.zone.as_ref(),
            |recipient| {
                let tx = tx.clone();
                async move {
                    // The consumer only stops with the run; nothing is left to hand over.
                    let _ = tx.send(recipient).await;
                    Ok(())
                }
            },
        )
        .await;
        drop(tx);
        result
    };
    let consumer =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
            .for_each_concurrent(digest_concurrency(job.store), {
                let (report, first_error) = (report.clone(), first_error.clone());
                move |recipient| {
                    let (report, first_error, decider) =
                        (report.clone(), first_error.clone(), decider.clone());
                    async move {
                        lock(&report).recipients_with_activity += 1;
                        match decider.decide(&recipient.email).await {
                            Ok(Some((outcome, email))) => lock(&report).count(outcome, &email),
                            Ok(None) => {}
                            Err(err) => {
                                lock(&first_error).get_or_insert(err);
                            }
                        }
                    }
                }
            });
    let (produced, ()) = tokio::join!(producer, consumer);
    produced?;
    if let Some(err) = lock(&first_error).take() {
        return Err(err);
    }
    let report = lock(&report).clone();
    Ok(report)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Recipients decided at once by a digest run. On SQLite the throttle actor decides from
/// its cache and group-commits, so many decisions in flight fill its batches. On
/// PostgreSQL each decision is a transaction holding a pooled connection: more in flight
/// than the pool holds only queue, and a decision queued past the throttle client's
/// deadline would fail the run.
fn digest_concurrency(store: &Store) -> usize {
    match store.backend() {
        crate::store::Backend::Sqlite => 256,
        crate::store::Backend::Postgres => 8,
    }
}

/// What deciding one recipient needs, owned so many decisions can run at once.
#[derive(Clone)]
struct Decider {
    store: Store,
    throttle: Option<ThrottleClient>,
    dry_run: bool,
    now_ms: i64,
    throttle_rule: ThrottleRule,
    week: String,
    /// The run's zone, whose calendar the week's days follow.
    zone: String,
}

impl Decider {
    /// One recipient's digest: queued (or, for a dry run, what a real run would do).
    async fn decide(&self, raw_email: &str) -> Result<Option<(Outcome, String)>, DigestError> {
        let Ok(email) = Email::parse(raw_email) else {
            return Ok(None);
        };
        let key = IdempotencyKey::weekly_digest(&email, &self.week);
        let outcome = if self.dry_run {
            self.dry_outcome(&email, key.as_str()).await?
        } else {
            let throttle = self.throttle.as_ref().ok_or(DigestError::NoThrottle)?;
            let request = SendRequest {
                email: email.clone(),
                email_type: EmailType::WeeklyDigest,
                idempotency_key: key,
                session_id: None,
                week_start: Some(self.week.clone()),
                zone: Some(self.zone.clone()),
            };
            match throttle
                .admit(request)
                .await
                .map_err(|e| DigestError::Throttle(e.to_string()))?
            {
                Admission::Queued => Outcome::Queued,
                Admission::Duplicate => Outcome::Duplicate,
                Admission::Throttled { .. } => Outcome::Throttled,
                Admission::Suppressed => Outcome::Unsubscribed,
            }
        };
        Ok(Some((outcome, email.as_str().to_owned())))
    }

    /// What a real run would decide for this recipient, read without writing anything.
    async fn dry_outcome(&self, email: &Email, key: &str) -> Result<Outcome, StoreError> {
        let ledger_key = outbox::LedgerKey {
            idempotency_key: key,
            email: email.as_str(),
            email_type: EmailType::WeeklyDigest.as_str(),
            session_id: None,
            week_start: None,
            zone: None,
        };
        let rule = self.throttle_rule;
        // Counted as a real run counts it: at the start of its week.
        let at = herald_actors::throttle::rules::week_counted_at(&self.week).unwrap_or(self.now_ms);
        let (status, enabled, recent) =
            outbox::lookup(&self.store, &ledger_key, Some(at - rule.window_ms)).await?;
        if herald_actors::email::in_flight_or_sent(status.as_deref()) {
            return Ok(Outcome::Duplicate);
        }
        if !enabled {
            return Ok(Outcome::Unsubscribed);
        }
        // The throttle actor's own rule, so the dry run and a real run cannot disagree.
        let recent = recent.unwrap_or_default();
        let recent = herald_actors::throttle::rules::around(&recent, at, rule);
        Ok(
            match herald_actors::throttle::rules::check(recent, at, rule) {
                Ok(()) => Outcome::Queued,
                Err(_) => Outcome::Throttled,
            },
        )
    }
}

/// The occurrence whose digest covers the week starting `week` in `zone`, for a run by hand.
/// Refused for a week older than the send log keeps: its digests may have gone out with
/// their decisions since purged, so running it again could send them a second time (the
/// completion route holds a report to the same horizon).
pub fn chosen_occurrence(
    week: NaiveDate,
    zone: chrono_tz::Tz,
    send_log_days: u64,
    now_ms: i64,
) -> Result<i64, String> {
    let scheduled_for = day_start_ms(week + chrono::Duration::days(7), zone);
    if scheduled_for < super::purge::send_log_cutoff(send_log_days, now_ms) {
        return Err(format!(
            "the week of {week} is older than the send log keeps \
             (RETENTION_SEND_LOG_DAYS={send_log_days}): whether its digests went out can no \
             longer be told, so it is not run again"
        ));
    }
    Ok(scheduled_for)
}

/// The week a manual run reports when no date is given: the seven days before today.
pub fn default_week(now_ms: i64, timezone: chrono_tz::Tz) -> NaiveDate {
    week_before(now_ms, timezone)
}

pub fn format_instant(ms: i64) -> String {
    crate::store::instant(ms).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_older_than_the_send_log_keeps_is_not_run_by_hand() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .timestamp_millis();
        let week = |raw: &str| NaiveDate::parse_from_str(raw, "%Y-%m-%d").unwrap();
        // 180 days before now is 2026-06-10 12:00: the week of 2026-06-03 ends at its
        // digest, 2026-06-10 00:00, just before it; the next day's week just after.
        let refused = chosen_occurrence(week("2026-06-03"), chrono_tz::UTC, 180, now);
        assert!(refused.unwrap_err().contains("RETENTION_SEND_LOG_DAYS=180"));
        let kept = chosen_occurrence(week("2026-06-04"), chrono_tz::UTC, 180, now);
        assert_eq!(format_instant(kept.unwrap()), "2026-06-11T00:00:00+00:00");
        // A longer send log keeps it.
        assert!(chosen_occurrence(week("2026-06-03"), chrono_tz::UTC, 365, now).is_ok());
    }

    #[test]
    fn the_sunday_digest_reports_the_seven_days_before_it() {
        let sunday = chrono::DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            week_before(sunday, chrono_tz::UTC).to_string(),
            "2026-11-15"
        );
        let start = day_start_ms(
            NaiveDate::from_ymd_opt(2026, 11, 15).unwrap(),
            chrono_tz::Europe::Berlin,
        );
        assert_eq!(format_instant(start), "2026-11-14T23:00:00+00:00");
    }
}
