//! Assembles the application: store, migrations, supervision tree, router, listener.
//! [`Application::build`] does everything that can fail before serving, so a test (or
//! `main`) learns of a problem before any traffic; [`Application::run_until_stopped`]
//! serves until the shutdown signal, then stops the actors in reverse start order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use herald_actors::clock::{SharedClock, SystemClock};
use herald_actors::limiter::{
    AtCapacity, BreakerPolicy, LimiterClient, LimiterConfig, SharedConfig,
};
use herald_supervision::{ChildSpec, Intensity, Supervisor, SupervisorRef, SupervisorSpec};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use std::time::Duration;

use herald_actors::dispatcher::{Dispatcher, DispatcherClient, DispatcherConfig, RetryPolicy};
use herald_actors::scheduler::{JobSpec, Scheduler, SchedulerClient, SchedulerConfig};
use herald_actors::throttle::{EmailThrottle, ThrottleClient, email_throttle};

use crate::jobs::purge::Retention;
use crate::jobs::{JobContext, JobsPort, PURGE_OLD, WEEKLY_DIGEST};

use crate::config::{Config, FailMode};
use crate::email::ports::{MetricsObserver, OutboxPort, Reports, StoreThrottlePort};
use crate::email::{Mailer, Signer};
use crate::http::AppState;
use crate::http::state::Shared;
use crate::keys::KeyRing;
use crate::ratelimit::redis::RedisWindows;
use crate::ratelimit::{Policies, RefusalLog};
use crate::store::group_commit::GroupCommit;
use crate::store::serve_lock::ServeLock;
use crate::store::{Backend, Store};
use crate::telemetry::SupervisionReporter;

/// Email throttle shards: decisions about different recipients run side by side.
const THROTTLE_SHARDS: usize = 4;

