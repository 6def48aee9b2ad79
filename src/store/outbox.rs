//! The send ledger and outbox (`email_send_logs`): one row per idempotency key, with the
//! decision taken for it and, for emails that go out, their delivery state. What operators
//! read of it and do with it is in [`super::ledger`].

use sqlx::Row;

use herald_actors::dispatcher::Mark;

use super::group_commit::Statement;
use super::{Backend, Store, StoreError};

/// Whether the recipient `$email` wants an email of `$type`, as one SQL value: 0 when any
/// spelling of the address (the same address but for capitals) is suppressed or has the type
/// switched off, NULL when herald keeps no preferences for the address, else 1. A parent who
/// opted out as `Parent@example.com` is not mailed as `parent@example.com`. The spellings are
/// read through the index of those who turned something off (its condition is repeated here
/// for the planner to choose it).
macro_rules! wanted {
    ($email:literal, $type:literal) => {
        concat!(
            "CASE WHEN EXISTS (SELECT 1 FROM email_suppressions ws WHERE lower(ws.email) = lower(",
            $email,
            ")) OR EXISTS (SELECT 1 FROM email_preferences wp WHERE lower(wp.email) = lower(",
            $email,
            ") AND (wp.weekly_digest_enabled = 0 OR wp.session_reports_enabled = 0) \
             AND (CASE WHEN ",
            $type,
            " = 'weekly_digest' THEN wp.weekly_digest_enabled ELSE wp.session_reports_enabled END) = 0) \
             THEN 0 ELSE (SELECT 1 FROM email_preferences wo WHERE wo.email = ",
            $email,
            ") END"
        )
    };
}

/// The reason `$email` is suppressed (that of the oldest suppression of any of its
/// spellings), or NULL.
macro_rules! suppression_reason {
    ($email:literal) => {
        concat!(
            "(SELECT rs.reason FROM email_suppressions rs WHERE lower(rs.email) = lower(",
            $email,
            ") ORDER BY rs.created_at LIMIT 1)"
        )
    };
}

/// The fields of a request, as the ledger stores them.
pub struct LedgerKey<'a> {
    pub idempotency_key: &'a str,
    pub email: &'a str,
    pub email_type: &'a str,
    pub session_id: Option<&'a str>,
    pub week_start: Option<&'a str>,
    /// A weekly digest's zone, whose calendar its days follow.
    pub zone: Option<&'a str>,
}

impl LedgerKey<'_> {
    /// `sql`, a new ledger row's statement, with the row's id and the key's fields bound as
    /// `$1` to `$6` (id, idempotency key, address, type, session, week).
    fn row(&self, sql: &'static str) -> Statement {
        Statement::new(sql)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(self.idempotency_key)
            .bind(self.email)
            .bind(self.email_type)
            .bind(self.session_id)
            .bind(self.week_start)
    }
}

/// What [`lookup`] reads: the key's row status, whether the recipient wants this type, and
/// the throttle slots since the instant asked for.
pub type Lookup = (Option<String>, bool, Option<Vec<i64>>);

/// The status of the key's row, whether the recipient wants this type of email (as its
/// spellings decide, with what an erasure of the address kept; see [`super::erased`]) and, given
/// `sends_since`, the recipient's throttle slots of this type from then on (oldest first).
/// One query: the first row answers the first two, any further rows are the slots.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn lookup(
    store: &Store,
    key: &LedgerKey<'_>,
    sends_since: Option<i64>,
) -> Result<Lookup, StoreError> {
    match store.kept().await {
        Some(mut conn) => lookup_on(&mut *conn, key, sends_since).await,
        None => lookup_on(store.reader(), key, sends_since).await,
    }
}

