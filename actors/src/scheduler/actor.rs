//! The scheduler actor: sleeps until each job's next occurrence (a timer, not a polling
//! loop), starts it through the occurrence ledger so it runs once across processes, runs
//! it in its own task with a lease heartbeat, and records the outcome ([`super::run`], the
//! same path the CLI takes). A job that fails or panics is recorded as failed and the
//! schedule goes on.
//!
//! An occurrence this process did not finish well is watched through the ledger
//! ([`SchedulerMsg::Look`]): one running elsewhere is looked at again when its lease runs
//! out (and taken over if its process stopped renewing it); one whose run failed is run
//! again when its turn comes, by whichever replica claims it first. The ledger counts the
//! runs, so a replica that stops does not take the reruns with it: any replica that watches
//! the occurrence, or starts later and finds it the job's latest, runs it again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::calendar::{MissedPolicy, Schedule, catch_up, caught_up_to};
use super::port::{Claim, RunOutcome, SchedulerPort};
use super::watch::{LEASE_GRACE_MS, Rules, Step};
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
    /// Looks at `(job, scheduled_for)` in the ledger, as armed for `at`: takes over a run
    /// whose process stopped renewing its lease, runs a failed run again once its turn has
    /// come, and looks again later while it runs elsewhere or waits for its turn.
    Look {
        job: usize,
        scheduled_for: i64,
        at: i64,
    },
    /// Runs a job now, as an occurrence of its own (at `scheduled_for`, or now); replies
    /// with the run id.
    RunNow(String, Option<i64>, RpcReplyPort<Result<String, RunError>>),
    /// A run of `job` ended; `failed` names its occurrence when it failed.
    Finished {
        job: usize,
        failed: Option<i64>,
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
    /// failed is run again after this, then twice as long, …
    /// [`MAX_RERUNS`](super::watch::MAX_RERUNS) times.
    pub retry_every: Duration,
}

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
    /// the ledger, or only runs that started after it, what catching up starts from (a
    /// fresh install waits for its first occurrence, also once an old week was run by hand;
    /// one after it that a late timer missed is caught up on the next Wake).
    since: Option<i64>,
    /// The occurrences watched through the ledger, and when each is looked at next.
    watching: HashMap<i64, i64>,
    /// Watched runs whose lease was seen run out, with that lease: taken over when the next
    /// look finds it the same (not renewed meanwhile), not on one look, so a clock that
    /// jumped ahead of a live run's renewals does not cost it its run.
    lapsed: HashMap<i64, i64>,
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

    fn watch_rules(&self) -> Rules {
        Rules {
            lease_ms: millis(self.config.lease),
            retry_every_ms: millis(self.config.retry_every),
        }
    }

    /// Looks at `(job, scheduled_for)` in the ledger at `at` (at once if it is past). An
    /// occurrence already watched keeps its look, unless this one comes sooner.
    fn look_at(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        scheduled_for: i64,
        at: i64,
    ) {
        let watching = &mut state.jobs[job].watching;
        if watching
            .get(&scheduled_for)
            .is_some_and(|&armed| armed <= at)
        {
            return;
        }
        watching.insert(scheduled_for, at);
        let delay = Duration::from_millis(u64::try_from(at - self.now()).unwrap_or(0));
        // The timer's handle is not kept: a look armed for another time is let go.
        drop(myself.send_after(delay, move || SchedulerMsg::Look {
            job,
            scheduled_for,
            at,
        }));
    }

    /// The look at `(job, scheduled_for)` armed for `at` ([`SchedulerMsg::Look`]).
    async fn look(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        scheduled_for: i64,
        at: i64,
    ) {
        let watching = &mut state.jobs[job].watching;
        if watching.get(&scheduled_for) != Some(&at) {
            return; // Superseded by a sooner look.
        }
        watching.remove(&scheduled_for);
        let name = state.jobs[job].spec.name.clone();
        let now = self.now();
        let later = now + millis(self.config.retry_every);
        let occurrence = match self.port.occurrence(&name, scheduled_for).await {
            Ok(occurrence) => occurrence,
            Err(err) if self.past_horizon(scheduled_for) => {
                tracing::error!(job = %name, error = %err, scheduled_for,
                    "cannot read the job ledger, and the occurrence is past the catch-up horizon: no longer watched");
                return;
            }
            Err(err) => {
                tracing::warn!(job = %name, error = %err, scheduled_for, "cannot read the job ledger; looking again");
                return self.look_at(myself, state, job, scheduled_for, later);
            }
        };
        let lapsed = state.jobs[job].lapsed.remove(&scheduled_for);
        let claim = match self.watch_rules().step(occurrence, lapsed, now) {
            Step::Done => return,
            Step::LookAt(at) => return self.look_at(myself, state, job, scheduled_for, at),
            Step::Lapsed {
                lease_until_ms,
                look_at,
            } => {
                state.jobs[job].lapsed.insert(scheduled_for, lease_until_ms);
                return self.look_at(myself, state, job, scheduled_for, look_at);
            }
            Step::GiveUp { attempts } => {
                tracing::error!(job = %name, scheduled_for, attempts,
                    "the run failed again; left for an operator to run");
                return;
            }
            Step::Claim(claim) => claim,
        };
        match self.start(myself, state, job, scheduled_for, claim).await {
            Ok(run_id) if claim == Claim::Start => tracing::warn!(
                job = %name, run_id = %run_id, scheduled_for,
                "took over a run whose process stopped renewing its lease"
            ),
            Ok(run_id) => tracing::warn!(job = %name, run_id = %run_id, scheduled_for,
                "running a failed run again"),
            // Claimed elsewhere first: what that run does is watched from here.
            Err(RunError::AlreadyRan) => {
                self.look_at(myself, state, job, scheduled_for, now + LEASE_GRACE_MS);
            }
            // Busy with another occurrence of the job, or the database away: a little later.
            Err(err) => {
                tracing::warn!(job = %name, error = %err, scheduled_for, "could not run it yet; looking again");
                self.look_at(myself, state, job, scheduled_for, later);
            }
        }
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
            // Run elsewhere (or already done): watched, in case its process dies or it fails.
            Err(RunError::AlreadyRan) => {
                self.look_at(myself, state, job, scheduled_for, self.now())
            }
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
            let last = match self.port.job_ledger(&spec.name).await {
                Ok(ledger) => {
                    // The latest run may have failed, or been left by a process that
                    // stopped (this one, before a restart): watched until it is settled.
                    if let Some(ledger) = ledger {
                        self.look_at(myself, state, job, ledger.latest, now);
                    }
                    caught_up_to(ledger, state.jobs[job].since).max(state.jobs[job].last_scheduled)
                }
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
                    watching: HashMap::new(),
                    lapsed: HashMap::new(),
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
            SchedulerMsg::Look {
                job,
                scheduled_for,
                at,
            } => self.look(&myself, state, job, scheduled_for, at).await,
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
                    // Run again when its turn comes, here or by another replica.
                    self.look_at(&myself, state, job, scheduled_for, self.now());
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
                        watching: HashMap::new(),
                        lapsed: HashMap::new(),
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
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio::sync::Semaphore;

    use super::*;
    use crate::clock::ManualClock;
    use crate::scheduler::port::{JobLedger, Occurrence, RunOutcome};

    const HOUR: i64 = 3_600_000;

    /// A ledger in memory, shared by the replicas of a test, whose job bodies wait for a
    /// permit, so a run lasts as long as the test wants, and which can be made unreachable.
    struct Ledger {
        /// Each occurrence as the ledger holds it, with how many times it was run.
        rows: Mutex<BTreeMap<i64, (Occurrence, u32)>>,
        /// The occurrence of each run id.
        runs: Mutex<HashMap<String, i64>>,
        started: Mutex<Vec<i64>>,
        finished: Mutex<u32>,
        permits: Semaphore,
        down: AtomicBool,
        /// Renewals are lost, as when the process running the job has stopped.
        unrenewed: AtomicBool,
        tries: AtomicU32,
        /// Reads of an occurrence.
        looks: AtomicU32,
        /// Runs that fail before one succeeds.
        failures: Mutex<u32>,
    }

    impl Default for Ledger {
        fn default() -> Self {
            Self {
                rows: Mutex::default(),
                runs: Mutex::default(),
                started: Mutex::default(),
                finished: Mutex::default(),
                permits: Semaphore::new(0),
                down: AtomicBool::default(),
                unrenewed: AtomicBool::default(),
                tries: AtomicU32::default(),
                looks: AtomicU32::default(),
                failures: Mutex::default(),
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

        fn row(&self, scheduled_for: i64) -> Option<(Occurrence, u32)> {
            self.rows.lock().unwrap().get(&scheduled_for).copied()
        }
    }

    impl SchedulerPort for Ledger {
        async fn try_start(
            &self,
            _: &str,
            scheduled_for: i64,
            now_ms: i64,
            lease_ms: i64,
            claim: Claim,
        ) -> Result<Option<String>, PortError> {
            self.tries.fetch_add(1, Ordering::SeqCst);
            self.reachable()?;
            let mut rows = self.rows.lock().unwrap();
            let attempts = match (claim, rows.get(&scheduled_for)) {
                (Claim::Start, None) => 1,
                (Claim::Start, Some(&(Occurrence::Running { lease_until_ms }, done)))
                    if lease_until_ms < now_ms =>
                {
                    done + 1
                }
                (
                    Claim::Rerun { attempts },
                    Some(&(Occurrence::Failed { attempts: done, .. }, _)),
                ) if done == attempts => done + 1,
                _ => return Ok(None),
            };
            let running = Occurrence::Running {
                lease_until_ms: now_ms + lease_ms,
            };
            rows.insert(scheduled_for, (running, attempts));
            self.started.lock().unwrap().push(scheduled_for);
            let id = format!("run-{scheduled_for}-{attempts}");
            self.runs.lock().unwrap().insert(id.clone(), scheduled_for);
            Ok(Some(id))
        }
        async fn renew(&self, run_id: &str, until_ms: i64) -> Result<(), PortError> {
            if self.unrenewed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let scheduled_for = self.runs.lock().unwrap()[run_id];
            let mut rows = self.rows.lock().unwrap();
            let row = rows.get_mut(&scheduled_for).unwrap();
            if matches!(row.0, Occurrence::Running { .. }) {
                row.0 = Occurrence::Running {
                    lease_until_ms: until_ms,
                };
            }
            Ok(())
        }
        async fn finish(
            &self,
            _: &str,
            run_id: &str,
            outcome: &RunOutcome,
            now_ms: i64,
        ) -> Result<(), PortError> {
            let scheduled_for = self.runs.lock().unwrap()[run_id];
            let mut rows = self.rows.lock().unwrap();
            let row = rows.get_mut(&scheduled_for).unwrap();
            row.0 = match outcome {
                RunOutcome::Succeeded(_) => Occurrence::Succeeded,
                RunOutcome::Failed(_) => Occurrence::Failed {
                    finished_at_ms: now_ms,
                    attempts: row.1,
                },
            };
            *self.finished.lock().unwrap() += 1;
            Ok(())
        }
        async fn job_ledger(&self, _: &str) -> Result<Option<JobLedger>, PortError> {
            self.reachable()?;
            let rows = self.rows.lock().unwrap();
            // Runs start at their occurrence here.
            Ok(rows.keys().next().map(|&first| JobLedger {
                latest: *rows.keys().next_back().unwrap(),
                first_started: first,
            }))
        }
        async fn occurrence(
            &self,
            _: &str,
            scheduled_for: i64,
        ) -> Result<Option<Occurrence>, PortError> {
            self.reachable()?;
            self.looks.fetch_add(1, Ordering::SeqCst);
            Ok(self.row(scheduled_for).map(|(occurrence, _)| occurrence))
        }
        async fn run(&self, _: &str, _: i64) -> Result<String, String> {
            self.permits.acquire().await.unwrap().forget();
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
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

    /// 10:00 of some day.
    const TEN: i64 = 1_800_000_000_000 / HOUR * HOUR + HOUR;

    /// A ledger, and a clock at 09:30.
    fn at_half_past_nine() -> (Arc<Ledger>, Arc<ManualClock>) {
        let clock = ManualClock::new((TEN - HOUR / 2) as u64);
        (Arc::new(Ledger::default()), Arc::new(clock))
    }

    type Replica = (ActorRef<SchedulerMsg>, tokio::task::JoinHandle<()>);

    /// An hourly job's scheduler (a replica) with a lease of `lease_ms`.
    async fn hourly_with(ledger: &Arc<Ledger>, clock: &Arc<ManualClock>, lease_ms: u64) -> Replica {
        let scheduler = Scheduler {
            port: ledger.clone(),
            clock: clock.clone(),
            jobs: vec![JobSpec {
                name: "hourly".to_owned(),
                schedule: Schedule::parse("0 * * * *", "UTC").unwrap(),
                missed: MissedPolicy::CatchUp,
            }],
            config: SchedulerConfig {
                lease: Duration::from_millis(lease_ms),
                catch_up_horizon: Duration::from_secs(86_400),
                retry_every: Duration::from_millis(20),
            },
        };
        Actor::spawn(None, scheduler, ()).await.unwrap()
    }

    async fn hourly(ledger: &Arc<Ledger>, clock: &Arc<ManualClock>) -> Replica {
        hourly_with(ledger, clock, 60_000).await
    }

    async fn stop(actor: ActorRef<SchedulerMsg>, handle: tokio::task::JoinHandle<()>) {
        actor.stop(None);
        handle.await.unwrap();
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
        let (ledger, clock) = at_half_past_nine();
        let (actor, handle) = hourly(&ledger, &clock).await;
        fire(&actor, &clock, TEN);
        until("the 10:00 run", || ledger.started().len() == 1).await;
        // Its run goes on past 11:00, when the next occurrence comes due.
        fire(&actor, &clock, TEN + HOUR);
        let listed = ractor::call_t!(actor, SchedulerMsg::List, 1_000).unwrap();
        assert!(listed[0].running.is_some());
        assert_eq!(ledger.started(), [TEN]);
        // The 10:00 run ends: the 11:00 one starts.
        ledger.permits.add_permits(1);
        until("the 11:00 run", || ledger.started().len() == 2).await;
        assert_eq!(ledger.started(), [TEN, TEN + HOUR]);
        ledger.permits.add_permits(1);
        until("both runs recorded", || {
            *ledger.finished.lock().unwrap() == 2
        })
        .await;
        stop(actor, handle).await;
    }

    #[tokio::test]
    async fn an_occurrence_due_while_the_database_is_away_runs_once_it_is_back() {
        let (ledger, clock) = at_half_past_nine();
        let (actor, handle) = hourly(&ledger, &clock).await;
        ledger.down.store(true, Ordering::SeqCst);
        fire(&actor, &clock, TEN);
        // Tried, and tried again while the database stays away.
        until("three tries", || ledger.tries.load(Ordering::SeqCst) >= 3).await;
        assert!(ledger.started().is_empty());
        ledger.down.store(false, Ordering::SeqCst);
        until("the 10:00 run", || ledger.started() == [TEN]).await;
        ledger.permits.add_permits(1);
        until("its run recorded", || *ledger.finished.lock().unwrap() == 1).await;
        stop(actor, handle).await;
    }

    /// A scheduler whose 10:00 run has just failed, and whose next `failures - 1` runs will
    /// fail too (no run waits for a permit).
    async fn first_run_failed(failures: u32) -> (Arc<Ledger>, Arc<ManualClock>, Replica) {
        let (ledger, clock) = at_half_past_nine();
        ledger.permits.add_permits(1_000);
        *ledger.failures.lock().unwrap() = failures;
        let replica = hourly(&ledger, &clock).await;
        fire(&replica.0, &clock, TEN);
        until("the failure", || *ledger.finished.lock().unwrap() == 1).await;
        (ledger, clock, replica)
    }

    /// When the turns come is [`super::super::watch`]'s to test; here, that the actor runs
    /// a failed run again on each and leaves it alone after the fifth rerun.
    #[tokio::test]
    async fn a_failed_run_is_run_again_five_times_then_left_for_an_operator() {
        let (ledger, clock, (actor, handle)) = first_run_failed(100).await;
        for rerun in 2..=6 {
            // Past any turn (20 ms of the clock, then 40, 80, 160 and 320).
            clock.advance_ms(1_000);
            until("the rerun", || *ledger.finished.lock().unwrap() == rerun).await;
        }
        // A look after the sixth failure leaves it be.
        let looks = ledger.looks.load(Ordering::SeqCst);
        clock.advance_ms(60_000);
        actor.send_message(SchedulerMsg::Wake).unwrap();
        until("a look", || ledger.looks.load(Ordering::SeqCst) > looks).await;
        ractor::call_t!(actor, SchedulerMsg::List, 1_000).unwrap();
        assert_eq!(ledger.started(), [TEN; 6]);
        assert!(
            matches!(
                ledger.row(TEN),
                Some((Occurrence::Failed { attempts: 6, .. }, 6))
            ),
            "{:?}",
            ledger.row(TEN)
        );
        stop(actor, handle).await;
    }

    /// Two replicas with a lease of 300 ms: `a` runs 10:00, `b` finds it running and
    /// watches it.
    async fn a_runs_and_b_watches(
        ledger: &Arc<Ledger>,
        clock: &Arc<ManualClock>,
    ) -> (Replica, Replica) {
        let a = hourly_with(ledger, clock, 300).await;
        let b = hourly_with(ledger, clock, 300).await;
        fire(&a.0, clock, TEN);
        until("the run on a", || ledger.started() == [TEN]).await;
        fire(&b.0, clock, TEN);
        until("b's claim", || ledger.tries.load(Ordering::SeqCst) == 2).await;
        (a, b)
    }

    #[tokio::test]
    async fn a_failed_run_whose_replica_stopped_is_run_again_by_another() {
        let (ledger, clock) = at_half_past_nine();
        *ledger.failures.lock().unwrap() = 1;
        let ((a, a_handle), (b, b_handle)) = a_runs_and_b_watches(&ledger, &clock).await;
        // a's run fails, and a stops before its turn to run it again comes.
        ledger.permits.add_permits(1);
        until("the failure", || *ledger.finished.lock().unwrap() == 1).await;
        stop(a, a_handle).await;
        clock.advance_ms(20);
        ledger.permits.add_permits(1);
        until("the rerun on b", || *ledger.finished.lock().unwrap() == 2).await;
        assert_eq!(ledger.started(), [TEN, TEN]);
        assert_eq!(ledger.row(TEN), Some((Occurrence::Succeeded, 2)));
        stop(b, b_handle).await;
    }

    #[tokio::test]
    async fn a_failed_run_is_run_again_by_a_replica_that_starts_after_it() {
        let (ledger, clock, (a, a_handle)) = first_run_failed(1).await;
        stop(a, a_handle).await;
        clock.advance_ms(60_000);
        // A restart, or another replica: it finds the job's latest run failed.
        let (b, b_handle) = hourly(&ledger, &clock).await;
        until("the rerun", || *ledger.finished.lock().unwrap() == 2).await;
        assert_eq!(ledger.row(TEN), Some((Occurrence::Succeeded, 2)));
        stop(b, b_handle).await;
    }

    #[tokio::test]
    async fn a_run_is_taken_over_when_its_lease_stops_being_renewed_not_when_the_clock_jumps() {
        let (ledger, clock) = at_half_past_nine();
        let ((a, a_handle), (b, b_handle)) = a_runs_and_b_watches(&ledger, &clock).await;
        // The clock jumps past the lease of a's live run, and b looks before a's next
        // renewal (every 100 ms) lands: b sees the lease run out, looks again later, finds
        // it renewed, and leaves the run be.
        ledger.unrenewed.store(true, Ordering::SeqCst);
        clock.advance_ms(HOUR as u64 / 2);
        let looks = ledger.looks.load(Ordering::SeqCst);
        b.send_message(SchedulerMsg::Wake).unwrap();
        until("b's look", || ledger.looks.load(Ordering::SeqCst) > looks).await;
        ledger.unrenewed.store(false, Ordering::SeqCst);
        until("b's second look", || {
            ledger.looks.load(Ordering::SeqCst) > looks + 1
        })
        .await;
        ractor::call_t!(b, SchedulerMsg::List, 1_000).unwrap();
        assert_eq!(ledger.started(), [TEN]);
        // a's renewals stop, as when its process dies: b takes the run over.
        ledger.unrenewed.store(true, Ordering::SeqCst);
        clock.advance_ms(1_000);
        until("the takeover", || ledger.started() == [TEN, TEN]).await;
        assert_eq!(ledger.row(TEN).map(|(_, attempts)| attempts), Some(2));
        stop(a, a_handle).await;
        stop(b, b_handle).await;
    }
}
