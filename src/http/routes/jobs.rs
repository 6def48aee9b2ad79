//! `/admin/jobs`: see the scheduled jobs, run one now (or dry), read its history.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use herald_actors::scheduler::RunError;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::OptionalJson;
use crate::http::state::AppState;
use crate::http::validate;
use crate::jobs::digest;
use crate::store::instant;
use crate::store::jobs::{self, JobRun};

#[derive(Serialize, ToSchema)]
pub struct LastRun {
    pub run_id: String,
    pub scheduled_for: DateTime<Utc>,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    pub stats: Option<serde_json::Value>,
    /// How many times the occurrence has been run: its first run, each rerun after a
    /// failure and each takeover of a run whose process stopped.
    pub attempts: i64,
    /// Where it ran last (or runs): the replica's `HERALD_INSTANCE`, or `cli@` and the
    /// instance for a run from the shell; the process follows the slash.
    pub run_by: Option<String>,
}

impl From<JobRun> for LastRun {
    fn from(run: JobRun) -> Self {
        Self {
            duration_ms: run.finished_at_ms.map(|f| f - run.started_at_ms),
            run_id: run.id,
            scheduled_for: instant(run.scheduled_for_ms),
            status: run.status,
            started_at: instant(run.started_at_ms),
            finished_at: run.finished_at_ms.map(instant),
            error: run.error,
            stats: run.stats.and_then(|s| serde_json::from_str(&s).ok()),
            attempts: run.attempts,
            run_by: run.owner,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub next_run: Option<DateTime<Utc>>,
    pub running_now: bool,
    pub last_run: Option<LastRun>,
    /// For a digest job with local delivery: how many recipients its zone has (those without
    /// a zone of their own count in `weekly_digest`'s).
    pub recipients: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        message: "The scheduler is restarting; please retry.".to_owned(),
        retry_after_seconds: 1,
    }
}

#[utoipa::path(get, path = "/admin/jobs", tag = "jobs", security(("api_key" = [])),
    responses(
        (status = 200, description = "Every job: schedule, next run, last run", body = JobList),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 503, description = "The scheduler is restarting", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    let statuses = state.scheduler.list().await.ok_or_else(unavailable)?;
    let default = state.config.jobs.timezone;
    let by_job = crate::jobs::digest_recipients(&state.store, &state.config.jobs).await?;
    let mut views = Vec::with_capacity(statuses.len());
    for status in statuses {
        let last = jobs::runs(&state.store, &status.name, 1)
            .await?
            .into_iter()
            .next();
        let recipients = match crate::jobs::digest_zone(&status.name, default) {
            Some(_) if state.config.jobs.local_delivery => {
                Some(by_job.get(&status.name).copied().unwrap_or(0))
            }
            _ => None,
        };
        views.push(JobView {
            recipients,
            running_now: status.running.is_some()
                || last.as_ref().is_some_and(|r| r.status == "running"),
            name: status.name,
            schedule: status.schedule,
            timezone: status.timezone,
            next_run: status.next_run_ms.map(instant),
            last_run: last.map(LastRun::from),
        });
    }
    Ok(Json(JobList { jobs: views }))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Report what would happen; write and send nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The digest's week (YYYY-MM-DD); default: the seven days before today.
    #[schema(format = Date)]
    pub start_date: Option<String>,
}

/// What a dry run reports, by job.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum DryRunReport {
    /// `weekly_digest`: who would get a digest, and who would not and why.
    Digest(crate::jobs::digest::DigestReport),
    /// `purge_old`: the rows each table would lose.
    Purge(crate::store::retention::Deleted),
}

#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    pub job: String,
    pub run_id: String,
    pub status: &'static str,
}

