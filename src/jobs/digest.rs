//! The weekly digest: for every recipient with activity in [week_start, week_start + 7 days)
//! an email with their week's numbers, sent through the outbox like any other email.
//!
//! Recipients are streamed from three ordered queries merged as they come, so memory does
//! not grow with their number. The job does not pre-filter unsubscribed recipients (the
//! dispatcher suppresses at send time); a dry run reports what would happen and writes
//! nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use futures_util::StreamExt;
use herald_actors::email::{Email, EmailType, IdempotencyKey};
use herald_actors::throttle::{Admission, SendRequest, ThrottleClient};
use serde::Serialize;
use sqlx::Row;

use crate::store::{Store, StoreError, outbox};

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
pub fn week_before(scheduled_for_ms: i64, timezone: &str) -> NaiveDate {
    let tz: Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let local = Utc
        .timestamp_millis_opt(scheduled_for_ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz);
    local.date_naive() - chrono::Duration::days(7)
}

/// Midnight of `date` in `timezone`, as epoch milliseconds.
pub fn day_start_ms(date: NaiveDate, timezone: &str) -> i64 {
    let tz: Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight).earliest().map_or_else(
        || midnight.and_utc().timestamp_millis(),
        |t| t.timestamp_millis(),
    )
}

fn filter(one: bool) -> &'static str {
    if one { " AND s.parent_email = $3" } else { "" }
}

/// Streams every active recipient's week, in one order, calling `each` for each.
pub async fn for_each_recipient<F, Fut>(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    only: Option<&str>,
    mut each: F,
) -> Result<(), StoreError>
where
    F: FnMut(RecipientWeek) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let one = only.is_some();
    let sessions_sql = format!(
        "SELECT s.parent_email, COUNT(*), CAST(SUM(s.completed_at - s.started_at) AS BIGINT), MAX(s.completed_at - s.started_at) \
         FROM sessions s WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL{} \
         GROUP BY s.parent_email ORDER BY s.parent_email",
        filter(one)
    );
    let events_sql = format!(
        "SELECT s.parent_email, e.kind, COUNT(*), CAST(SUM(CASE WHEN e.correct = 1 THEN 1 ELSE 0 END) AS BIGINT) \
         FROM session_events e JOIN sessions s ON s.id = e.session_id \
         WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL{} \
         GROUP BY s.parent_email, e.kind ORDER BY s.parent_email, e.kind",
        filter(one)
    );
    let subjects_sql = format!(
        "SELECT s.parent_email, s.subject, COUNT(*) AS n FROM sessions s \
         WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL AND s.subject IS NOT NULL{} \
         GROUP BY s.parent_email, s.subject ORDER BY s.parent_email, n DESC, s.subject",
        filter(one)
    );
    fn bind<'q>(
        sql: &'q str,
        from_ms: i64,
        to_ms: i64,
        only: Option<&str>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let q = sqlx::query(sql).bind(from_ms).bind(to_ms);
        match only {
            Some(email) => q.bind(email.to_owned()),
            None => q,
        }
    }
    let (sessions_q, events_q, subjects_q) = (
        bind(&sessions_sql, from_ms, to_ms, only),
        bind(&events_sql, from_ms, to_ms, only),
        bind(&subjects_sql, from_ms, to_ms, only),
    );
    let mut sessions = sessions_q.fetch(store.reader());
    let mut events = events_q.fetch(store.reader()).peekable();
    let mut subjects = subjects_q.fetch(store.reader()).peekable();
    while let Some(row) = sessions.next().await {
        let row = row?;
        let email: String = row.try_get(0)?;
        let mut week = RecipientWeek {
            email: email.clone(),
            sessions: row.try_get(1)?,
            total_seconds: row.try_get::<Option<i64>, _>(2)?.unwrap_or(0) / 1000,
            longest_seconds: row.try_get::<Option<i64>, _>(3)?.unwrap_or(0) / 1000,
            ..Default::default()
        };
        // The other streams hold only recipients of this one, in the same order.
        while let Some(Ok(next)) = std::pin::Pin::new(&mut events).peek().await {
            if next.try_get::<String, _>(0)? != email {
                break;
            }
            let next = events.next().await.expect("peeked")?;
            let kind: String = next.try_get(1)?;
            let count: i64 = next.try_get(2)?;
            if kind == "answer" {
                week.answers_total += count;
                week.answers_correct += next.try_get::<Option<i64>, _>(3)?.unwrap_or(0);
            }
            week.events_by_kind.insert(kind, count);
        }
        while let Some(Ok(next)) = std::pin::Pin::new(&mut subjects).peek().await {
            if next.try_get::<String, _>(0)? != email {
                break;
            }
            let next = subjects.next().await.expect("peeked")?;
            if week.top_subjects.len() < 3 {
                week.top_subjects.push(next.try_get(1)?);
            }
        }
        each(week).await?;
    }
    Ok(())
}

