//! The scheduler actor: sleeps until each job's next occurrence (a timer, not a polling
//! loop), starts it through the occurrence ledger so it runs once across processes, runs
//! it in its own task with a lease heartbeat, and records the outcome ([`super::run`], the
//! same path the CLI takes). A job that fails or panics is recorded as failed and the
//! schedule goes on.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::calendar::{MissedPolicy, Schedule, catch_up};
use super::port::{Claim, RunOutcome, SchedulerPort};
use crate::clock::{SharedClock, millis};
use crate::port::PortError;

/// A job registered in code.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule: Schedule,
    pub missed: MissedPolicy,
}

/// What `/admin/jobs` shows of a job.
#[derive(Debug, Clone)]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub next_run_ms: Option<i64>,
    /// The run in progress in this process, if any.
    pub running: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("no job named {0}")]
    UnknownJob(String),
    #[error("{0} is already running")]
    AlreadyRunning(String),
    #[error("that occurrence already ran")]
    AlreadyRan,
    #[error("{0}")]
    Port(String),
}

pub enum SchedulerMsg {
    /// The timer of `job` went off for the occurrence `scheduled_for`.
    Fire {
        job: usize,
        scheduled_for: i64,
    },
    /// Re-evaluates due occurrences now (after the clock jumped, in tests and drills).
    Wake,
    /// Another process runs `(job, scheduled_for)`: look again once its lease could have
    /// run out, and take the run over if it did (that process died).
    Recheck {
        job: usize,
        scheduled_for: i64,
    },
    /// Runs a job now, as an occurrence of its own (at `scheduled_for`, or now); replies
    /// with the run id.
    RunNow(String, Option<i64>, RpcReplyPort<Result<String, RunError>>),
    /// A run of `job` ended; `failed` names its occurrence when it failed.
    Finished {
        job: usize,
        failed: Option<i64>,
    },
    /// Runs again the occurrence `scheduled_for` of `job`, whose run failed.
    Rerun {
        job: usize,
        scheduled_for: i64,
    },
    /// The ledger could not be reached for `job`: try its occurrence `scheduled_for` again
    /// (`None`: catch the job up, as on a Wake).
    Retry {
        job: usize,
        scheduled_for: Option<i64>,
    },
    List(RpcReplyPort<Vec<JobStatus>>),
    /// Schedules one more job (a job of that name already scheduled stays as it is): jobs
    /// that exist only once something asks for them, such as a digest per zone. With the
    /// instant the job came to exist, an occurrence missed since then is caught up (a zone
    /// first chosen before a downtime); without, it exists from now.
    Add(Box<JobSpec>, Option<i64>),
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a run is vouched for without a renewal.
    pub lease: Duration,
    /// Missed occurrences older than this are not caught up.
    pub catch_up_horizon: Duration,
    /// How soon an occurrence the ledger could not start (the database away) is tried
    /// again; it is tried until it starts or is older than the catch-up horizon. A run that
    /// failed is run again after this, then twice as long, … [`MAX_RERUNS`] times.
    pub retry_every: Duration,
}

/// How many times a failed run of an occurrence is run again (after 10 s, 20 s, 40 s, 80 s
/// and 160 s with the default `retry_every`: through a database restart, say).
pub const MAX_RERUNS: u32 = 5;

pub struct Scheduler<P> {
    pub port: Arc<P>,
    pub clock: SharedClock,
    pub jobs: Vec<JobSpec>,
    pub config: SchedulerConfig,
}

impl<P> Clone for Scheduler<P> {
    fn clone(&self) -> Self {
        Self {
            port: self.port.clone(),
            clock: self.clock.clone(),
            jobs: self.jobs.clone(),
            config: self.config.clone(),
        }
    }
}

