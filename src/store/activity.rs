//! Recipients' activity for the weekly digest: three ordered queries over sessions and
//! their events, merged as they stream, so memory does not grow with the recipients.

use futures_util::StreamExt;
use sqlx::Row;

use super::{Store, StoreError};
use crate::reports::week::{RecipientWeek, day_start_ms};

fn filter(one: bool) -> &'static str {
    if one { " AND s.parent_email = $3" } else { "" }
}

/// The recipients of one zone's digest occurrence: those whose zone it is (recipients with no
/// zone of their own belong to the default zone), and those who moved away from it within
/// the week before, so a move mid-week never skips a week (the digest's idempotency key
/// keeps it to one).
#[derive(Debug, Clone)]
pub struct ZoneScope {
    pub zone: chrono_tz::Tz,
    /// The service's `DIGEST_TIMEZONE`.
    pub default: chrono_tz::Tz,
    /// Moves away from the zone since this instant count.
    pub moved_since_ms: i64,
}

impl ZoneScope {
    /// The condition on `s.parent_email`. Zone names are IANA names (letters, digits, `/`,
    /// `_`, `+`, `-`), written in as literals.
    ///
    /// Another zone than the default one is a list of addresses read through the indexes on
    /// the preferences' zone and on the changes' time, so its run reads only its recipients'
    /// sessions (through the sessions' index on the address). The default zone also holds
    /// every address herald has no preferences for, so its run tests each of the week's
    /// sessions.
    fn sql(&self) -> String {
        let (zone, default) = (self.zone.name(), self.default.name());
        debug_assert!([zone, default].iter().all(|z| {
            z.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        }));
        let since = self.moved_since_ms;
        let moved_away = format!(
            "SELECT c.email FROM preference_changes c WHERE c.at >= {since} AND c.field = 'timezone' \
               AND COALESCE(NULLIF(c.old_value, ''), '{default}') = '{zone}'"
        );
        if zone != default {
            return format!(
                " AND s.parent_email IN (SELECT p.email FROM email_preferences p WHERE p.timezone = '{zone}' \
                   UNION {moved_away})"
            );
        }
        format!(
            " AND (NOT EXISTS (SELECT 1 FROM email_preferences p WHERE p.email = s.parent_email \
                 AND COALESCE(p.timezone, '{default}') <> '{zone}') \
               OR s.parent_email IN ({moved_away}))"
        )
    }

    /// The condition on `p.email` for the zone's known recipients.
    fn members_sql(&self) -> String {
        let (zone, default) = (self.zone.name(), self.default.name());
        format!(" AND COALESCE(p.timezone, '{default}') = '{zone}'")
    }
}

/// Streams every active recipient's week, in one order, calling `each` for each.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn for_each_recipient<F, Fut>(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    only: Option<&str>,
    zone: Option<&ZoneScope>,
    mut each: F,
) -> Result<(), StoreError>
where
    F: FnMut(RecipientWeek) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let one = only.is_some();
    let scope = zone.map(ZoneScope::sql).unwrap_or_default();
    let sessions_sql = format!(
        "SELECT s.parent_email, COUNT(*), CAST(SUM(s.completed_at - s.started_at) AS BIGINT), MAX(s.completed_at - s.started_at) \
         FROM sessions s WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL{}{scope} \
         GROUP BY s.parent_email ORDER BY s.parent_email",
        filter(one)
    );
    let events_sql = format!(
        "SELECT s.parent_email, e.kind, COUNT(*), CAST(SUM(CASE WHEN e.correct = 1 THEN 1 ELSE 0 END) AS BIGINT) \
         FROM session_events e JOIN sessions s ON s.id = e.session_id \
         WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL{}{scope} \
         GROUP BY s.parent_email, e.kind ORDER BY s.parent_email, e.kind",
        filter(one)
    );
    let subjects_sql = format!(
        "SELECT s.parent_email, s.subject, COUNT(*) AS n FROM sessions s \
         WHERE s.completed_at >= $1 AND s.completed_at < $2 AND s.parent_email IS NOT NULL AND s.subject IS NOT NULL{}{scope} \
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
    type Rows<'r> = futures_util::stream::BoxStream<'r, Result<sqlx::any::AnyRow, sqlx::Error>>;
    let (mut sessions, events, subjects): (Rows<'_>, Rows<'_>, Rows<'_>) = if one {
        // One recipient (an email being built, many at once): a few rows each, read one
        // query after the other, so a build holds one connection at a time, not three.
        let rows = |rows: Vec<sqlx::any::AnyRow>| {
            futures_util::stream::iter(rows.into_iter().map(Ok)).boxed()
        };
        (
            rows(sessions_q.fetch_all(store.reader()).await?),
            rows(events_q.fetch_all(store.reader()).await?),
            rows(subjects_q.fetch_all(store.reader()).await?),
        )
    } else {
        (
            sessions_q.fetch(store.reader()),
            events_q.fetch(store.reader()),
            subjects_q.fetch(store.reader()),
        )
    };
    let mut events = events.peekable();
    let mut subjects = subjects.peekable();
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

/// Recipients known to herald (of `zone` when given) with no completed session in
/// `[from_ms, to_ms)`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn inactive_recipients(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    zone: Option<&ZoneScope>,
) -> Result<i64, StoreError> {
    let members = zone.map(ZoneScope::members_sql).unwrap_or_default();
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) FROM email_preferences p WHERE NOT EXISTS (SELECT 1 FROM sessions s \
         WHERE s.parent_email = p.email AND s.completed_at >= $1 AND s.completed_at < $2){members}"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(store.reader())
    .await?;
    Ok(row.try_get(0)?)
}

/// A recipient's completed sessions in `[from_ms, to_ms)`, oldest first, with their answers:
/// what their digest shows (read when it is built, one recipient at a time).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recipient_sessions(
    store: &Store,
    email: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<crate::reports::week::SessionFact>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.learner_name, s.subject, s.started_at, s.completed_at, \
                CAST(COUNT(e.id) AS BIGINT), \
                CAST(COALESCE(SUM(CASE WHEN e.correct = 1 THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM sessions s LEFT JOIN session_events e ON e.session_id = s.id AND e.kind = 'answer' \
         WHERE s.parent_email = $1 AND s.completed_at >= $2 AND s.completed_at < $3 \
         GROUP BY s.id, s.learner_name, s.subject, s.started_at, s.completed_at \
         ORDER BY s.completed_at",
    )
    .bind(email)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(crate::reports::week::SessionFact {
                learner: row.try_get(0)?,
                subject: row.try_get(1)?,
                started_at_ms: row.try_get(2)?,
                completed_at_ms: row.try_get(3)?,
                answers_total: row.try_get(4)?,
                answers_correct: row.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// A recipient's digest for the week starting `week_start`: that week's sessions and the
/// week before's; `None` when the week had none.
pub async fn recipient_digest(
    store: &Store,
    email: &str,
    week_start: chrono::NaiveDate,
    timezone: chrono_tz::Tz,
) -> Result<Option<crate::reports::week::Digest>, StoreError> {
    let from = day_start_ms(week_start - chrono::Duration::days(7), timezone);
    let to = day_start_ms(week_start + chrono::Duration::days(7), timezone);
    let facts = recipient_sessions(store, email, from, to).await?;
    Ok(crate::reports::week::digest(&facts, week_start, timezone))
}