/// How the service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// A shutdown signal; the process exits 0.
    Graceful,
    /// The root supervisor gave up; the process exits non-zero so it is restarted.
    Escalated,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    root_join: JoinHandle<()>,
    /// Routes mounted beside herald's own, behind the same edge layers.
    extra_routes: Option<axum::Router<AppState>>,
    /// On SQLite: this process's claim to serve the file, released when it stops.
    serve_lock: Option<ServeLock>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds with the given clock (a manual one in tests of time-based rules).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let metrics = crate::metrics::install();
        let serve_lock = config
            .storage
            .sqlite_file()
            .map(|file| ServeLock::acquire(&file))
            .transpose()?;
        let store = Store::connect_with(
            config.storage.database_url.expose(),
            config.storage.max_connections,
        )
        .await
        .context("connecting to the database")?;
        store.migrate().await.context("applying migrations")?;
        // What an earlier run left mid-send on SQLite goes out again as the dispatcher
        // starts (see `DispatchPort::recover`).

        let stored = crate::store::policies::load(&store)
            .await
            .context("loading rate-limit policies")?;
        let policies = Arc::new(Policies::new(config.rate_limit.default_policy, &stored));
        let (limiter_spec, limiter) = herald_actors::limiter::limiter(LimiterConfig {
            shards: config.rate_limit.shards,
            keys_per_shard: config.rate_limit.max_keys_per_shard,
            at_capacity: match config.rate_limit.fail_mode {
                FailMode::Open => AtCapacity::Admit,
                FailMode::Closed => AtCapacity::Refuse,
            },
            check_timeout: config.rate_limit.check_timeout,
            clock: clock.clone(),
            observer: Some(Arc::new(SupervisionReporter)),
            shared: shared_windows(&config)?,
        });

        let delivery = &config.email.delivery;
        let writes = GroupCommit::spawn(store.clone());
        let (throttle_spec, throttle) = email_throttle(
            throttle_actor(&config, &store, &writes, &clock),
            THROTTLE_SHARDS,
            Duration::from_secs(5),
            Some(Arc::new(SupervisionReporter)),
        );
        let signer = Signer::from_config(&config);
        let reports = Arc::new(Reports::default());
        let outbox = OutboxPort {
            store: store.clone(),
            writes: writes.clone(),
            claimed: Default::default(),
            reports: reports.clone(),
            mailer: Mailer::from_config(&config.email).context("configuring the email provider")?,
            dkim: config.email.dkim.clone(),
            signer: signer.clone(),
            from: config.email.from.clone(),
            api_base_url: config.email.api_base_url.clone(),
            instance: config.server.instance.clone(),
            templates: config.email.templates.clone(),
            clock: clock.clone(),
            digest_timezone: config.jobs.timezone,
        };
        let dispatcher_spec = ChildSpec::actor(
            "email_dispatcher",
            Dispatcher {
                port: Arc::new(outbox),
                observer: Arc::new(MetricsObserver),
                clock: clock.clone(),
                config: DispatcherConfig {
                    concurrency: delivery.concurrency,
                    lease: delivery.outbox_lease,
                    poll_every: delivery.poll_interval,
                    retry: RetryPolicy {
                        max_attempts: delivery.max_attempts,
                        max_lifetime: delivery.max_lifetime,
                        base_delay: delivery.retry_base,
                        ..RetryPolicy::default()
                    },
                    breaker_cooldown: delivery.breaker_cooldown,
                    drain_timeout: config.server.shutdown_timeout,
                    ..DispatcherConfig::default()
                },
            },
            || (),
        )
        .shutdown(config.server.shutdown_timeout + Duration::from_secs(1));
        let dispatcher = DispatcherClient::new(dispatcher_spec.slot());

        let jobs = job_context(&config, &store, &throttle, &clock, "");
        let scheduler_spec = ChildSpec::actor(
            "scheduler",
            Scheduler {
                port: Arc::new(JobsPort {
                    context: jobs.clone(),
                }),
                clock: clock.clone(),
                jobs: job_specs(&config),
                config: SchedulerConfig {
                    lease: config.jobs.lease,
                    catch_up_horizon: config.jobs.catch_up_horizon,
                },
            },
            || (),
        );
        let scheduler = SchedulerClient::new(scheduler_spec.slot(), Duration::from_secs(5));

        let (root, root_join) = spawn_root(vec![
            limiter_spec,
            throttle_spec,
            dispatcher_spec,
            scheduler_spec,
        ])
        .await?;
        declare_known_series(&root, &store).await;
        tokio::task::spawn_blocking(crate::reports::pdf::warm_up);
        spawn_metrics_upkeep(metrics, limiter.clone());
        if config.jobs.local_delivery {
            spawn_zone_jobs(store.clone(), scheduler.clone(), config.jobs.clone());
        }
        let refusals = Arc::new(RefusalLog::default());
        spawn_refusal_summary(refusals.clone(), clock.clone());
        if store.backend() == Backend::Postgres {
            spawn_policy_refresh(
                store.clone(),
                policies.clone(),
                config.rate_limit.policy_refresh,
            );
        }

        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let state = AppState::new(Shared {
            keys: Arc::new(KeyRing::from_config(&config)),
            config: Arc::new(config),
            store,
            writes,
            root,
            metrics,
            limiter,
            policies,
            refusals: refusals.clone(),
            throttle,
            dispatcher,
            signer: Arc::new(signer),
            reports,
            scheduler,
            jobs,
            clock,
            started: Instant::now(),
        });
        Ok(Self {
            listener,
            state,
            root_join,
            extra_routes: None,
            serve_lock,
        })
    }

    /// Mounts more routes behind the same edge (request ids, errors, timeouts, panics).
    pub fn with_routes(mut self, routes: axum::Router<AppState>) -> Self {
        self.extra_routes = Some(routes);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes or the root supervisor escalates. In-flight
    /// requests finish first; then the supervision tree stops, newest child first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Stopped> {
        let Self {
            listener,
            state,
            root_join,
            extra_routes,
            serve_lock,
        } = self;
        let root = state.root.clone();
        let store = state.store.clone();
        let shutdown_timeout = state.config.server.shutdown_timeout;
        let app = crate::http::router(state, extra_routes);

        let (escalated_tx, escalated_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let _ = root_join.await;
            let _ = escalated_tx.send(());
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<Stopped>);
        let stop_tx = Arc::new(stop_tx);
        let signal_tx = stop_tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => { let _ = signal_tx.send(Some(Stopped::Graceful)); }
                Ok(()) = escalated_rx => { let _ = signal_tx.send(Some(Stopped::Escalated)); }
            }
        });

        crate::metrics::started_serving();
        let mut wait_rx = stop_rx.clone();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = wait_rx.wait_for(Option::is_some).await;
        })
        .await
        .context("serving HTTP")?;

        let stopped = (*stop_rx.borrow()).unwrap_or(Stopped::Graceful);
        watcher.abort();
        if stopped == Stopped::Escalated {
            tracing::error!("the root supervisor exceeded its restart intensity; exiting");
        } else {
            tracing::info!("stopping actors");
            root.shutdown(shutdown_timeout).await;
        }
        store.close().await;
        drop(serve_lock);
        Ok(stopped)
    }
}