struct JobState {
    spec: JobSpec,
    next: Option<i64>,
    timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<SchedulerMsg>>>>,
    running: Option<String>,
    /// The latest occurrence this process started or saw in the ledger.
    last_scheduled: Option<i64>,
    /// The latest occurrence at or before the job came into this process: with nothing in
    /// the ledger, what catching up starts from (a fresh install waits for its first
    /// occurrence; one after it that a late timer missed is caught up on the next Wake).
    since: Option<i64>,
    /// The latest failed occurrence run again, and how many times.
    reruns: Option<(i64, u32)>,
}

pub struct SchedulerState {
    jobs: Vec<JobState>,
}

impl<P: SchedulerPort> Scheduler<P> {
    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Whether the occurrence is older than the catch-up horizon: no longer started late.
    fn past_horizon(&self, scheduled_for: i64) -> bool {
        self.now() - scheduled_for > millis(self.config.catch_up_horizon)
    }

    /// Arms the timer for the job's next occurrence after `after`.
    fn arm(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        after: i64,
    ) {
        let entry = &mut state.jobs[job];
        if let Some(timer) = entry.timer.take() {
            timer.abort();
        }
        entry.next = entry.spec.schedule.next_after(after);
        if let Some(next) = entry.next {
            let delay = Duration::from_millis(u64::try_from(next - self.now()).unwrap_or(0));
            entry.timer = Some(myself.send_after(delay, move || SchedulerMsg::Fire {
                job,
                scheduled_for: next,
            }));
        }
    }

    /// Claims the occurrence in the ledger and runs it in its own task.
    async fn start(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        scheduled_for: i64,
        claim: Claim,
    ) -> Result<String, RunError> {
        let name = state.jobs[job].spec.name.clone();
        if state.jobs[job].running.is_some() {
            return Err(RunError::AlreadyRunning(name));
        }
        let run_id = self
            .port
            .try_start(
                &name,
                scheduled_for,
                self.now(),
                millis(self.config.lease),
                claim,
            )
            .await
            .map_err(|e: PortError| RunError::Port(e.message))?
            .ok_or(RunError::AlreadyRan)?;
        let entry = &mut state.jobs[job];
        entry.running = Some(run_id.clone());
        entry.last_scheduled = Some(
            entry
                .last_scheduled
                .map_or(scheduled_for, |l| l.max(scheduled_for)),
        );
        tracing::info!(job = %name, run_id = %run_id, scheduled_for, "job started");

        let (port, clock, lease_ms, myself, id) = (
            self.port.clone(),
            self.clock.clone(),
            millis(self.config.lease),
            myself.clone(),
            run_id.clone(),
        );
        tokio::spawn(async move {
            let outcome =
                super::run::run_started(port, clock, lease_ms, name, id, scheduled_for).await;
            let failed = matches!(outcome, RunOutcome::Failed(_)).then_some(scheduled_for);
            let _ = myself.send_message(SchedulerMsg::Finished { job, failed });
        });
        Ok(run_id)
    }

    /// Runs the failed occurrence again after `retry_every`, doubling, [`MAX_RERUNS`] times
    /// at most.
    fn rerun_later(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        scheduled_for: i64,
    ) {
        let entry = &mut state.jobs[job];
        let done = match entry.reruns {
            Some((at, done)) if at == scheduled_for => done,
            _ => 0,
        };
        if done >= MAX_RERUNS {
            tracing::error!(job = %entry.spec.name, scheduled_for, reruns = done,
                "the run failed again; left for an operator to run");
            return;
        }
        entry.reruns = Some((scheduled_for, done + 1));
        let after = self.config.retry_every.saturating_mul(1 << done);
        tracing::warn!(job = %entry.spec.name, scheduled_for, after_seconds = after.as_secs(),
            "the run failed; running it again");
        drop(myself.send_after(after, move || SchedulerMsg::Rerun { job, scheduled_for }));
    }

    /// Looks at `(job, scheduled_for)` again just after a lease could have run out.
    fn recheck_later(&self, myself: &ActorRef<SchedulerMsg>, job: usize, scheduled_for: i64) {
        let after = self.config.lease + Duration::from_millis(500);
        // The timer's handle is not kept: a Recheck that finds nothing to do ends the watch.
        drop(myself.send_after(after, move || SchedulerMsg::Recheck { job, scheduled_for }));
    }

