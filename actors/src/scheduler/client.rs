//! The handle HTTP code uses to ask the scheduler, with a deadline.

use std::time::Duration;

use herald_supervision::ChildSlot;
use ractor::ActorRef;

use super::msg::{JobStatus, RunError, SchedulerMsg};

#[derive(Clone)]
pub struct SchedulerClient {
    slot: ChildSlot,
    timeout: Duration,
}

impl SchedulerClient {
    pub fn new(slot: ChildSlot, timeout: Duration) -> Self {
        Self { slot, timeout }
    }

    fn actor(&self) -> Option<ActorRef<SchedulerMsg>> {
        self.slot.get()
    }

    pub fn is_running(&self) -> bool {
        self.slot.cell().is_some()
    }

    pub async fn list(&self) -> Option<Vec<JobStatus>> {
        let actor = self.actor()?;
        ractor::call_t!(actor, SchedulerMsg::List, self.timeout.as_millis() as u64).ok()
    }

    /// Starts `job` now, as the occurrence `scheduled_for` (default: now); `None` when the
    /// scheduler is restarting.
    pub async fn run_now(
        &self,
        job: &str,
        scheduled_for: Option<i64>,
    ) -> Option<Result<String, RunError>> {
        let actor = self.actor()?;
        let job = job.to_owned();
        ractor::call_t!(
            actor,
            SchedulerMsg::RunNow,
            self.timeout.as_millis() as u64,
            job,
            scheduled_for
        )
        .ok()
    }

    /// Schedules `spec`, unless a job of its name is scheduled already. A restarted
    /// scheduler knows only its first jobs: whoever adds jobs adds them again from time to
    /// time. `since`: when the job came to exist (the first occurrence after it that the
    /// ledger has not seen run is caught up, under the missed-run policy); `None`: now.
    pub fn add(&self, spec: super::JobSpec, since: Option<i64>) {
        if let Some(actor) = self.actor() {
            let _ = actor.send_message(SchedulerMsg::Add(Box::new(spec), since));
        }
    }

    /// Re-evaluates due occurrences (after the clock moved).
    pub fn wake(&self) {
        if let Some(actor) = self.actor() {
            let _ = actor.send_message(SchedulerMsg::Wake);
        }
    }
}
