//! Retention: deletes what is past its keeping time, table by table. The audit log is kept
//! at least 50 days whatever the configuration says. A dry run counts the same rows and
//! deletes none.

use crate::store::{Store, StoreError, retention};

pub const AUDIT_MINIMUM_DAYS: u64 = 50;

#[derive(Debug, Clone)]
pub struct Retention {
    pub send_log_days: u64,
    pub sessions_days: u64,
    pub session_events_days: u64,
    pub audit_log_days: u64,
    /// Bounce and complaint events are kept as long as the send ledger, and at least as long
    /// as soft bounces are counted.
    pub soft_bounce_window_days: u64,
    /// Throttle rows older than this are useless: the longest window, and two for weekly
    /// digests (dated at their week's start).
    pub throttle_window_ms: i64,
}

/// Rows deleted per table.
pub type PurgeReport = retention::Deleted;

fn days(d: u64) -> i64 {
    i64::try_from(d)
        .unwrap_or(i64::MAX / 86_400_000)
        .saturating_mul(86_400_000)
}

/// The instant before which `purge_old` deletes settled send-ledger rows: a decision older
/// than it may be gone, so it is never taken again (see the completion route).
pub fn send_log_cutoff(send_log_days: u64, now_ms: i64) -> i64 {
    now_ms.saturating_sub(days(send_log_days))
}

pub async fn run(
    store: &Store,
    retention: &Retention,
    now_ms: i64,
    dry_run: bool,
) -> Result<PurgeReport, StoreError> {
    let audit = now_ms - days(retention.audit_log_days.max(AUDIT_MINIMUM_DAYS));
    retention::delete_before(
        store,
        retention::Cutoffs {
            send_log: send_log_cutoff(retention.send_log_days, now_ms),
            sessions: now_ms - days(retention.sessions_days),
            session_events: now_ms - days(retention.session_events_days),
            email_events: now_ms
                - days(
                    retention
                        .send_log_days
                        .max(retention.soft_bounce_window_days),
                ),
            throttles: now_ms - retention.throttle_window_ms,
            audit_log: audit,
            job_runs: audit,
        },
        dry_run,
    )
    .await
}