    /// Tries `(job, scheduled_for)` again after `retry_every`; `None`: catches the job up.
    fn retry_later(&self, myself: &ActorRef<SchedulerMsg>, job: usize, scheduled_for: Option<i64>) {
        let after = self.config.retry_every;
        drop(myself.send_after(after, move || SchedulerMsg::Retry { job, scheduled_for }));
    }

    /// Starts a due occurrence; one the ledger could not start is tried again until it
    /// starts or passes the catch-up horizon.
    async fn start_due(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        scheduled_for: i64,
    ) {
        let name = state.jobs[job].spec.name.clone();
        match self
            .start(myself, state, job, scheduled_for, Claim::Start)
            .await
        {
            Ok(_) => {}
            // Run elsewhere (or already done): watch it in case its process dies.
            Err(RunError::AlreadyRan) => self.recheck_later(myself, job, scheduled_for),
            Err(RunError::AlreadyRunning(_)) => tracing::info!(
                job = %name, scheduled_for,
                "due while its previous run goes on: caught up when that run ends"
            ),
            Err(err) => {
                if self.past_horizon(scheduled_for) {
                    tracing::error!(job = %name, error = %err, scheduled_for,
                        "occurrence not started, and now past the catch-up horizon: skipped");
                } else {
                    tracing::warn!(job = %name, error = %err, scheduled_for,
                        "occurrence not started; trying again");
                    self.retry_later(myself, job, Some(scheduled_for));
                }
            }
        }
    }

    /// Runs the latest due occurrence of each job that has not run (at start, and on Wake).
    async fn catch_up_all(&self, myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
        for job in 0..state.jobs.len() {
            self.catch_up(myself, state, job).await;
        }
    }

    /// Runs the latest due occurrence of `job` if it has not run, under its missed-run
    /// policy, and arms its timer.
    async fn catch_up(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
    ) {
        let now = self.now();
        {
            let spec = state.jobs[job].spec.clone();
            let last = match self.port.last_scheduled(&spec.name).await {
                Ok(last) => last
                    .or(state.jobs[job].since)
                    .max(state.jobs[job].last_scheduled),
                Err(err) => {
                    tracing::error!(job = %spec.name, error = %err, "cannot read the job ledger; trying again");
                    self.retry_later(myself, job, None);
                    self.arm(myself, state, job, now);
                    return;
                }
            };
            state.jobs[job].last_scheduled = last;
            if let Some(occurrence) = catch_up(
                &spec.schedule,
                now,
                last,
                spec.missed,
                millis(self.config.catch_up_horizon),
            ) {
                self.start_due(myself, state, job, occurrence).await;
            }
            self.arm(myself, state, job, now);
        }
    }
}

