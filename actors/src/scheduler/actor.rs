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
//! the occurrence runs it again, and every replica sweeps the ledger for the occurrences it
//! does not watch yet (a run by hand elsewhere) a third of the lease apart; that watch is
//! `watching`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::calendar::{catch_up, caught_up_to};
use super::msg::{JobSpec, JobStatus, RunError, SchedulerConfig, SchedulerMsg};
use super::port::{Claim, Occurrence, RunOutcome, SchedulerPort};
use crate::clock::{SharedClock, millis};
use crate::port::PortError;

mod watching;

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
    /// The run of the job going on in this process: its id and its occurrence.
    running: Option<(String, i64)>,
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

impl JobState {
    fn new(spec: JobSpec, since: Option<i64>) -> Self {
        Self {
            spec,
            next: None,
            timer: None,
            running: None,
            last_scheduled: None,
            since,
            watching: HashMap::new(),
            lapsed: HashMap::new(),
        }
    }
}

pub struct SchedulerState {
    jobs: Vec<JobState>,
    /// The timer of the next [`SchedulerMsg::Sweep`].
    sweep: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<SchedulerMsg>>>>,
}

impl<P: SchedulerPort> Scheduler<P> {
    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// How long until the instant `at` (nothing if it is past): what a timer for it waits.
    fn until(&self, at: i64) -> Duration {
        Duration::from_millis(u64::try_from(at - self.now()).unwrap_or(0))
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
            entry.timer = Some(
                myself.send_after(self.until(next), move || SchedulerMsg::Fire {
                    job,
                    scheduled_for: next,
                }),
            );
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
        entry.running = Some((run_id.clone(), scheduled_for));
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

    /// Runs the occurrence `at` of `job` by hand: one whose run failed runs again, one attempt
    /// more; one running elsewhere under a live lease answers that it runs, one that
    /// succeeded that it ran.
    async fn run_by_hand(
        &self,
        myself: &ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
        job: usize,
        at: i64,
    ) -> Result<String, RunError> {
        let name = state.jobs[job].spec.name.clone();
        let claim = super::run::hand_claim(self.port.as_ref(), &name, at)
            .await
            .map_err(|err| RunError::Port(err.message))?;
        match self.start(myself, state, job, at, claim).await {
            Err(RunError::AlreadyRan) => match self.port.occurrence(&name, at).await {
                Ok(Some(Occurrence::Running { .. })) => Err(RunError::AlreadyRunning(name)),
                _ => Err(RunError::AlreadyRan),
            },
            started => started,
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
        let _ = myself.send_message(SchedulerMsg::Sweep);
        let now = self.now();
        Ok(SchedulerState {
            jobs: self
                .jobs
                .iter()
                .cloned()
                .map(|spec| {
                    let since = spec.schedule.latest_at_or_before(now);
                    JobState::new(spec, since)
                })
                .collect(),
            sweep: None,
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<SchedulerMsg>,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let timers = state.jobs.iter_mut().map(|job| &mut job.timer);
        for timer in timers.chain([&mut state.sweep]) {
            if let Some(timer) = timer.take() {
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
            SchedulerMsg::Sweep => self.sweep(&myself, state).await,
            SchedulerMsg::RunNow(name, scheduled_for, reply) => {
                let result = match state.jobs.iter().position(|j| j.spec.name == name) {
                    None => Err(RunError::UnknownJob(name)),
                    Some(job) => {
                        let at = scheduled_for.unwrap_or_else(|| self.now());
                        self.run_by_hand(&myself, state, job, at).await
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
                        running: job.running.as_ref().map(|(id, _)| id.clone()),
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
                    state.jobs.push(JobState::new(spec, since));
                    let job = state.jobs.len() - 1;
                    self.catch_up(&myself, state, job).await;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