/// [`lookup`] on a given connection (inside a transaction, say).
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn lookup_on<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    key: &LedgerKey<'_>,
    sends_since: Option<i64>,
) -> Result<Lookup, StoreError> {
    // What an erasure of the address kept (`$4`, the address's hash) stops the type too.
    macro_rules! head {
        () => {
            concat!(
                "SELECT 0, (SELECT status FROM email_send_logs WHERE idempotency_key = $1), \
                 CASE WHEN EXISTS (SELECT 1 FROM erased_opt_outs e WHERE e.address_hash = $4 \
                   AND (CASE WHEN $3 = 'weekly_digest' THEN e.weekly_digest_off ELSE e.session_reports_off END) = 1) \
                 THEN 0 ELSE ",
                wanted!("$2", "$3"),
                " END, NULL"
            )
        };
    }
    let sql = match sends_since {
        None => head!(),
        Some(_) => concat!(
            head!(),
            " UNION ALL SELECT 1, NULL, NULL, sent_at FROM email_throttles \
             WHERE email = $2 AND email_type = $3 AND sent_at >= $5 ORDER BY 1, 4"
        ),
    };
    let mut query = sqlx::query(sql)
        .bind(key.idempotency_key)
        .bind(key.email)
        .bind(key.email_type)
        .bind(super::erased::address_hash(key.email));
    if let Some(since) = sends_since {
        query = query.bind(since);
    }
    let rows = query.fetch_all(executor).await?;
    // The head row has no FROM: it is always there.
    let (head, slots) = rows.split_first().ok_or(sqlx::Error::RowNotFound)?;
    let enabled: Option<i64> = head.try_get(2)?;
    let sends = match sends_since {
        None => None,
        Some(_) => Some(
            slots
                .iter()
                .map(|row| row.try_get(3))
                .collect::<Result<_, sqlx::Error>>()?,
        ),
    };
    Ok((head.try_get(1)?, enabled.is_none_or(|e| e != 0), sends))
}

/// The row of a decision that sends nothing (`$7`: `suppressed`, `throttled`), with the
/// suppression's reason when one is why. It never replaces a row queued, being sent or sent:
/// such a key is decided a duplicate, and a record written after the decision (the throttle
/// actor's, in a task of its own) must not undo a later decision that queued it.
const RECORD: &str = concat!(
    "INSERT INTO email_send_logs (id, idempotency_key, email, email_type, session_id, week_start, status, reason, attempts, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE(CASE WHEN $7 = 'suppressed' THEN ",
    suppression_reason!("$3"),
    " END, $8), 0, $9, $9) \
     ON CONFLICT (idempotency_key) DO UPDATE SET status = excluded.status, reason = excluded.reason, updated_at = excluded.updated_at \
     WHERE email_send_logs.status NOT IN ('pending', 'sending', 'sent')",
);

/// Records a decision that sends nothing (`suppressed`, `throttled`) for the key: the
/// statement, to run as a job of a [`GroupCommit`](super::group_commit::GroupCommit).
pub fn record_statement(
    key: &LedgerKey<'_>,
    status: &str,
    reason: Option<&str>,
    at_ms: i64,
) -> Statement {
    key.row(RECORD).bind(status).bind(reason).bind(at_ms)
}

/// Counts a duplicate request against the key's row.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record_duplicate(
    store: &Store,
    idempotency_key: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    record_duplicate_on(store.writer(), idempotency_key, at_ms).await
}

/// [`record_duplicate`] on a given connection.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn record_duplicate_on<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Any>,
    idempotency_key: &str,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE email_send_logs SET duplicates = duplicates + 1, last_duplicate_at = $2 WHERE idempotency_key = $1")
        .bind(idempotency_key)
        .bind(at_ms)
        .execute(executor)
        .await?;
    Ok(())
}

/// The statements that queue an email: the `pending` row, the throttle slot it uses (at
/// `counted_at_ms`, see `SendRequest::counted_at`) and the recipient's preferences row
/// (with its unsubscribe key, and what an erasure of the address kept switched off). Run
/// them as one job of a
/// [`GroupCommit`](super::group_commit::GroupCommit).
pub fn enqueue_statements(key: &LedgerKey<'_>, at_ms: i64, counted_at_ms: i64) -> Vec<Statement> {
    vec![
        key.row(
            "INSERT INTO email_send_logs (id, idempotency_key, email, email_type, session_id, week_start, zone, status, attempts, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $8, 'pending', 0, $7, $7) \
             ON CONFLICT (idempotency_key) DO UPDATE SET status = 'pending', reason = NULL, attempts = 0, last_error = NULL, \
             next_attempt_at = NULL, lease_until = NULL, zone = excluded.zone, created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .bind(at_ms)
        .bind(key.zone),
        Statement::new("INSERT INTO email_throttles (id, email, email_type, sent_at) VALUES ($1, $2, $3, $4)")
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(key.email)
            .bind(key.email_type)
            .bind(counted_at_ms),
        Statement::new(super::erased::NEW_PREFERENCES)
            .bind(key.email)
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(at_ms)
            .bind(super::erased::address_hash(key.email)),
    ]
}

/// A claimed row: what the dispatcher needs to send it.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: String,
    pub attempts: i64,
    pub created_at: i64,
    pub email_type: String,
    pub lease_until: i64,
    /// Everything needed to build the email, returned by the claim itself.
    pub delivery: Delivery,
}

