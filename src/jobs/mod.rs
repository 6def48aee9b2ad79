//! Scheduled jobs: the weekly digest and retention. [`JobsPort`] is the scheduler actor's
//! way to the occurrence ledger and to these bodies; the admin API and the CLI call the same
//! bodies.

pub mod digest;
pub mod purge;

use std::time::Instant;

use herald_actors::clock::SharedClock;
use herald_actors::port::PortError;
use herald_actors::scheduler::{Claim, JobLedger, JobSpec, Occurrence, RunOutcome, SchedulerPort};
use herald_actors::throttle::ThrottleClient;

use crate::config::JobsConfig;
use crate::store::{Store, jobs};

pub const WEEKLY_DIGEST: &str = "weekly_digest";
pub const PURGE_OLD: &str = "purge_old";

/// The name of the digest job of recipients in `zone`: `weekly_digest` for the service's
/// own zone (`DIGEST_TIMEZONE`), `weekly_digest@{zone}` for any other.
pub fn digest_job(zone: chrono_tz::Tz, default: chrono_tz::Tz) -> String {
    if zone == default {
        WEEKLY_DIGEST.to_owned()
    } else {
        format!("{WEEKLY_DIGEST}@{}", zone.name())
    }
}

/// The digest job of recipients in `zone`: `DIGEST_SCHEDULE` read in that zone, under the
/// same missed-run policy.
pub fn zone_digest_job(config: &JobsConfig, zone: chrono_tz::Tz) -> JobSpec {
    JobSpec {
        name: digest_job(zone, config.timezone),
        schedule: config.digest.in_zone(zone),
        missed: config.missed,
    }
}

/// With local delivery, how many recipients each zone's digest job covers, by job name (the
/// service's own job also covers every address without a zone), in one read; empty with
/// global delivery, where no job covers one zone's recipients.
pub async fn digest_recipients(
    store: &Store,
    jobs: &JobsConfig,
) -> Result<std::collections::BTreeMap<String, i64>, crate::store::StoreError> {
    if !jobs.local_delivery {
        return Ok(Default::default());
    }
    Ok(
        crate::store::preferences::recipients_by_zone(store, jobs.timezone.name())
            .await?
            .into_iter()
            .filter_map(|(zone, count)| {
                let zone = zone.parse::<chrono_tz::Tz>().ok()?;
                Some((digest_job(zone, jobs.timezone), count))
            })
            .collect(),
    )
}

/// The jobs registered in code, with their schedules from configuration.
pub fn job_specs(jobs: &JobsConfig) -> Vec<JobSpec> {
    vec![
        JobSpec {
            name: WEEKLY_DIGEST.to_owned(),
            schedule: jobs.digest.clone(),
            missed: jobs.missed,
        },
        JobSpec {
            name: PURGE_OLD.to_owned(),
            schedule: jobs.purge.clone(),
            missed: jobs.missed,
        },
    ]
}

/// The zone a digest job is for, when `job` names one.
pub fn digest_zone(job: &str, default: chrono_tz::Tz) -> Option<chrono_tz::Tz> {
    if job == WEEKLY_DIGEST {
        return Some(default);
    }
    job.strip_prefix("weekly_digest@")?.parse().ok()
}

/// The jobs herald runs, by the names the ledger, the admin API and the CLI use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobName {
    #[value(name = "weekly_digest")]
    WeeklyDigest,
    #[value(name = "purge_old")]
    PurgeOld,
}

impl JobName {
    pub const ALL: [JobName; 2] = [JobName::WeeklyDigest, JobName::PurgeOld];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WeeklyDigest => WEEKLY_DIGEST,
            Self::PurgeOld => PURGE_OLD,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|job| job.as_str() == name)
    }
}

/// Why a job body failed; its text is what the run ledger records.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("no job named {0}")]
    Unknown(String),
    #[error(transparent)]
    Digest(#[from] digest::DigestError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("could not encode the job's statistics: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Everything the job bodies need.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub throttle: ThrottleClient,
    pub clock: SharedClock,
    /// Each recipient's digest at their own local time (`DIGEST_DELIVERY=local`).
    pub local_delivery: bool,
    /// `DIGEST_SCHEDULE`, in `DIGEST_TIMEZONE`; with local delivery, read in each zone.
    pub digest_schedule: herald_actors::scheduler::Schedule,
    pub digest_throttle: herald_actors::throttle::ThrottleRule,
    pub retention: purge::Retention,
    /// Names this process in the ledger's `owner` column.
    pub owner: String,
}

impl JobContext {
    /// The service's zone (`DIGEST_TIMEZONE`): digest weeks and recipients without a zone.
    pub fn digest_timezone(&self) -> chrono_tz::Tz {
        self.digest_schedule.tz()
    }

    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Runs `job` for the occurrence at `scheduled_for`; `week_start` overrides the digest's
    /// week. Returns the statistics as JSON.
    pub async fn run(
        &self,
        job: &str,
        scheduled_for: i64,
        week_start: Option<chrono::NaiveDate>,
        dry_run: bool,
    ) -> Result<String, JobError> {
        // A zone's own digest job exists only with local delivery.
        let default = self.digest_timezone();
        if let Some(zone) =
            digest_zone(job, default).filter(|zone| self.local_delivery || *zone == default)
        {
            let report = digest::run(digest::DigestRun {
                store: &self.store,
                throttle: Some(&self.throttle),
                week_start: week_start.unwrap_or_else(|| digest::week_before(scheduled_for, zone)),
                timezone: zone,
                dry_run,
                now_ms: self.now_ms(),
                throttle_rule: self.digest_throttle,
                zone: self
                    .local_delivery
                    .then(|| crate::store::activity::ZoneScope {
                        zone,
                        default: self.digest_timezone(),
                        moved_since_ms: scheduled_for - crate::reports::week::WEEK_MS,
                    }),
            })
            .await?;
            let report = if dry_run && self.local_delivery {
                digest::DigestReport {
                    upcoming: self.upcoming_digests().await?,
                    ..report
                }
            } else {
                report
            };
            return Ok(serde_json::to_string(&report)?);
        }
        match job {
            PURGE_OLD => {
                let report =
                    purge::run(&self.store, &self.retention, self.now_ms(), dry_run).await?;
                Ok(serde_json::to_string(&report)?)
            }
            other => Err(JobError::Unknown(other.to_owned())),
        }
    }

