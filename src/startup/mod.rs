//! Assembles the application: store, migrations, supervision tree, router, listener.
//! [`Application::build`] does everything that can fail before serving, so a test (or
//! `main`) learns of a problem before any traffic; [`Application::run_until_stopped`]
//! serves until the shutdown signal, then stops the actors in reverse start order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use herald_actors::clock::{SharedClock, SystemClock};
use herald_actors::dispatcher::{Dispatcher, DispatcherClient, DispatcherConfig, RetryPolicy};
use herald_actors::limiter::{AtCapacity, BreakerPolicy, LimiterConfig, SharedConfig};
use herald_actors::scheduler::{Scheduler, SchedulerClient, SchedulerConfig};
use herald_actors::throttle::{EmailThrottle, email_throttle};
use herald_supervision::{ChildSpec, Intensity, Supervisor, SupervisorRef, SupervisorSpec};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::config::{Config, FailMode};
use crate::email::ports::{MetricsObserver, OutboxPort, Reports, StoreThrottlePort};
use crate::email::{Mailer, Signer};
use crate::http::AppState;
use crate::http::state::Shared;
use crate::jobs::JobsPort;
use crate::keys::KeyRing;
use crate::ratelimit::redis::RedisWindows;
use crate::ratelimit::{Policies, RefusalLog};
use crate::store::group_commit::GroupCommit;
use crate::store::serve_lock::ServeLock;
use crate::store::{Backend, Store};
use crate::telemetry::SupervisionReporter;

mod jobs;
mod upkeep;

pub use jobs::offline_jobs;
use jobs::{job_context, spawn_zone_jobs};
use upkeep::{
    declare_known_series, spawn_metrics_upkeep, spawn_policy_refresh, spawn_refusal_summary,
};

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

/// A socket bound to `addr` (address reuse as `TcpListener::bind` sets it), not listening.
fn bind(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds with the given clock (a manual one in tests of time-based rules).
    pub async fn build_with_clock(mut config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let metrics = crate::metrics::install();
        crate::metrics::rate_limit_groups(crate::ratelimit::GROUPS.iter().map(|g| g.as_str()));
        let serve_lock = config
            .storage
            .sqlite_file()
            .map(|file| ServeLock::acquire(&file))
            .transpose()?;
        // The port is taken (and known, with PORT=0) from the start; connections are
        // refused until everything is ready to answer them.
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let socket = bind(addr).with_context(|| format!("binding {addr}"))?;
        config.email.listening_on(socket.local_addr()?.port());
        let store = Store::connect_with(
            config.storage.database_url.expose(),
            config.storage.max_connections,
        )
        .await
        .context("connecting to the database")?;
        store.migrate().await.context("applying migrations")?;
        if let Ok(newer) = store.newer_migrations().await
            && !newer.is_empty()
        {
            let versions: Vec<String> = newer.iter().map(|(v, _)| v.to_string()).collect();
            tracing::warn!(
                versions = %versions.join(", "),
                "a newer herald has migrated this database; this one serves it as the version \
                 before (expected during a rolling update or a rollback)"
            );
        }
        // What an earlier run left mid-send on SQLite goes out again as the dispatcher
        // starts (see `DispatchPort::recover`).

        let stored = crate::store::policies::load(&store)
            .await
            .context("loading rate-limit policies")?;
        let policies = Arc::new(Policies::new(
            config.rate_limit.default_policy,
            config.rate_limit.sessions_policy,
            &stored,
        ));
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
            reply_to: config.email.reply_to.clone(),
            feedback_id: config.email.feedback_id.clone(),
            api_base_url: config.email.api_base_url.clone(),
            instance: config.server.instance.clone(),
            templates: config.email.templates.clone(),
            clock: clock.clone(),
            digest_zones: (&config.jobs).into(),
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

        let jobs = job_context(
            &config,
            &store,
            &throttle,
            &clock,
            &format!("{}/", config.server.instance),
        );
        let scheduler_spec = ChildSpec::actor(
            "scheduler",
            Scheduler {
                port: Arc::new(JobsPort {
                    context: jobs.clone(),
                }),
                clock: clock.clone(),
                jobs: crate::jobs::job_specs(&config.jobs),
                config: SchedulerConfig {
                    lease: config.jobs.lease,
                    catch_up_horizon: config.jobs.catch_up_horizon,
                    retry_every: config.jobs.retry_every,
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

        let replica = crate::replicas::Me {
            instance: config.server.instance.clone(),
            settings: config.shared.clone(),
            started_at_ms: i64::try_from(clock.now_ms()).unwrap_or(i64::MAX),
        };
        replica
            .clone()
            .start_renewal(store.clone(), clock.clone())
            .await;

        let listener = socket
            .listen(1024)
            .with_context(|| format!("listening on {addr}"))?;
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
            replica: Arc::new(replica),
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
        let limits = crate::http::serve::Limits {
            idle: state.config.server.idle_timeout,
            connections: state.config.server.max_connections,
            drain: state.config.server.request_timeout,
        };
        let (replica, clock) = (state.replica.clone(), state.clock.clone());
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
        crate::http::serve::serve(listener, app, limits, async move {
            let _ = wait_rx.wait_for(Option::is_some).await;
        })
        .await;

        let stopped = (*stop_rx.borrow()).unwrap_or(Stopped::Graceful);
        watcher.abort();
        if stopped == Stopped::Escalated {
            tracing::error!("the root supervisor exceeded its restart intensity; exiting");
        } else {
            tracing::info!("stopping actors");
            root.shutdown(shutdown_timeout).await;
        }
        let now = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        replica.withdraw(&store, now).await;
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