/// One recipient's week, for rendering their digest at send time.
pub async fn recipient_week(
    store: &Store,
    email: &str,
    week_start: NaiveDate,
    timezone: &str,
) -> Result<Option<RecipientWeek>, StoreError> {
    let from = day_start_ms(week_start, timezone);
    let mut found = None;
    for_each_recipient(store, from, from + WEEK_MS, Some(email), |week| {
        found = Some(week);
        async { Ok(()) }
    })
    .await?;
    Ok(found)
}

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
    /// Dry runs only: recipients who turned digests off (a real run leaves them to the
    /// dispatcher, which suppresses at send time).
    pub unsubscribed: u64,
    /// A few recipients per outcome (addresses masked).
    pub sample: BTreeMap<String, Vec<String>>,
}

impl DigestReport {
    fn note(&mut self, outcome: &str, email: &str) {
        let sample = self.sample.entry(outcome.to_owned()).or_default();
        if sample.len() < 5 {
            sample.push(crate::redact::mask_email(email));
        }
    }
}

pub struct DigestRun<'a> {
    pub store: &'a Store,
    pub throttle: Option<&'a ThrottleClient>,
    pub week_start: NaiveDate,
    pub timezone: &'a str,
    pub dry_run: bool,
    pub now_ms: i64,
    /// The weekly digest throttle (limit, window), for dry runs.
    pub throttle_rule: (u32, i64),
}

pub async fn run(job: DigestRun<'_>) -> Result<DigestReport, String> {
    let from = day_start_ms(job.week_start, job.timezone);
    let week = job.week_start.format("%Y-%m-%d").to_string();
    let mut report = DigestReport {
        week_start: week.clone(),
        dry_run: job.dry_run,
        ..Default::default()
    };
    let skipped: i64 = sqlx::query(
        "SELECT COUNT(*) FROM email_preferences p WHERE NOT EXISTS (SELECT 1 FROM sessions s \
         WHERE s.parent_email = p.email AND s.completed_at >= $1 AND s.completed_at < $2)",
    )
    .bind(from)
    .bind(from + WEEK_MS)
    .fetch_one(job.store.reader())
    .await
    .and_then(|r| r.try_get(0))
    .map_err(|e| e.to_string())?;
    report.skipped_no_activity = skipped.max(0) as u64;

    // A std Mutex: it is never held across an await.
    let decider = Decider {
        store: job.store.clone(),
        throttle: job.throttle.cloned(),
        dry_run: job.dry_run,
        now_ms: job.now_ms,
        throttle_rule: job.throttle_rule,
        week: week.clone(),
    };
    // Shared with the concurrent deciders; std Mutexes, never held across an await.
    let report = Arc::new(std::sync::Mutex::new(report));
    let first_error: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    // The query streams recipients into a small channel; up to DIGEST_CONCURRENCY of them
    // are decided at once, so their ledger writes share transactions (group commit) while
    // memory stays bounded by the channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<RecipientWeek>(256);
    let producer = async move {
        let result = for_each_recipient(job.store, from, from + WEEK_MS, None, |recipient| {
            let tx = tx.clone();
            async move {
                tx.send(recipient)
                    .await
                    .map_err(|_| StoreError::Write("the digest stopped".to_owned()))
            }
        })
        .await;
        drop(tx);
        result
    };
    let consumer =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) })
            .for_each_concurrent(DIGEST_CONCURRENCY, {
                let (report, first_error) = (report.clone(), first_error.clone());
                move |recipient| {
                    let (report, first_error, decider) =
                        (report.clone(), first_error.clone(), decider.clone());
                    async move {
                        lock(&report).recipients_with_activity += 1;
                        match decider.decide(&recipient.email).await {
                            Ok(Some((outcome, email))) => {
                                let mut report = lock(&report);
                                match outcome {
                                    "queued" => report.queued += 1,
                                    "duplicate" => report.duplicate += 1,
                                    "throttled" => report.throttled += 1,
                                    _ => report.unsubscribed += 1,
                                }
                                report.note(outcome, &email);
                            }
                            Ok(None) => {}
                            Err(err) => {
                                lock(&first_error).get_or_insert(err.to_string());
                            }
                        }
                    }
                }
            });
    let (produced, ()) = tokio::join!(producer, consumer);
    produced.map_err(|e| e.to_string())?;
    if let Some(err) = lock(&first_error).take() {
        return Err(err);
    }
    let report = lock(&report).clone();
    Ok(report)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Recipients decided at once by a digest run.
