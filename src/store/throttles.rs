//! The durable per-recipient send times behind the email throttle (`email_throttles`).

use sqlx::Row;

use super::{Store, StoreError};

#[tracing::instrument(level = "debug", skip_all)]
pub async fn sends_since(
    store: &Store,
    email: &str,
    email_type: &str,
    since_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT sent_at FROM email_throttles WHERE email = $1 AND email_type = $2 AND sent_at >= $3 ORDER BY sent_at",
    )
    .bind(email)
    .bind(email_type)
    .bind(since_ms)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Deletes a recipient's recorded sends (of one type, or all); returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn reset(
    store: &Store,
    email: &str,
    email_type: Option<&str>,
) -> Result<u64, StoreError> {
    let result = match email_type {
        Some(email_type) => {
            sqlx::query("DELETE FROM email_throttles WHERE email = $1 AND email_type = $2")
                .bind(email)
                .bind(email_type)
                .execute(store.writer())
                .await?
        }
        None => {
            sqlx::query("DELETE FROM email_throttles WHERE email = $1")
                .bind(email)
                .execute(store.writer())
                .await?
        }
    };
    Ok(result.rows_affected())
}

/// What [`decide_serialised`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Duplicate,
    Suppressed,
    /// One more is allowed in `retry_after_ms`.
    Throttled {
        retry_after_ms: i64,
    },
    Queued,
}

/// Decides a request in one transaction on PostgreSQL that first takes a transaction-scoped
/// advisory lock on the recipient, so the decisions about one recipient are taken one at a
/// time whichever replica takes them: the ledger row (duplicate?), the preference, the
/// recipient's sends since `window_start_ms` judged by `check` (the throttle rule: `Err`
/// with the wait and the ledger's reason), and the outcome's write, all committed before
/// the lock is released. The ledger is written at `now_ms`, the throttle slot at
/// `counted_at_ms`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn decide_serialised(
    store: &Store,
    key: &super::outbox::LedgerKey<'_>,
    now_ms: i64,
    counted_at_ms: i64,
    window_start_ms: i64,
    check: impl FnOnce(&[i64]) -> Result<(), (i64, String)>,
) -> Result<Decided, StoreError> {
    use super::outbox;
    let mut tx = store.writer().begin().await?;
    // The lock's key: the recipient's address hashed by PostgreSQL; a collision only
    // serialises two recipients' decisions.
    sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS locked")
        .bind(key.email)
        .execute(&mut *tx)
        .await?;
    let (status, enabled, sends) = outbox::lookup_on(&mut *tx, key, Some(window_start_ms)).await?;
    let decided = if herald_actors::email::in_flight_or_sent(status.as_deref()) {
        outbox::record_duplicate_on(&mut *tx, key.idempotency_key, now_ms).await?;
        Decided::Duplicate
    } else if !enabled {
        let reason = format!("{} disabled by the recipient", key.email_type);
        outbox::record_statement(key, "suppressed", Some(&reason), now_ms)
            .execute(&mut tx)
            .await?;
        Decided::Suppressed
    } else {
        let sends = sends.unwrap_or_default();
        match check(&sends) {
            Err((retry_after_ms, reason)) => {
                outbox::record_statement(key, "throttled", Some(&reason), now_ms)
                    .execute(&mut tx)
                    .await?;
                Decided::Throttled { retry_after_ms }
            }
            Ok(()) => {
                for statement in outbox::enqueue_statements(key, now_ms, counted_at_ms) {
                    statement.execute(&mut tx).await?;
                }
                Decided::Queued
            }
        }
    };
    tx.commit().await?;
    Ok(decided)
}
