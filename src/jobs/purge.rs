//! Retention: deletes what is past its keeping time, table by table. The audit log is kept
//! at least 50 days whatever the configuration says.

use serde::Serialize;

use crate::store::{Store, StoreError};

pub const AUDIT_MINIMUM_DAYS: u64 = 50;

#[derive(Debug, Clone)]
pub struct Retention {
    pub send_log_days: u64,
    pub session_events_days: u64,
    pub audit_log_days: u64,
    /// Throttle rows older than the longest throttle window are useless.
    pub throttle_window_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub email_send_logs: u64,
    pub session_events: u64,
    pub email_throttles: u64,
    pub audit_log: u64,
    pub job_runs: u64,
}

fn days(d: u64) -> i64 {
    i64::try_from(d)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000)
}

pub async fn run(
    store: &Store,
    retention: &Retention,
    now_ms: i64,
) -> Result<PurgeReport, StoreError> {
    let delete = |sql: &'static str, cutoff: i64| async move {
        Ok::<u64, StoreError>(
            sqlx::query(sql)
                .bind(cutoff)
                .execute(store.writer())
                .await?
                .rows_affected(),
        )
    };
    Ok(PurgeReport {
        email_send_logs: delete(
            "DELETE FROM email_send_logs WHERE created_at < $1 AND status IN ('sent', 'suppressed', 'throttled', 'failed')",
            now_ms - days(retention.send_log_days),
        )
        .await?,
        session_events: delete("DELETE FROM session_events WHERE created_at < $1", now_ms - days(retention.session_events_days)).await?,
        email_throttles: delete("DELETE FROM email_throttles WHERE sent_at < $1", now_ms - retention.throttle_window_ms).await?,
        audit_log: delete(
            "DELETE FROM audit_log WHERE at < $1",
            now_ms - days(retention.audit_log_days.max(AUDIT_MINIMUM_DAYS)),
        )
        .await?,
        job_runs: delete(
            "DELETE FROM job_runs WHERE status <> 'running' AND finished_at < $1",
            now_ms - days(retention.audit_log_days.max(AUDIT_MINIMUM_DAYS)),
        )
        .await?,
    })
}
