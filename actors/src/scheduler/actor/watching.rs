//! The scheduler's watch over occurrences it does not run to the end itself: when it looks
//! at one in the ledger again ([`SchedulerMsg::Look`]), what it does then (asking
//! [`Rules`] and carrying the step out), and the sweep that finds the unsettled runs it does
//! not watch yet. Nothing here runs a job: a claim goes through [`Scheduler::start`].

use ractor::ActorRef;

use super::{Scheduler, SchedulerState};
use crate::clock::millis;
use crate::scheduler::msg::{RunError, SchedulerMsg};
use crate::scheduler::port::{Claim, SchedulerPort};
use crate::scheduler::watch::{LEASE_GRACE_MS, MAX_RERUNS, Rules, Step};

impl<P: SchedulerPort> Scheduler<P> {
    fn watch_rules(&self) -> Rules {
        Rules {
            lease_ms: millis(self.config.lease),
            retry_every_ms: millis(self.config.retry_every),
        }
    }

    /// Looks at `(job, scheduled_for)` in the ledger at `at` (at once if it is past). An
    /// occurrence already watched keeps its look, unless this one comes sooner.
    pub(super) fn look_at(
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
        // The timer's handle is not kept: a look armed for another time is let go.
        drop(
            myself.send_after(self.until(at), move || SchedulerMsg::Look {
                job,
                scheduled_for,
                at,
            }),
        );
    }

    /// The look at `(job, scheduled_for)` armed for `at` ([`SchedulerMsg::Look`]).
    pub(super) async fn look(
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

    /// Watches every occurrence the ledger holds unsettled whose last run started within
    /// the catch-up horizon, of the jobs this process has, but for the one it runs itself.
    /// One already watched keeps its look: brought forward, the second look at a lapsed
    /// lease would come before the renewal it waits for. Arms the next sweep a third of the lease later, as often as a
    /// live run renews its lease.
    pub(super) async fn sweep(&self, myself: &ActorRef<SchedulerMsg>, state: &mut SchedulerState) {
        let now = self.now();
        let since = now - millis(self.config.catch_up_horizon);
        match self.port.unsettled(since, MAX_RERUNS).await {
            Ok(unsettled) => {
                for (name, scheduled_for) in unsettled {
                    let job = state.jobs.iter().position(|j| {
                        j.spec.name == name
                            && !j.watching.contains_key(&scheduled_for)
                            && j.running
                                .as_ref()
                                .is_none_or(|&(_, run)| run != scheduled_for)
                    });
                    if let Some(job) = job {
                        self.look_at(myself, state, job, scheduled_for, now);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the job ledger's unsettled runs; sweeping again later");
            }
        }
        if let Some(timer) = state.sweep.take() {
            timer.abort();
        }
        state.sweep = Some(myself.send_after(self.config.lease / 3, || SchedulerMsg::Sweep));
    }
}