impl<P: SchedulerPort> Actor for Scheduler<P> {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SchedulerMsg>,
        _: (),
    ) -> Result<SchedulerState, ActorProcessingErr> {
        let _ = myself.send_message(SchedulerMsg::Wake);
        let now = self.now();
        Ok(SchedulerState {
            jobs: self
                .jobs
                .iter()
                .cloned()
                .map(|spec| JobState {
                    last_scheduled: None,
                    reruns: None,
                    since: spec.schedule.latest_at_or_before(now),
                    spec,
                    next: None,
                    timer: None,
                    running: None,
                })
                .collect(),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        for job in &mut state.jobs {
            if let Some(timer) = job.timer.take() {
                timer.abort();
            }
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(actor = "scheduler"))]
    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        crate::fault::inject("scheduler");
        match message {
            SchedulerMsg::Fire { job, scheduled_for } => {
                if self.now() < scheduled_for {
                    // Woken early (timers are coarse): sleep again until it is due.
                    self.arm(&myself, state, job, scheduled_for - 1);
                    return Ok(());
                }
                self.start_due(&myself, state, job, scheduled_for).await;
                self.arm(&myself, state, job, scheduled_for);
            }
            SchedulerMsg::Retry {
                job,
                scheduled_for: Some(scheduled_for),
            } => self.start_due(&myself, state, job, scheduled_for).await,
            SchedulerMsg::Retry {
                job,
                scheduled_for: None,
            } => self.catch_up(&myself, state, job).await,
            SchedulerMsg::Rerun { job, scheduled_for } => {
                match self
                    .start(&myself, state, job, scheduled_for, Claim::Rerun)
                    .await
                {
                    // Run since (by hand, or by another replica), or not failed any more.
                    Ok(_) | Err(RunError::AlreadyRan) | Err(RunError::UnknownJob(_)) => {}
                    Err(err) if self.past_horizon(scheduled_for) => {
                        tracing::error!(job = %state.jobs[job].spec.name, error = %err, scheduled_for,
                            "a failed run could not run again before the catch-up horizon");
                    }
                    // Busy with another occurrence, or the database away: a little later.
                    Err(err) => {
                        tracing::warn!(job = %state.jobs[job].spec.name, error = %err, "a failed run could not run again yet");
                        let after = self.config.retry_every;
                        drop(
                            myself.send_after(after, move || SchedulerMsg::Rerun {
                                job,
                                scheduled_for,
                            }),
                        );
                    }
                }
            }
            SchedulerMsg::Recheck { job, scheduled_for } => {
                let name = state.jobs[job].spec.name.clone();
                match self
                    .start(&myself, state, job, scheduled_for, Claim::Start)
                    .await
                {
                    Ok(run_id) => tracing::warn!(
                        job = %name, run_id = %run_id, scheduled_for,
                        "took over a run whose process stopped renewing its lease"
                    ),
                    Err(RunError::AlreadyRan) => {
                        match self.port.is_running(&name, scheduled_for).await {
                            Ok(true) => self.recheck_later(&myself, job, scheduled_for),
                            Ok(false) => {}
                            Err(err) => {
                                tracing::warn!(job = %name, error = %err, "cannot read the job ledger");
                                self.recheck_later(&myself, job, scheduled_for);
                            }
                        }
                    }
                    // This process runs it now.
                    Err(RunError::AlreadyRunning(_)) => {}
                    Err(err) => {
                        tracing::warn!(job = %name, error = %err, "could not re-check a run");
                        self.recheck_later(&myself, job, scheduled_for);
                    }
                }
            }
            SchedulerMsg::Wake => self.catch_up_all(&myself, state).await,
            SchedulerMsg::RunNow(name, scheduled_for, reply) => {
                let result = match state.jobs.iter().position(|j| j.spec.name == name) {
                    None => Err(RunError::UnknownJob(name)),
                    Some(job) => {
                        let at = scheduled_for.unwrap_or_else(|| self.now());
                        self.start(&myself, state, job, at, Claim::Start).await
                    }
                };
                let _ = reply.send(result);
            }
            SchedulerMsg::Finished { job, failed } => {
                state.jobs[job].running = None;
                if let Some(scheduled_for) = failed {
                    self.rerun_later(&myself, state, job, scheduled_for);
                }
                // An occurrence that came due while this run went on was not started (a job
                // runs once at a time): it runs now, under the missed-run policy.
                self.catch_up(&myself, state, job).await;
            }
            SchedulerMsg::List(reply) => {
                let list = state
                    .jobs
                    .iter()
                    .map(|job| JobStatus {
                        name: job.spec.name.clone(),
                        schedule: job.spec.schedule.expression().to_owned(),
                        timezone: job.spec.schedule.timezone().to_owned(),
                        next_run_ms: job.next,
                        running: job.running.clone(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            SchedulerMsg::Add(spec, existed_since) => {
                let spec = *spec;
                if !state.jobs.iter().any(|j| j.spec.name == spec.name) {
                    tracing::info!(job = %spec.name, timezone = %spec.schedule.timezone(), "job scheduled");
                    // Occurrences before it existed are not its to catch up.
                    let since = match existed_since {
                        Some(at) => Some(at.min(self.now())),
                        None => spec.schedule.latest_at_or_before(self.now()),
                    };
                    state.jobs.push(JobState {
                        spec,
                        next: None,
                        timer: None,
                        running: None,
                        last_scheduled: None,
                        reruns: None,
                        since,
                    });
                    let job = state.jobs.len() - 1;
                    self.catch_up(&myself, state, job).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::clock::ManualClock;
    use crate::scheduler::port::RunOutcome;

    const HOUR: i64 = 3_600_000;

    /// A ledger in memory whose job bodies wait for a permit, so a run lasts as long as the
    /// test wants, and which can be made unreachable.
    struct Ledger {
        started: Mutex<Vec<i64>>,
        finished: Mutex<u32>,
        permits: Semaphore,
        down: AtomicBool,
        tries: AtomicU32,
        /// Runs that fail before one succeeds.
        failures: Mutex<u32>,
        /// The occurrences whose last run failed.
        failed: Mutex<Vec<i64>>,
    }

    impl Default for Ledger {
        fn default() -> Self {
            Self {
                started: Mutex::default(),
                finished: Mutex::default(),
                permits: Semaphore::new(0),
                down: AtomicBool::default(),
                tries: AtomicU32::default(),
                failures: Mutex::default(),
                failed: Mutex::default(),
            }
        }
    }

    impl Ledger {
        fn reachable(&self) -> Result<(), PortError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(PortError::new("connection refused"));
            }
            Ok(())
        }

        fn started(&self) -> Vec<i64> {
            self.started.lock().unwrap().clone()
        }
    }

    impl SchedulerPort for Ledger {
        async fn try_start(
            &self,
            _: &str,
            scheduled_for: i64,
            _: i64,
            _: i64,
            claim: Claim,
        ) -> Result<Option<String>, PortError> {
            self.tries.fetch_add(1, Ordering::SeqCst);
            self.reachable()?;
            let mut started = self.started.lock().unwrap();
            let mut failed = self.failed.lock().unwrap();
            let may = match claim {
                Claim::Start => !started.contains(&scheduled_for),
                Claim::Rerun => failed.contains(&scheduled_for),
            };
            if !may {
                return Ok(None);
            }
            failed.retain(|&f| f != scheduled_for);
            started.push(scheduled_for);
            Ok(Some(format!("run-{scheduled_for}")))
        }
        async fn renew(&self, _: &str, _: i64) -> Result<(), PortError> {
            Ok(())
        }
        async fn finish(&self, _: &str, _: &str, _: &RunOutcome, _: i64) -> Result<(), PortError> {
            *self.finished.lock().unwrap() += 1;
            Ok(())
        }
        async fn last_scheduled(&self, _: &str) -> Result<Option<i64>, PortError> {
            self.reachable()?;
            Ok(self.started().into_iter().max())
        }
        async fn is_running(&self, _: &str, _: i64) -> Result<bool, PortError> {
            Ok(false)
        }
        async fn run(&self, _: &str, scheduled_for: i64) -> Result<String, String> {
            self.permits.acquire().await.unwrap().forget();
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                self.failed.lock().unwrap().push(scheduled_for);
                return Err("the database went away".to_owned());
            }
            Ok("{}".to_owned())
        }
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// An hourly job's scheduler, started at 09:30 on some day; returns 10:00 of that day.
    async fn hourly(
        ledger: &Arc<Ledger>,
        clock: &Arc<ManualClock>,
    ) -> (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>, i64) {
        let ten = 1_800_000_000_000 / HOUR * HOUR + HOUR;
        clock.set_ms((ten - HOUR / 2) as u64);
        let scheduler = Scheduler {
            port: ledger.clone(),
            clock: clock.clone(),
            jobs: vec![JobSpec {
                name: "hourly".to_owned(),
                schedule: Schedule::parse("0 * * * *", "UTC").unwrap(),
                missed: MissedPolicy::CatchUp,
            }],
            config: SchedulerConfig {
                lease: Duration::from_secs(60),
                catch_up_horizon: Duration::from_secs(86_400),
                retry_every: Duration::from_millis(20),
            },
        };
        let (actor, handle) = Actor::spawn(None, scheduler, ()).await.unwrap();
        (actor, handle, ten)
    }

    /// The timer of the occurrence `at` goes off, the clock a second past it.
    fn fire(actor: &ActorRef<SchedulerMsg>, clock: &ManualClock, at: i64) {
        clock.set_ms(at as u64 + 1_000);
        actor
            .send_message(SchedulerMsg::Fire {
                job: 0,
                scheduled_for: at,
            })
            .unwrap();
    }

    #[tokio::test]
    async fn an_occurrence_due_while_the_previous_run_goes_on_runs_when_it_ends() {
        let (ledger, clock) = (Arc::new(Ledger::default()), Arc::new(ManualClock::new(0)));
        let (actor, handle, ten) = hourly(&ledger, &clock).await;
        fire(&actor, &clock, ten);
        until("the 10:00 run", || ledger.started().len() == 1).await;
        // Its run goes on past 11:00, when the next occurrence comes due.
        fire(&actor, &clock, ten + HOUR);
        let listed = ractor::call_t!(actor, SchedulerMsg::List, 1_000).unwrap();
        assert!(listed[0].running.is_some());
        assert_eq!(ledger.started(), [ten]);
        // The 10:00 run ends: the 11:00 one starts.
        ledger.permits.add_permits(1);
        until("the 11:00 run", || ledger.started().len() == 2).await;
        assert_eq!(ledger.started(), [ten, ten + HOUR]);
        ledger.permits.add_permits(1);
        until("both runs recorded", || {
            *ledger.finished.lock().unwrap() == 2
        })
        .await;
        actor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn an_occurrence_due_while_the_database_is_away_runs_once_it_is_back() {
        let (ledger, clock) = (Arc::new(Ledger::default()), Arc::new(ManualClock::new(0)));
        let (actor, handle, ten) = hourly(&ledger, &clock).await;
        ledger.down.store(true, Ordering::SeqCst);
        fire(&actor, &clock, ten);
        // Tried, and tried again while the database stays away.
        until("three tries", || ledger.tries.load(Ordering::SeqCst) >= 3).await;
        assert!(ledger.started().is_empty());
        ledger.down.store(false, Ordering::SeqCst);
        until("the 10:00 run", || ledger.started() == [ten]).await;
        ledger.permits.add_permits(1);
        until("its run recorded", || *ledger.finished.lock().unwrap() == 1).await;
        actor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_run_is_run_again_until_it_succeeds_five_times_at_most() {
        let (ledger, clock) = (Arc::new(Ledger::default()), Arc::new(ManualClock::new(0)));
        ledger.permits.add_permits(1_000);
        let (actor, handle, ten) = hourly(&ledger, &clock).await;
        // Three failures, then a success: four runs of 10:00, and no more.
        *ledger.failures.lock().unwrap() = 3;
        fire(&actor, &clock, ten);
        until("the run that succeeds", || {
            *ledger.finished.lock().unwrap() == 4
        })
        .await;
        assert_eq!(ledger.started(), [ten; 4]);
        // Failing every time: 11:00 runs once and again five times (20 ms, 40 ms, … apart
        // here), then is left for an operator.
        *ledger.failures.lock().unwrap() = 100;
        fire(&actor, &clock, ten + HOUR);
        until("the last rerun", || *ledger.finished.lock().unwrap() == 10).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(ledger.started()[4..], [ten + HOUR; 6]);
        assert_eq!(*ledger.finished.lock().unwrap(), 10);
        actor.stop(None);
        handle.await.unwrap();
    }
}