/// Leases up to `limit` due rows to the caller.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(
    store: &Store,
    limit: usize,
    now_ms: i64,
    lease_ms: i64,
    instance: &str,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let lock = match store.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "UPDATE email_send_logs SET status = 'sending', lease_until = $2, updated_at = $1, claimed_by = $4 \
         WHERE id IN (SELECT id FROM email_send_logs \
                      WHERE (status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1)) \
                         OR (status = 'sending' AND lease_until < $1) \
                      ORDER BY created_at LIMIT $3{lock}) \
         RETURNING id, attempts, created_at, email_type, idempotency_key, email, session_id, week_start, \
                   {wanted}, \
                   (SELECT p.recipient_key FROM email_preferences p WHERE p.email = email_send_logs.email), zone, \
                   (SELECT p.timezone FROM email_preferences p WHERE p.email = email_send_logs.email), \
                   (SELECT p.locale FROM email_preferences p WHERE p.email = email_send_logs.email)",
        wanted = wanted!("email_send_logs.email", "email_send_logs.email_type"),
    );
    let started = std::time::Instant::now();
    let rows = sqlx::query(&sql)
        .bind(now_ms)
        .bind(now_ms + lease_ms)
        .bind(limit as i64)
        .bind(instance)
        .fetch_all(store.writer())
        .await?;
    crate::metrics::db_query("outbox_claim", started.elapsed());
    rows.iter()
        .map(|row| {
            Ok(ClaimedRow {
                id: row.try_get(0)?,
                attempts: row.try_get(1)?,
                created_at: row.try_get(2)?,
                email_type: row.try_get(3)?,
                lease_until: now_ms + lease_ms,
                delivery: Delivery {
                    idempotency_key: row.try_get(4)?,
                    email: row.try_get(5)?,
                    email_type: row.try_get(3)?,
                    session_id: row.try_get(6)?,
                    week_start: row.try_get(7)?,
                    zone: row.try_get(10)?,
                    recipient_zone: row.try_get(11)?,
                    recipient_locale: row.try_get(12)?,
                    preference: preference(row.try_get(8)?, row.try_get(9)?),
                },
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Puts every row left `sending` back in the queue at once; their attempts stay counted. Only
/// for a database one process serves (SQLite, under the serve lock): there, a row left
/// `sending` was claimed by an earlier run of this process that stopped mid-send, and need
/// not wait out its lease.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn reclaim_all(store: &Store) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE email_send_logs SET status = 'pending', lease_until = NULL WHERE status = 'sending'",
    )
    .execute(store.writer())
    .await?;
    Ok(done.rows_affected())
}

/// Puts the rows `instance` left `sending` back in the queue at once; their attempts stay
/// counted. For a replica started again under its name: no live process has that name, so
/// no one else is sending them.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn reclaim_own(store: &Store, instance: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE email_send_logs SET status = 'pending', lease_until = NULL \
         WHERE status = 'sending' AND claimed_by = $1",
    )
    .bind(instance)
    .execute(store.writer())
    .await?;
    Ok(done.rows_affected())
}

/// Puts claimed rows back in the queue, as if their leases had run out: each given as its
/// id and the lease its claim set, so a row claimed again since is left alone.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn release(store: &Store, leases: &[(&str, i64)]) -> Result<(), StoreError> {
    if leases.is_empty() {
        return Ok(());
    }
    let rows: Vec<String> = (0..leases.len())
        .map(|i| format!("(id = ${} AND lease_until = ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "UPDATE email_send_logs SET status = 'pending', lease_until = NULL \
         WHERE status = 'sending' AND ({})",
        rows.join(" OR ")
    );
    let mut query = sqlx::query(&sql);
    for (id, lease_until) in leases {
        query = query.bind(*id).bind(*lease_until);
    }
    query.execute(store.writer()).await?;
    Ok(())
}

/// The recipient of the ledger row `id`, if the row still exists.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recipient_of(store: &Store, id: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT email FROM email_send_logs WHERE id = $1")
            .bind(id)
            .fetch_optional(store.reader())
            .await?,
    )
}

