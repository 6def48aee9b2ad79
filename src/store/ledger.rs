//! The send ledger as operators see it: a recipient's emails and why each was sent,
//! suppressed, throttled, deduplicated or failed; and a failed email put back in the
//! outbox.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::{self, AuditEntry};
use super::{Store, StoreError};

/// One row of the ledger.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LedgerRow {
    pub id: String,
    pub idempotency_key: String,
    pub email_type: String,
    pub session_id: Option<String>,
    pub week_start: Option<String>,
    /// pending, sending, sent, failed, suppressed or throttled.
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub message_id: Option<String>,
    /// How many later requests for the same key were answered `duplicate`.
    pub duplicates: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub next_attempt_at_ms: Option<i64>,
}

fn ledger_row(row: &AnyRow) -> Result<LedgerRow, sqlx::Error> {
    Ok(LedgerRow {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        email_type: row.try_get("email_type")?,
        session_id: row.try_get("session_id")?,
        week_start: row.try_get("week_start")?,
        status: row.try_get("status")?,
        reason: row.try_get("reason")?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        message_id: row.try_get("message_id")?,
        duplicates: row.try_get("duplicates")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        sent_at_ms: row.try_get("sent_at")?,
        next_attempt_at_ms: row.try_get("next_attempt_at")?,
    })
}

/// The ledger of one recipient, newest first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn for_email(
    store: &Store,
    email: &str,
    limit: i64,
) -> Result<Vec<LedgerRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, idempotency_key, email_type, session_id, week_start, status, reason, attempts, last_error, \
         message_id, duplicates, created_at, updated_at, sent_at, next_attempt_at \
         FROM email_send_logs WHERE email = $1 ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(email)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(ledger_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// What asking to send a failed email again did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Back in the outbox, due now, to this address.
    Queued {
        email: String,
    },
    /// The row is not failed: its status.
    NotFailed {
        status: String,
    },
    NotFound,
}

/// Puts the failed email `id` back in the outbox, due now, with its attempts counted afresh
/// and a new lifetime (its `last_error` stays until the next attempt). It keeps the throttle
/// slot it was counted in when first decided and is not counted again; the dispatcher reads
/// the recipient's preferences and the suppression list again when it claims it, as for any
/// email. Audited in the same transaction as `actor`'s.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn retry(store: &Store, id: &str, actor: &str, now_ms: i64) -> Result<Retry, StoreError> {
    let mut tx = store.writer().begin().await?;
    let requeued: Option<String> = sqlx::query_scalar(
        "UPDATE email_send_logs SET status = 'pending', attempts = 0, next_attempt_at = NULL, \
         lease_until = NULL, claimed_by = NULL, created_at = $2, updated_at = $2 \
         WHERE id = $1 AND status = 'failed' RETURNING email",
    )
    .bind(id)
    .bind(now_ms)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(email) = requeued else {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM email_send_logs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        return Ok(status.map_or(Retry::NotFound, |status| Retry::NotFailed { status }));
    };
    audit::record(
        &mut tx,
        AuditEntry {
            actor,
            action: "email.retry",
            target: &format!("{id} {}", crate::redact::mask_email(&email)),
            old_value: Some("failed".to_owned()),
            new_value: Some("pending".to_owned()),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Retry::Queued { email })
}
