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
    /// A weekly digest's zone: the calendar of the run that queued it.
    pub zone: Option<String>,
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
    /// The replica (`HERALD_INSTANCE`) that claimed it last: for an email sent or failed,
    /// the one that tried it last; none for one never claimed.
    pub claimed_by: Option<String>,
}

/// The columns [`ledger_row`] reads.
const SELECT: &str = "SELECT id, idempotency_key, email_type, session_id, week_start, zone, status, reason, \
     attempts, last_error, message_id, duplicates, created_at, updated_at, sent_at, next_attempt_at, claimed_by \
     FROM email_send_logs";

fn ledger_row(row: &AnyRow) -> Result<LedgerRow, sqlx::Error> {
    Ok(LedgerRow {
        id: row.try_get("id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        email_type: row.try_get("email_type")?,
        session_id: row.try_get("session_id")?,
        week_start: row.try_get("week_start")?,
        zone: row.try_get("zone")?,
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
        claimed_by: row.try_get("claimed_by")?,
    })
}

/// The ledger of one recipient, newest first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn for_email(
    store: &Store,
    email: &str,
    limit: i64,
) -> Result<Vec<LedgerRow>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE email = $1 ORDER BY created_at DESC, id LIMIT $2"
    ))
    .bind(email)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(ledger_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// The ledger row of one idempotency key (one email), if the ledger holds it.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn by_key(store: &Store, key: &str) -> Result<Option<LedgerRow>, StoreError> {
    let row = sqlx::query(&format!("{SELECT} WHERE idempotency_key = $1"))
        .bind(key)
        .fetch_optional(store.reader())
        .await?;
    row.as_ref()
        .map(ledger_row)
        .transpose()
        .map_err(StoreError::from)
}

/// Back in the outbox as if queued at `$1`: due now, no attempts yet, claimed by no one.
const REQUEUE: &str = "UPDATE email_send_logs SET status = 'pending', attempts = 0, \
     next_attempt_at = NULL, lease_until = NULL, claimed_by = NULL, created_at = $1, \
     updated_at = $1 WHERE";

/// An email's id in the ledger from what an operator gave: any form of UUID, kept in the
/// hyphenated lower-case form the ledger holds.
pub fn parse_id(raw: &str) -> Option<String> {
    uuid::Uuid::parse_str(raw)
        .ok()
        .map(|id| id.hyphenated().to_string())
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
    let requeued: Option<String> = sqlx::query_scalar(&format!(
        "{REQUEUE} id = $2 AND status = 'failed' RETURNING email"
    ))
    .bind(now_ms)
    .bind(id)
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

/// The failed emails to send again: those that failed from `since_ms` until before
/// `until_ms`, of one type or both.
pub struct FailedBetween {
    pub since_ms: i64,
    pub until_ms: i64,
    pub email_type: Option<herald_actors::email::EmailType>,
}

impl FailedBetween {
    /// From what an operator typed: RFC 3339 instants (`until` by default `now_ms`; one not
    /// after `since` makes an empty stretch) and an email type; a refusal names the field
    /// (`failed_since`, `failed_until`, `type`) and what is wrong with it.
    pub fn parse(
        since: &str,
        until: Option<&str>,
        email_type: Option<&str>,
        now_ms: i64,
    ) -> Result<Self, (&'static str, String)> {
        let instant = |field: &'static str, raw: &str| {
            chrono::DateTime::parse_from_rfc3339(raw.trim())
                .map(|at| at.timestamp_millis())
                .map_err(|_| {
                    (
                        field,
                        "must be an RFC 3339 instant (2026-12-06T10:00:00Z)".to_owned(),
                    )
                })
        };
        let since_ms = instant("failed_since", since)?;
        let until_ms = match until {
            Some(raw) => instant("failed_until", raw)?,
            None => now_ms.saturating_add(1),
        };
        let email_type = email_type
            .map(|raw| {
                raw.parse().map_err(|_| {
                    (
                        "type",
                        "must be session_reports or weekly_digest".to_owned(),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            since_ms,
            until_ms,
            email_type,
        })
    }
}

/// What failed in a stretch of time: how many emails, and their most common errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedSummary {
    pub emails: u64,
    /// The ten most common `last_error` texts (cut to 200 characters), each with how many
    /// emails failed with it, most first.
    pub errors: Vec<(String, u64)>,
}

/// The condition on `email_send_logs` for the rows `failed` describes, its placeholders
/// numbered from `first`: since, until, then the type when one is given.
fn which(failed: &FailedBetween, first: usize) -> String {
    // The time a row failed is when it was last written.
    let mut text = format!(
        "status = 'failed' AND updated_at >= ${first} AND updated_at < ${}",
        first + 1
    );
    if failed.email_type.is_some() {
        text.push_str(&format!(" AND email_type = ${}", first + 2));
    }
    text
}

/// The emails [`retry_failed`] would put back in the outbox, read without writing.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn failed_between(
    store: &Store,
    failed: &FailedBetween,
) -> Result<FailedSummary, StoreError> {
    let sql = format!(
        "SELECT COALESCE(last_error, ''), COUNT(*) AS n FROM email_send_logs WHERE {} \
         GROUP BY COALESCE(last_error, '') ORDER BY n DESC, 1",
        which(failed, 1)
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(&sql)
        .bind(failed.since_ms)
        .bind(failed.until_ms);
    if let Some(kind) = failed.email_type {
        query = query.bind(kind.as_str());
    }
    let groups = query.fetch_all(store.reader()).await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(FailedSummary {
        emails: groups.iter().map(|(_, n)| count(*n)).sum(),
        errors: groups
            .into_iter()
            .take(10)
            .map(|(error, n)| (error.chars().take(200).collect(), count(n)))
            .collect(),
    })
}

/// Puts every email `failed` describes back in the outbox as [`retry`] does one, and
/// returns how many. Audited in the same transaction as `actor`'s.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn retry_failed(
    store: &Store,
    failed: &FailedBetween,
    actor: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let kind = failed.email_type.map(|t| t.as_str());
    // `$1` is the time of the retry; the conditions follow.
    let sql = format!("{REQUEUE} {}", which(failed, 2));
    let mut tx = store.writer().begin().await?;
    let mut query = sqlx::query(&sql)
        .bind(now_ms)
        .bind(failed.since_ms)
        .bind(failed.until_ms);
    if let Some(kind) = kind {
        query = query.bind(kind);
    }
    let requeued = query.execute(&mut *tx).await?.rows_affected();
    if requeued > 0 {
        audit::record(
            &mut tx,
            AuditEntry {
                actor,
                action: "email.retry",
                target: &format!(
                    "failed {} to {}{}",
                    super::instant(failed.since_ms).to_rfc3339(),
                    super::instant(failed.until_ms).to_rfc3339(),
                    kind.map(|k| format!(" ({k})")).unwrap_or_default()
                ),
                old_value: Some("failed".to_owned()),
                new_value: Some(format!("{requeued} pending")),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(requeued)
}
