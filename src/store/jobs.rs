//! The occurrence ledger (`job_runs`): one row per (job, scheduled_for), so an occurrence
//! runs once however often and from however many processes it is triggered.

use herald_actors::scheduler::{Claim, JobLedger, Occurrence};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: String,
    pub job: String,
    pub scheduled_for_ms: i64,
    /// running, succeeded or failed.
    pub status: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    /// The job's statistics (JSON text).
    pub stats: Option<String>,
    /// Until when a `running` row is vouched for by a live process.
    pub lease_until_ms: Option<i64>,
    /// How many times the occurrence has been run (reruns of a failed run and takeovers of
    /// a run whose process stopped count).
    pub attempts: i64,
    /// The process that ran it last (or runs it): `{HERALD_INSTANCE}/{pid}-{nonce}`, or
    /// `cli@{HERALD_INSTANCE}/…` for a run from the shell.
    pub owner: Option<String>,
}

/// Starts the occurrence as `claim` allows: unless it exists (taking over a `running` row
/// whose lease expired), or, to run it again, only if its run failed after as many runs as
/// the claim says. Either way a run of a row that existed counts one more attempt.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn try_start(
    store: &Store,
    job: &str,
    scheduled_for: i64,
    now_ms: i64,
    lease_ms: i64,
    owner: &str,
    claim: Claim,
) -> Result<Option<String>, StoreError> {
    let sql = match claim {
        Claim::Start => {
            "INSERT INTO job_runs (id, job, scheduled_for, status, started_at, lease_until, owner) \
             VALUES ($1, $2, $3, 'running', $4, $5, $6) \
             ON CONFLICT (job, scheduled_for) DO UPDATE SET id = excluded.id, started_at = excluded.started_at, \
               lease_until = excluded.lease_until, owner = excluded.owner, error = NULL, \
               attempts = job_runs.attempts + 1 \
             WHERE job_runs.status = 'running' AND job_runs.lease_until < $4 \
             RETURNING id"
        }
        Claim::Rerun { .. } => {
            "UPDATE job_runs SET id = $1, status = 'running', started_at = $4, lease_until = $5, \
               owner = $6, error = NULL, finished_at = NULL, attempts = attempts + 1 \
             WHERE job = $2 AND scheduled_for = $3 AND status = 'failed' AND attempts = $7 \
             RETURNING id"
        }
    };
    let query = sqlx::query(sql)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(job)
        .bind(scheduled_for)
        .bind(now_ms)
        .bind(now_ms + lease_ms)
        .bind(owner);
    let query = match claim {
        Claim::Start => query,
        Claim::Rerun { attempts } => query.bind(i64::from(attempts)),
    };
    let row = query.fetch_optional(store.writer()).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn renew(store: &Store, run_id: &str, until_ms: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE job_runs SET lease_until = $2 WHERE id = $1 AND status = 'running'")
        .bind(run_id)
        .bind(until_ms)
        .execute(store.writer())
        .await?;
    Ok(())
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn finish(
    store: &Store,
    run_id: &str,
    succeeded: bool,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (status, error, stats) = if succeeded {
        ("succeeded", None, Some(detail))
    } else {
        ("failed", Some(detail), None)
    };
    sqlx::query(
        "UPDATE job_runs SET status = $2, finished_at = $3, error = $4, stats = $5, lease_until = NULL WHERE id = $1",
    )
    .bind(run_id)
    .bind(status)
    .bind(now_ms)
    .bind(error)
    .bind(stats)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// The occurrence as the ledger holds it.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn occurrence(
    store: &Store,
    job: &str,
    scheduled_for: i64,
) -> Result<Option<Occurrence>, StoreError> {
    let row = sqlx::query(
        "SELECT status, lease_until, finished_at, attempts FROM job_runs \
         WHERE job = $1 AND scheduled_for = $2",
    )
    .bind(job)
    .bind(scheduled_for)
    .fetch_optional(store.reader())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let status: String = row.try_get("status")?;
    Ok(Some(match status.as_str() {
        "running" => Occurrence::Running {
            lease_until_ms: row.try_get::<Option<i64>, _>("lease_until")?.unwrap_or(0),
        },
        "failed" => Occurrence::Failed {
            finished_at_ms: row.try_get::<Option<i64>, _>("finished_at")?.unwrap_or(0),
            attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        },
        _ => Occurrence::Succeeded,
    }))
}

/// The occurrences of every job that are running, or that failed after at most
/// `max_attempts` runs, whose last run started at or after `since_ms`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn unsettled(
    store: &Store,
    since_ms: i64,
    max_attempts: u32,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT job, scheduled_for FROM job_runs WHERE started_at >= $1 \
         AND (status = 'running' OR (status = 'failed' AND attempts <= $2)) \
         ORDER BY job, scheduled_for",
    )
    .bind(since_ms)
    .bind(i64::from(max_attempts))
    .fetch_all(store.reader())
    .await?;
    super::pairs(&rows)
}

/// The job's latest occurrence in the ledger, and when its earliest run there started.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn job_ledger(store: &Store, job: &str) -> Result<Option<JobLedger>, StoreError> {
    let row =
        sqlx::query("SELECT MAX(scheduled_for), MIN(started_at) FROM job_runs WHERE job = $1")
            .bind(job)
            .fetch_one(store.reader())
            .await?;
    let (latest, first_started): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
    Ok(latest
        .zip(first_started)
        .map(|(latest, first_started)| JobLedger {
            latest,
            first_started,
        }))
}

/// When `job` last finished successfully, on any replica.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn last_success(store: &Store, job: &str) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "SELECT MAX(finished_at) FROM job_runs WHERE job = $1 AND status = 'succeeded'",
    )
    .bind(job)
    .fetch_one(store.reader())
    .await?;
    Ok(row.try_get(0)?)
}

fn job_run(row: &AnyRow) -> Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        id: row.try_get("id")?,
        job: row.try_get("job")?,
        scheduled_for_ms: row.try_get("scheduled_for")?,
        status: row.try_get("status")?,
        started_at_ms: row.try_get("started_at")?,
        finished_at_ms: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        stats: row.try_get("stats")?,
        lease_until_ms: row.try_get("lease_until")?,
        attempts: row.try_get("attempts")?,
        owner: row.try_get("owner")?,
    })
}

/// The runs of a job, newest occurrence first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn runs(store: &Store, job: &str, limit: i64) -> Result<Vec<JobRun>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, job, scheduled_for, status, started_at, finished_at, error, stats, lease_until, attempts, owner \
         FROM job_runs WHERE job = $1 ORDER BY scheduled_for DESC LIMIT $2",
    )
    .bind(job)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(job_run)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
