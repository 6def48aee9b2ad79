//! Counts for the statistics endpoints.

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub sessions_started: i64,
    pub sessions_completed: i64,
    pub emails_sent: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Summary {
    pub period_days: i64,
    pub sessions_started: i64,
    pub sessions_completed: i64,
    /// Mean duration of the sessions completed in the period, in seconds.
    pub average_duration_seconds: Option<f64>,
    /// Send-ledger rows in the period by status.
    pub emails_by_outcome: std::collections::BTreeMap<String, i64>,
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn dashboard(store: &Store) -> Result<Dashboard, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM sessions), \
                (SELECT COUNT(*) FROM sessions WHERE completed_at IS NOT NULL), \
                (SELECT COUNT(*) FROM email_send_logs WHERE status = 'sent')",
    )
    .fetch_one(store.reader())
    .await?;
    Ok(Dashboard {
        sessions_started: row.try_get(0)?,
        sessions_completed: row.try_get(1)?,
        emails_sent: row.try_get(2)?,
    })
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn summary(store: &Store, days: i64, now_ms: i64) -> Result<Summary, StoreError> {
    let since = now_ms - days * 86_400_000;
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM sessions WHERE started_at >= $1), \
                (SELECT COUNT(*) FROM sessions WHERE completed_at >= $1), \
                (SELECT CAST(AVG(completed_at - started_at) AS DOUBLE PRECISION) FROM sessions WHERE completed_at >= $1)",
    )
    .bind(since)
    .fetch_one(store.reader())
    .await?;
    let average_ms: Option<f64> = row.try_get(2)?;
    let mut emails_by_outcome = std::collections::BTreeMap::new();
    let outcomes = sqlx::query(
        "SELECT status, COUNT(*) FROM email_send_logs WHERE created_at >= $1 GROUP BY status",
    )
    .bind(since)
    .fetch_all(store.reader())
    .await?;
    for outcome in outcomes {
        emails_by_outcome.insert(outcome.try_get(0)?, outcome.try_get(1)?);
    }
    Ok(Summary {
        period_days: days,
        sessions_started: row.try_get(0)?,
        sessions_completed: row.try_get(1)?,
        average_duration_seconds: average_ms.map(|ms| ms / 1000.0),
        emails_by_outcome,
    })
}
