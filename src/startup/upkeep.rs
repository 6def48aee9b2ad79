//! The chores started beside the service: metrics upkeep and the series declared from the
//! first scrape, the rate-limit refusal summary, and the policy reload between replicas.

use std::sync::Arc;
use std::time::Duration;

use herald_actors::clock::SharedClock;
use herald_actors::limiter::LimiterClient;
use herald_supervision::SupervisorRef;

use crate::ratelimit::{Policies, RefusalLog};
use crate::store::Store;

/// Every few seconds: publishes the number of tracked rate-limit clients and folds
/// histogram samples into buckets (bounded memory when nothing scrapes `/metrics`).
pub(super) fn spawn_metrics_upkeep(
    metrics: &'static crate::metrics::Metrics,
    limiter: LimiterClient,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            metrics.run_upkeep();
            crate::metrics::rate_limit_keys(limiter.tracked_keys().await);
            if let Some(up) = limiter.shared_up() {
                crate::metrics::rate_limit_backend_up(up);
            }
        }
    });
}

/// Every series with a known label set, exported from the first scrape: each supervised
/// actor's restarts and each job's runs at 0, each job's last success from the run ledger.
pub(super) async fn declare_known_series(root: &SupervisorRef, store: &Store) {
    fn ids(children: &[herald_supervision::ChildStatus], out: &mut Vec<String>) {
        for child in children {
            out.push(child.id.clone());
            ids(&child.children, out);
        }
    }
    let mut actors = Vec::new();
    if let Ok(children) = root.status().await {
        ids(&children, &mut actors);
    }
    let jobs = crate::jobs::JobName::ALL.map(crate::jobs::JobName::as_str);
    crate::metrics::declare_known(&actors, &jobs);
    for job in jobs {
        match crate::store::jobs::last_success(store, job).await {
            Ok(last) => crate::metrics::job_last_success(job, last),
            Err(err) => tracing::warn!(job, error = %err, "could not read the job's last success"),
        }
    }
}

/// Once a minute: how many rate-limit refusals there were, since refused clients are logged
/// once per window rather than once per request.
pub(super) fn spawn_refusal_summary(refusals: Arc<RefusalLog>, clock: SharedClock) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let now = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
            if let Some(summary) = refusals.take_summary(now) {
                tracing::warn!(
                    refused = summary.refused,
                    logged = summary.logged,
                    "rate-limit refusals in the last minute"
                );
            }
        }
    });
}

/// Several replicas share one PostgreSQL database: each reloads the stored policies every
/// `every`, so a change made through any replica is in force on all of them within that
/// time (plus one query). The table holds a row per group and tier: a reload is one small
/// read. On SQLite one process serves, and its own changes apply at once.
pub(super) fn spawn_policy_refresh(store: Store, policies: Arc<Policies>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if store.is_closed() {
                return;
            }
            match crate::store::policies::load(&store).await {
                Ok(rows) => policies.replace(&rows),
                Err(err) => tracing::debug!(error = %err, "could not reload rate-limit policies"),
            }
        }
    });
}