/// The statement that writes the outcome of an attempt.
pub fn mark_statement(id: String, mark: Mark, now_ms: i64) -> Statement {
    match mark {
        Mark::Sent { message_id } => Statement::new(
            "UPDATE email_send_logs SET status = 'sent', sent_at = $2, updated_at = $2, message_id = $3, \
             attempts = attempts + 1, lease_until = NULL, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .bind(message_id),
        Mark::Suppressed => Statement::new(concat!(
            "UPDATE email_send_logs SET status = 'suppressed', reason = COALESCE(",
            suppression_reason!("email_send_logs.email"),
            ", 'unsubscribed before sending'), updated_at = $2, lease_until = NULL WHERE id = $1",
        ))
        .bind(id)
        .bind(now_ms),
        Mark::Retry { next_attempt_at, error, counts } => Statement::new(
            "UPDATE email_send_logs SET status = 'pending', next_attempt_at = $3, last_error = $4, \
             attempts = attempts + $5, updated_at = $2, lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .bind(next_attempt_at)
        .bind(super::kept_text(&error))
        .bind(i64::from(counts)),
        Mark::Failed { error } => Statement::new(
            "UPDATE email_send_logs SET status = 'failed', last_error = $3, attempts = attempts + 1, \
             updated_at = $2, lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms)
        .bind(super::kept_text(&error)),
    }
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn depth(store: &Store) -> Result<u64, StoreError> {
    let depth: i64 =
        sqlx::query("SELECT COUNT(*) FROM email_send_logs WHERE status IN ('pending', 'sending')")
            .fetch_one(store.reader())
            .await?
            .try_get(0)?;
    Ok(depth.max(0) as u64)
}

/// What the sender needs to build a claimed email.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub idempotency_key: String,
    pub email: String,
    pub email_type: String,
    pub session_id: Option<String>,
    pub week_start: Option<String>,
    /// A weekly digest's zone, whose calendar its days follow (`None`: the recipient's).
    pub zone: Option<String>,
    /// The recipient's own zone, when they gave one (`parent_timezone`): a report's times
    /// are shown in it.
    pub recipient_zone: Option<String>,
    /// The recipient's language (`parent_locale`): the templates of it word the email.
    pub recipient_locale: Option<String>,
    /// The recipient's preference as the claim read it: whether they want this type, and
    /// their unsubscribe key. `None` when they have no preferences row.
    pub preference: Option<(bool, Option<String>)>,
}

fn preference(
    enabled: Option<i64>,
    recipient_key: Option<String>,
) -> Option<(bool, Option<String>)> {
    enabled.map(|enabled| (enabled != 0, recipient_key))
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn delivery(store: &Store, id: &str) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT l.idempotency_key, l.email, l.email_type, l.session_id, l.week_start, ",
        wanted!("l.email", "l.email_type"),
        ", p.recipient_key, l.zone, p.timezone, p.locale \
         FROM email_send_logs l LEFT JOIN email_preferences p ON p.email = l.email WHERE l.id = $1",
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.map(|row| {
        Ok(Delivery {
            idempotency_key: row.try_get(0)?,
            email: row.try_get(1)?,
            email_type: row.try_get(2)?,
            session_id: row.try_get(3)?,
            week_start: row.try_get(4)?,
            zone: row.try_get(7)?,
            recipient_zone: row.try_get(8)?,
            recipient_locale: row.try_get(9)?,
            preference: preference(row.try_get(5)?, row.try_get(6)?),
        })
    })
    .transpose()
    .map_err(|e: sqlx::Error| StoreError::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::group_commit::GroupCommit;

    /// A decision's record that lands after a later decision queued the same key (the
    /// throttle actor writes it in a task of its own) leaves the email queued; over a row
    /// that sends nothing, a record still lands.
    #[tokio::test]
    async fn a_late_record_does_not_undo_a_queued_email() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/herald.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let writes = GroupCommit::spawn(store.clone());
        let key = LedgerKey {
            idempotency_key: "p@example.com:session_reports:s1",
            email: "p@example.com",
            email_type: "session_reports",
            session_id: Some("s1"),
            week_start: None,
            zone: None,
        };
        let off = |at_ms| record_statement(&key, "suppressed", Some("off"), at_ms);
        writes.run(vec![off(1)]).await.unwrap();
        writes.run(enqueue_statements(&key, 2, 2)).await.unwrap();
        writes.run(vec![off(3)]).await.unwrap();
        async fn status(store: &Store, key: &LedgerKey<'_>) -> Option<String> {
            lookup(store, key, None).await.unwrap().0
        }
        assert_eq!(status(&store, &key).await.as_deref(), Some("pending"));

        let other = LedgerKey {
            idempotency_key: "p@example.com:session_reports:s2",
            session_id: Some("s2"),
            ..key
        };
        writes
            .run(vec![record_statement(
                &other,
                "throttled",
                Some("5 of 5"),
                1,
            )])
            .await
            .unwrap();
        writes
            .run(vec![record_statement(&other, "suppressed", Some("off"), 2)])
            .await
            .unwrap();
        assert_eq!(status(&store, &other).await.as_deref(), Some("suppressed"));
    }
}