const DIGEST_CONCURRENCY: usize = 256;

/// What deciding one recipient needs, owned so many decisions can run at once.
#[derive(Clone)]
struct Decider {
    store: Store,
    throttle: Option<ThrottleClient>,
    dry_run: bool,
    now_ms: i64,
    throttle_rule: (u32, i64),
    week: String,
}

impl Decider {
    /// One recipient's digest: queued (or, for a dry run, what a real run would do).
    async fn decide(&self, raw_email: &str) -> Result<Option<(&'static str, String)>, StoreError> {
        let Ok(email) = Email::parse(raw_email) else {
            return Ok(None);
        };
        let key = IdempotencyKey::weekly_digest(&email, &self.week);
        let outcome = if self.dry_run {
            self.dry_outcome(&email, key.as_str()).await?
        } else {
            let throttle = self
                .throttle
                .as_ref()
                .ok_or_else(|| StoreError::Write("no throttle to send through".into()))?;
            let request = SendRequest {
                email: email.clone(),
                email_type: EmailType::WeeklyDigest,
                idempotency_key: key,
                session_id: None,
                week_start: Some(self.week.clone()),
                check_preference: false,
            };
            match throttle
                .admit(request)
                .await
                .map_err(|e| StoreError::Write(e.to_string()))?
            {
                Admission::Queued => "queued",
                Admission::Duplicate => "duplicate",
                Admission::Throttled { .. } => "throttled",
                Admission::Suppressed => "unsubscribed",
            }
        };
        Ok(Some((outcome, email.as_str().to_owned())))
    }

    /// What a real run would decide for this recipient, read without writing anything.
    async fn dry_outcome(&self, email: &Email, key: &str) -> Result<&'static str, StoreError> {
        let ledger_key = outbox::LedgerKey {
            idempotency_key: key,
            email: email.as_str(),
            email_type: EmailType::WeeklyDigest.as_str(),
            session_id: None,
            week_start: None,
        };
        let (limit, window) = self.throttle_rule;
        let (status, enabled, recent) =
            outbox::lookup(&self.store, &ledger_key, Some(self.now_ms - window)).await?;
        if herald_actors::email::in_flight_or_sent(status.as_deref()) {
            return Ok("duplicate");
        }
        if !enabled {
            return Ok("unsubscribed");
        }
        // The throttle actor's own rule, so the dry run and a real run cannot disagree.
        let rule = herald_actors::throttle::ThrottleRule {
            limit,
            window_ms: window,
        };
        let recent = recent.unwrap_or_default();
        Ok(
            match herald_actors::throttle::rules::check(&recent, self.now_ms, rule) {
                Ok(()) => "queued",
                Err(_) => "throttled",
            },
        )
    }
}

/// A date given on the command line or in an admin request.
pub fn parse_date(raw: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}

/// The week a manual run reports when no date is given: the seven days before today.
pub fn default_week(now_ms: i64, timezone: &str) -> NaiveDate {
    week_before(now_ms, timezone)
}

pub fn format_instant(ms: i64) -> String {
    crate::store::instant(ms).to_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sunday_digest_reports_the_seven_days_before_it() {
        let sunday = chrono::DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(week_before(sunday, "UTC").to_string(), "2026-11-15");
        let start = day_start_ms(
            NaiveDate::from_ymd_opt(2026, 11, 15).unwrap(),
            "Europe/Berlin",
        );
        assert_eq!(format_instant(start), "2026-11-14T23:00:00+00:00");
    }
}
