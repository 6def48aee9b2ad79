//! Retention's deletes: what is past its keeping time, table by table, each given its
//! cut-off instant by the purge job.

use super::{Store, StoreError};

/// The instants before which each table's rows go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Settled send-ledger rows (sent, suppressed, throttled, failed); queued ones stay.
    pub send_log: i64,
    /// Sessions started before it go, with their events.
    pub sessions: i64,
    pub session_events: i64,
    /// Bounce and complaint events (the suppressions they made stay).
    pub email_events: i64,
    pub throttles: i64,
    pub audit_log: i64,
    /// Finished job runs; a running one stays.
    pub job_runs: i64,
}

/// Rows deleted per table (by a dry run: that would be).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub email_send_logs: u64,
    pub sessions: u64,
    pub session_events: u64,
    pub email_events: u64,
    pub email_throttles: u64,
    pub audit_log: u64,
    pub job_runs: u64,
}

/// Deletes what is older than `cutoffs`; with `dry_run` the same deletes run in a
/// transaction that is rolled back, so the counts are exact and nothing changes.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete_before(
    store: &Store,
    cutoffs: Cutoffs,
    dry_run: bool,
) -> Result<Deleted, StoreError> {
    let mut tx = store.writer().begin().await?;
    let mut delete = async |sql: &'static str, cutoff: i64| {
        Ok::<u64, StoreError>(
            sqlx::query(sql)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        )
    };
    let deleted = Deleted {
        email_send_logs: delete(
            "DELETE FROM email_send_logs WHERE created_at < $1 AND status IN ('sent', 'suppressed', 'throttled', 'failed')",
            cutoffs.send_log,
        )
        .await?,
        // The events of sessions that go, then older events of sessions that stay.
        session_events: delete(
            "DELETE FROM session_events WHERE session_id IN \
             (SELECT id FROM sessions WHERE started_at < $1)",
            cutoffs.sessions,
        )
        .await?
            + delete(
                "DELETE FROM session_events WHERE created_at < $1",
                cutoffs.session_events,
            )
            .await?,
        sessions: delete(
            "DELETE FROM sessions WHERE started_at < $1",
            cutoffs.sessions,
        )
        .await?,
        email_events: delete(
            "DELETE FROM email_events WHERE at < $1",
            cutoffs.email_events,
        )
        .await?,
        email_throttles: delete(
            "DELETE FROM email_throttles WHERE sent_at < $1",
            cutoffs.throttles,
        )
        .await?,
        audit_log: delete("DELETE FROM audit_log WHERE at < $1", cutoffs.audit_log).await?,
        job_runs: delete(
            "DELETE FROM job_runs WHERE status <> 'running' AND finished_at < $1",
            cutoffs.job_runs,
        )
        .await?,
    };
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(deleted)
}
