//! The scheduled jobs' part of start-up: the context their bodies run with, the task that
//! keeps a digest job scheduled for each recipient zone, and the same throttle and jobs for
//! a CLI command that runs a job without serving.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald_actors::clock::{SharedClock, SystemClock};
use herald_actors::scheduler::SchedulerClient;
use herald_actors::throttle::{ThrottleClient, email_throttle};
use herald_supervision::{Supervisor, SupervisorRef, SupervisorSpec};

use super::{THROTTLE_SHARDS, throttle_actor};
use crate::config::Config;
use crate::jobs::JobContext;
use crate::jobs::purge::Retention;
use crate::store::Store;
use crate::store::group_commit::GroupCommit;

/// What the job bodies need; `owner` prefixes the name this process has in the job ledger
/// (its `HERALD_INSTANCE`, so on-call can tell which replica ran a job, then the process).
pub(super) fn job_context(
    config: &Config,
    store: &Store,
    throttle: &ThrottleClient,
    clock: &SharedClock,
    owner: &str,
) -> JobContext {
    let delivery = &config.email.delivery;
    JobContext {
        store: store.clone(),
        throttle: throttle.clone(),
        clock: clock.clone(),
        local_delivery: config.jobs.local_delivery,
        digest_schedule: config.jobs.digest.clone(),
        digest_throttle: delivery.weekly_digest,
        retention: Retention {
            send_log_days: config.jobs.retention.send_log_days,
            sessions_days: config.jobs.retention.sessions_days,
            session_events_days: config.jobs.retention.session_events_days,
            audit_log_days: config.jobs.retention.audit_log_days,
            soft_bounce_window_days: config.events.soft_bounce_window.as_secs().div_ceil(86_400),
            // A digest's slot is dated at the start of the week it reports, a week before
            // it goes out, and is still read a window after that (a run for an overlapping
            // week): kept two windows.
            throttle_window_ms: delivery
                .session_reports
                .window_ms
                .max(delivery.weekly_digest.window_ms.saturating_mul(2)),
        },
        owner: format!(
            "{owner}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ),
    }
}

/// With local delivery, keeps a digest job scheduled for every zone a recipient has chosen.
/// At start it reads every zone in use; then, every minute, only the zones chosen since
/// (a zone chosen on another replica is picked up within that time; one chosen here is
/// scheduled at once by the route), and adds every known zone's job again (a restarted
/// scheduler knows only its first jobs). Each job exists from when its zone was first
/// chosen, so an occurrence missed while herald was down is caught up like any other job's.
pub(super) fn spawn_zone_jobs(
    store: Store,
    scheduler: SchedulerClient,
    config: crate::config::JobsConfig,
) {
    use crate::store::preferences;
    /// How far back each look overlaps the one before: changes written by a replica whose
    /// clock is behind are still seen.
    const OVERLAP_MS: i64 = 10 * 60_000;
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Each known zone, with when it was first chosen.
        let mut known = std::collections::HashMap::<chrono_tz::Tz, Option<i64>>::new();
        let mut seen_up_to: Option<i64> = None;
        loop {
            every.tick().await;
            if store.is_closed() {
                return;
            }
            let zones = match seen_up_to {
                None => match (
                    preferences::latest_change(&store).await,
                    preferences::zones(&store).await,
                ) {
                    (Ok(latest), Ok(zones)) => Ok((zones, Some(latest.unwrap_or(i64::MIN)))),
                    (Err(err), _) | (_, Err(err)) => Err(err),
                },
                Some(seen) => {
                    preferences::zones_chosen_since(&store, seen.saturating_sub(OVERLAP_MS)).await
                }
            };
            let (zones, latest) = match zones {
                Ok(found) => found,
                Err(err) => {
                    tracing::debug!(error = %err, "could not read the recipients' zones");
                    continue;
                }
            };
            seen_up_to = latest.max(seen_up_to);
            for zone in zones.iter().filter_map(|z| z.parse::<chrono_tz::Tz>().ok()) {
                if zone == config.timezone || known.contains_key(&zone) {
                    continue;
                }
                match preferences::zone_chosen_since(&store, zone.name()).await {
                    Ok(since) => {
                        known.insert(zone, since);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "could not read when a zone was chosen")
                    }
                }
            }
            for (zone, since) in &known {
                scheduler.add(crate::jobs::zone_digest_job(&config, *zone), *since);
            }
        }
    });
}

/// What the CLI needs to run jobs without serving, on `store` (migrated: the CLI never
/// changes the schema under a running service): the throttle actors the digest sends
/// through, and the job bodies. The running service's dispatcher sends what these queue.
pub async fn offline_jobs(
    config: &Config,
    store: Store,
) -> anyhow::Result<(JobContext, SupervisorRef)> {
    let clock: SharedClock = Arc::new(SystemClock);
    let writes = GroupCommit::spawn(store.clone());
    let (throttle_spec, throttle) = email_throttle(
        throttle_actor(config, &store, &writes, &clock),
        THROTTLE_SHARDS,
        Duration::from_secs(30),
        None,
    );
    let (root, _join) = Supervisor::spawn(
        "cli",
        SupervisorSpec::one_for_one(vec![throttle_spec]),
        None,
    )
    .await
    .context("starting the email throttle")?;
    let context = job_context(
        config,
        &store,
        &throttle,
        &clock,
        &format!("cli@{}/", config.server.instance),
    );
    Ok((context, root))
}