/// The shared rate-limit windows, when `REDIS_URL` is set.
fn shared_windows(config: &Config) -> anyhow::Result<Option<SharedConfig>> {
    let Some(url) = &config.storage.redis_url else {
        return Ok(None);
    };
    let limits = &config.rate_limit;
    let backend = RedisWindows::new(url.expose(), &limits.redis_key_prefix, limits.redis_timeout)
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    Ok(Some(SharedConfig {
        backend: Arc::new(backend),
        timeout: limits.redis_timeout,
        // Resets and counts walk every window: seconds, not a check's milliseconds.
        bulk_timeout: Duration::from_secs(5),
        breaker: BreakerPolicy::default(),
    }))
}

/// The email throttle actor over the database, with the limits from configuration.
fn throttle_actor(
    config: &Config,
    store: &Store,
    writes: &GroupCommit,
    clock: &SharedClock,
) -> EmailThrottle<StoreThrottlePort> {
    let delivery = &config.email.delivery;
    EmailThrottle {
        port: Arc::new(StoreThrottlePort {
            store: store.clone(),
            writes: writes.clone(),
        }),
        clock: clock.clone(),
        session_reports: delivery.session_reports,
        weekly_digest: delivery.weekly_digest,
    }
}

/// What the job bodies need; `owner` prefixes the name this process has in the job ledger.
fn job_context(
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
            session_events_days: config.jobs.retention.session_events_days,
            audit_log_days: config.jobs.retention.audit_log_days,
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

/// The digest job of recipients in `zone`: `DIGEST_SCHEDULE` read in that zone, under the
/// same missed-run policy.
pub fn zone_digest_job(config: &crate::config::JobsConfig, zone: chrono_tz::Tz) -> JobSpec {
    JobSpec {
        name: crate::jobs::digest_job(zone, config.timezone),
        schedule: config.digest.in_zone(zone),
        missed: config.missed,
    }
}

/// With local delivery, keeps a digest job scheduled for every zone a recipient has chosen.
/// At start it reads every zone in use; then, every minute, only the zones chosen since
/// (a zone chosen on another replica is picked up within that time; one chosen here is
/// scheduled at once by the route), and adds every known zone's job again (a restarted
/// scheduler knows only its first jobs). Each job exists from when its zone was first
/// chosen, so an occurrence missed while herald was down is caught up like any other job's.
fn spawn_zone_jobs(store: Store, scheduler: SchedulerClient, config: crate::config::JobsConfig) {
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
                scheduler.add(zone_digest_job(&config, *zone), *since);
            }
        }
    });
}

/// The jobs registered in code, with their schedules from configuration.
pub fn job_specs(config: &Config) -> Vec<JobSpec> {
    let jobs = &config.jobs;
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

/// Every few seconds: publishes the number of tracked rate-limit clients and folds
/// histogram samples into buckets (bounded memory when nothing scrapes `/metrics`).
fn spawn_metrics_upkeep(metrics: &'static crate::metrics::Metrics, limiter: LimiterClient) {
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
async fn declare_known_series(root: &SupervisorRef, store: &Store) {
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
fn spawn_refusal_summary(refusals: Arc<RefusalLog>, clock: SharedClock) {
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
fn spawn_policy_refresh(store: Store, policies: Arc<Policies>, every: Duration) {
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

/// The root of the supervision tree: one_for_one, and an escalation ends the process.
async fn spawn_root(children: Vec<ChildSpec>) -> anyhow::Result<(SupervisorRef, JoinHandle<()>)> {
    let spec = SupervisorSpec::one_for_one(children)
        .intensity(Intensity::default())
        .observer(Arc::new(SupervisionReporter));
    Supervisor::spawn("root", spec, None)
        .await
        .context("starting the supervision tree")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// What the CLI needs to run jobs without serving: the store, the throttle actors the
/// digest sends through, and the job bodies. The running service's dispatcher sends what
/// these queue.
pub async fn offline_jobs(config: &Config) -> anyhow::Result<(JobContext, SupervisorRef)> {
    let store = Store::connect(config.storage.database_url.expose())
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
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
    let context = job_context(config, &store, &throttle, &clock, "cli-");
    Ok((context, root))
}