    /// With local delivery, the next occurrence of every zone's digest, soonest first, with
    /// how many recipients each covers.
    pub async fn upcoming_digests(&self) -> Result<Vec<digest::Upcoming>, JobError> {
        let now = self.now_ms();
        let default = self.digest_timezone();
        let mut zones =
            crate::store::preferences::recipients_by_zone(&self.store, default.name()).await?;
        if !zones.iter().any(|(zone, _)| zone == default.name()) {
            zones.push((default.name().to_owned(), 0));
        }
        let mut upcoming = Vec::new();
        for (zone, recipients) in zones {
            let Ok(zone) = zone.parse::<chrono_tz::Tz>() else {
                continue;
            };
            if let Some(at) = self.digest_schedule.in_zone(zone).next_after(now) {
                upcoming.push((
                    at,
                    digest::Upcoming {
                        job: digest_job(zone, default),
                        timezone: zone.name().to_owned(),
                        at: crate::store::instant(at),
                        recipients,
                    },
                ));
            }
        }
        upcoming.sort_by(|a, b| (a.0, &a.1.job).cmp(&(b.0, &b.1.job)));
        Ok(upcoming.into_iter().map(|(_, u)| u).collect())
    }
}

/// The scheduler's port.
pub struct JobsPort {
    pub context: JobContext,
}

fn port_error(err: impl std::fmt::Display) -> PortError {
    PortError::new(err)
}

impl SchedulerPort for JobsPort {
    async fn try_start(
        &self,
        job: &str,
        scheduled_for: i64,
        now_ms: i64,
        lease_ms: i64,
        claim: Claim,
    ) -> Result<Option<String>, PortError> {
        jobs::try_start(
            &self.context.store,
            job,
            scheduled_for,
            now_ms,
            lease_ms,
            &self.context.owner,
            claim,
        )
        .await
        .map_err(port_error)
    }

    async fn renew(&self, run_id: &str, until_ms: i64) -> Result<(), PortError> {
        jobs::renew(&self.context.store, run_id, until_ms)
            .await
            .map_err(port_error)
    }

    async fn finish(
        &self,
        job: &str,
        run_id: &str,
        outcome: &RunOutcome,
        now_ms: i64,
    ) -> Result<(), PortError> {
        let (succeeded, detail) = match outcome {
            RunOutcome::Succeeded(stats) => (true, stats.as_str()),
            RunOutcome::Failed(error) => (false, error.as_str()),
        };
        let started = jobs::runs(&self.context.store, job, 50)
            .await
            .ok()
            .and_then(|runs| runs.into_iter().find(|r| r.id == run_id))
            .map(|r| r.started_at_ms);
        let duration = started
            .map(|s| std::time::Duration::from_millis(u64::try_from(now_ms - s).unwrap_or(0)));
        crate::metrics::job_finished(job, succeeded, duration);
        if succeeded {
            tracing::info!(job, run_id, stats = detail, "job succeeded");
        } else {
            let detail = crate::redact::mask_emails_in(detail);
            tracing::error!(job, run_id, error = %detail, "job failed");
            sentry::with_scope(
                |scope| {
                    scope.set_tag("job", job);
                    scope.set_tag("run_id", run_id);
                },
                || {
                    sentry::capture_message(
                        &format!("job {job} failed: {detail}"),
                        sentry::Level::Error,
                    )
                },
            );
        }
        jobs::finish(&self.context.store, run_id, succeeded, detail, now_ms)
            .await
            .map_err(port_error)
    }

    async fn occurrence(
        &self,
        job: &str,
        scheduled_for: i64,
    ) -> Result<Option<Occurrence>, PortError> {
        jobs::occurrence(&self.context.store, job, scheduled_for)
            .await
            .map_err(port_error)
    }

    async fn unsettled(
        &self,
        since_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<(String, i64)>, PortError> {
        jobs::unsettled(&self.context.store, since_ms, max_attempts)
            .await
            .map_err(port_error)
    }

    async fn job_ledger(&self, job: &str) -> Result<Option<JobLedger>, PortError> {
        jobs::job_ledger(&self.context.store, job)
            .await
            .map_err(port_error)
    }

    async fn run(&self, job: &str, scheduled_for: i64) -> Result<String, String> {
        let started = Instant::now();
        let transaction = crate::telemetry::transaction(&format!("job {job}"), "job.run");
        let result = self.context.run(job, scheduled_for, None, false).await;
        crate::telemetry::finish_transaction(transaction, result.is_ok());
        tracing::debug!(
            job,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "job body finished"
        );
        result.map_err(|err| err.to_string())
    }
}