#[utoipa::path(post, path = "/admin/jobs/{name}/run", tag = "jobs", security(("api_key" = [])),
    params(("name" = String, Path, description = "weekly_digest or purge_old")),
    request_body(content = Option<RunRequest>, description = "Optional"),
    responses(
        (status = 202, description = "Started; follow it in /admin/jobs/{name}/runs", body = RunStarted),
        (status = 200, description = "A dry run's report (nothing written, nothing sent)", body = DryRunReport),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "JOB_NOT_FOUND", body = crate::http::error::ErrorBody),
        (status = 409, description = "JOB_RUNNING (here, or that occurrence under a live lease elsewhere), or ALREADY_RAN: that week's run succeeded (one that failed runs again), or WEEK_TOO_OLD: a start_date older than the send log keeps (RETENTION_SEND_LOG_DAYS)", body = crate::http::error::ErrorBody),
        (status = 422, description = "Bad start_date", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn run(
    State(state): State<AppState>,
    key: crate::http::extract::AdminKey,
    Path(name): Path<String>,
    OptionalJson(request): OptionalJson<RunRequest>,
) -> Result<Response, ApiError> {
    if !known_job(&state, &name) {
        return Err(ApiError::not_found(
            "JOB_NOT_FOUND",
            format!("No job named {name}."),
        ));
    }
    let week = match request.start_date.as_deref() {
        None => None,
        Some(raw) => Some(
            digest::parse_date(raw)
                .ok_or_else(|| validate::invalid("start_date", "start_date must be YYYY-MM-DD"))?,
        ),
    };
    // A chosen week runs as the occurrence whose digest covers it, in the job's zone.
    let default = state.jobs.digest_timezone();
    let zone = crate::jobs::digest_zone(&name, default).unwrap_or(default);
    let send_log_days = state.config.jobs.retention.send_log_days;
    let scheduled_for = match week {
        None => None,
        Some(week) => Some(
            digest::chosen_occurrence(week, zone, send_log_days, state.jobs.now_ms()).map_err(
                |message| ApiError::Conflict {
                    code: "WEEK_TOO_OLD",
                    message,
                },
            )?,
        ),
    };
    if request.dry_run {
        let now = state.jobs.now_ms();
        let report = state
            .jobs
            .run(&name, now, week, true)
            .await
            .map_err(ApiError::internal)?;
        let body: serde_json::Value = serde_json::from_str(&report).map_err(ApiError::internal)?;
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    match state
        .scheduler
        .run_now(&name, scheduled_for)
        .await
        .ok_or_else(unavailable)?
    {
        Ok(run_id) => {
            // The ledger names the replica that runs it; the audit log, who asked. The run
            // has started: an audit row the database refuses is an error to look into, not
            // an answer that would have the run asked for again.
            let target = crate::store::audit::job_target(&name, week, &run_id);
            if let Err(err) = crate::store::audit::record_alone(
                &state.store,
                &key.fingerprint,
                "job.run",
                &target,
            )
            .await
            {
                tracing::error!(job = %name, %run_id, error = %err, "a job run by hand was not audited");
            }
            Ok((
                StatusCode::ACCEPTED,
                Json(RunStarted {
                    job: name,
                    run_id,
                    status: "running",
                }),
            )
                .into_response())
        }
        Err(RunError::AlreadyRunning(_)) => Err(ApiError::Conflict {
            code: "JOB_RUNNING",
            message: format!("{name} is running; wait for it to finish."),
        }),
        Err(RunError::AlreadyRan) => Err(ApiError::Conflict {
            code: "ALREADY_RAN",
            message: "That occurrence already ran and succeeded; see its runs.".to_owned(),
        }),
        Err(RunError::UnknownJob(job)) => Err(ApiError::not_found(
            "JOB_NOT_FOUND",
            format!("No job named {job}."),
        )),
        Err(RunError::Port(detail)) => Err(ApiError::Internal(detail)),
    }
}

/// `purge_old`, `weekly_digest`, or with local delivery the digest job of a zone
/// (`weekly_digest@Asia/Tokyo`).
fn known_job(state: &AppState, name: &str) -> bool {
    let jobs = &state.config.jobs;
    name == crate::jobs::PURGE_OLD
        || crate::jobs::digest_zone(name, jobs.timezone)
            .is_some_and(|zone| jobs.local_delivery || zone == jobs.timezone)
}

#[derive(Serialize, ToSchema)]
pub struct RunHistory {
    pub job: String,
    pub runs: Vec<LastRun>,
}

#[utoipa::path(get, path = "/admin/jobs/{name}/runs", tag = "jobs", security(("api_key" = [])),
    params(("name" = String, Path, description = "weekly_digest or purge_old")),
    responses(
        (status = 200, description = "The job's runs, newest occurrence first (at most 100)", body = RunHistory),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "JOB_NOT_FOUND", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn runs(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<RunHistory>, ApiError> {
    if !known_job(&state, &name) {
        return Err(ApiError::not_found(
            "JOB_NOT_FOUND",
            format!("No job named {name}."),
        ));
    }
    let runs = jobs::runs(&state.store, &name, 100).await?;
    Ok(Json(RunHistory {
        job: name,
        runs: runs.into_iter().map(LastRun::from).collect(),
    }))
}
