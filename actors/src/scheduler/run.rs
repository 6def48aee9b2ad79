//! One job run, the same wherever it starts (the scheduler's timer, the admin API, the CLI):
//! the occurrence is claimed in the ledger, the body runs in a task of its own (a panic is
//! caught and recorded like any failure) while the run's lease is renewed every third of
//! its length, and the outcome is recorded. A process that dies mid-run stops renewing, so
//! once the lease has expired another process may take the occurrence over; a live run is
//! never taken over.

use std::sync::Arc;
use std::time::Duration;

use super::port::{Claim, Occurrence, RunOutcome, SchedulerPort};
use crate::clock::SharedClock;
use crate::port::PortError;

fn now_ms(clock: &SharedClock) -> i64 {
    i64::try_from(clock.now_ms()).unwrap_or(i64::MAX)
}

/// How often a lease of `lease_ms` is renewed.
pub fn heartbeat_every(lease_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1_000).max(10))
}

/// Runs the occurrence `(job, scheduled_for)` that [`SchedulerPort::try_start`] gave
/// `run_id`, renewing its lease until the body ends, and records the outcome.
pub async fn run_started<P: SchedulerPort>(
    port: Arc<P>,
    clock: SharedClock,
    lease_ms: i64,
    job: String,
    run_id: String,
    scheduled_for: i64,
) -> RunOutcome {
    let heartbeat = {
        let (port, clock, id) = (port.clone(), clock.clone(), run_id.clone());
        tokio::spawn(async move {
            let every = heartbeat_every(lease_ms);
            loop {
                tokio::time::sleep(every).await;
                let until = now_ms(&clock).saturating_add(lease_ms);
                if let Err(err) = port.renew(&id, until).await {
                    tracing::warn!(run_id = %id, error = %err, "could not renew a job's lease");
                }
            }
        })
    };
    let body = {
        let (port, job) = (port.clone(), job.clone());
        tokio::spawn(async move { port.run(&job, scheduled_for).await })
    };
    let outcome = match body.await {
        Ok(Ok(stats)) => RunOutcome::Succeeded(stats),
        Ok(Err(error)) => RunOutcome::Failed(error),
        Err(join) => RunOutcome::Failed(format!("the job panicked: {join}")),
    };
    // The outcome is written while the lease is still renewed: a database away at that
    // moment is waited for (a run left `running` would hide the outcome, and on one replica
    // nothing would take it over), for one lease at most.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(lease_ms.max(0) as u64);
    let mut wait = Duration::from_millis(100);
    loop {
        match port.finish(&job, &run_id, &outcome, now_ms(&clock)).await {
            Ok(()) => break,
            Err(err) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(job = %job, error = %err, "could not record the end of a job run; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(heartbeat_every(lease_ms));
            }
            Err(err) => {
                tracing::error!(job = %job, error = %err, "could not record the end of a job run");
                break;
            }
        }
    }
    heartbeat.abort();
    outcome
}

/// How a run by hand claims its occurrence: as one more run of it when its last run failed
/// (an operator runs again what failed, also once its reruns were given up), else afresh.
pub async fn hand_claim<P: SchedulerPort>(
    port: &P,
    job: &str,
    scheduled_for: i64,
) -> Result<Claim, PortError> {
    Ok(match port.occurrence(job, scheduled_for).await? {
        Some(Occurrence::Failed { attempts, .. }) => Claim::Rerun { attempts },
        _ => Claim::Start,
    })
}

/// Claims the occurrence as a run by hand ([`hand_claim`]) and runs it to the end
/// ([`run_started`]); `None` when it already ran well or another process runs it under a
/// live lease.
pub async fn run_occurrence<P: SchedulerPort>(
    port: Arc<P>,
    clock: SharedClock,
    lease_ms: i64,
    job: &str,
    scheduled_for: i64,
) -> Result<Option<(String, RunOutcome)>, PortError> {
    let claim = hand_claim(port.as_ref(), job, scheduled_for).await?;
    let Some(run_id) = port
        .try_start(job, scheduled_for, now_ms(&clock), lease_ms, claim)
        .await?
    else {
        return Ok(None);
    };
    let outcome = run_started(
        port,
        clock,
        lease_ms,
        job.to_owned(),
        run_id.clone(),
        scheduled_for,
    )
    .await;
    Ok(Some((run_id, outcome)))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::scheduler::port::{JobLedger, Occurrence};

    /// A ledger in memory whose job body takes `body_ms` and may panic.
    #[derive(Default)]
    struct Ledger {
        started: Mutex<Vec<String>>,
        renewals: Mutex<u32>,
        finished: Mutex<Vec<RunOutcome>>,
        panics: bool,
        body_ms: u64,
        /// Writes of the outcome refused before one goes through.
        finish_refusals: Mutex<u32>,
    }

    impl SchedulerPort for Ledger {
        async fn try_start(
            &self,
            job: &str,
            _: i64,
            _: i64,
            _: i64,
            _: Claim,
        ) -> Result<Option<String>, PortError> {
            let mut started = self.started.lock().unwrap();
            if started.iter().any(|j| j == job) {
                return Ok(None);
            }
            started.push(job.to_owned());
            Ok(Some(format!("run-{job}")))
        }
        async fn renew(&self, _: &str, _: i64) -> Result<(), PortError> {
            *self.renewals.lock().unwrap() += 1;
            Ok(())
        }
        async fn finish(
            &self,
            _: &str,
            _: &str,
            outcome: &RunOutcome,
            _: i64,
        ) -> Result<(), PortError> {
            let mut refusals = self.finish_refusals.lock().unwrap();
            if *refusals > 0 {
                *refusals -= 1;
                return Err(PortError::new("connection refused"));
            }
            self.finished.lock().unwrap().push(outcome.clone());
            Ok(())
        }
        async fn unsettled(&self, _: i64, _: u32) -> Result<Vec<(String, i64)>, PortError> {
            Ok(Vec::new())
        }
        async fn job_ledger(&self, _: &str) -> Result<Option<JobLedger>, PortError> {
            Ok(None)
        }
        async fn occurrence(&self, _: &str, _: i64) -> Result<Option<Occurrence>, PortError> {
            Ok(None)
        }
        async fn run(&self, _: &str, _: i64) -> Result<String, String> {
            tokio::time::sleep(Duration::from_millis(self.body_ms)).await;
            if self.panics {
                panic!("the body failed");
            }
            Ok("{}".to_owned())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_renews_its_lease_and_an_occurrence_runs_once() {
        let port = Arc::new(Ledger {
            body_ms: 1_000,
            ..Ledger::default()
        });
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let ran = run_occurrence(port.clone(), clock.clone(), 300, "digest", 0)
            .await
            .unwrap();
        assert_eq!(
            ran,
            Some((
                "run-digest".to_owned(),
                RunOutcome::Succeeded("{}".to_owned())
            ))
        );
        // A 1 s body under a 300 ms lease renews every 100 ms.
        assert!(*port.renewals.lock().unwrap() >= 9);
        assert_eq!(
            run_occurrence(port.clone(), clock, 300, "digest", 0)
                .await
                .unwrap(),
            None
        );
        assert_eq!(port.finished.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_body_is_recorded_as_a_failure() {
        let port = Arc::new(Ledger {
            panics: true,
            ..Ledger::default()
        });
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let (_, outcome) = run_occurrence(port.clone(), clock, 300, "purge", 0)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(&outcome, RunOutcome::Failed(e) if e.contains("panicked")),
            "{outcome:?}"
        );
        assert_eq!(port.finished.lock().unwrap().as_slice(), [outcome]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_the_database_refuses_is_written_once_it_is_back() {
        let port = Arc::new(Ledger {
            finish_refusals: Mutex::new(3),
            ..Ledger::default()
        });
        let clock: SharedClock = Arc::new(ManualClock::new(0));
        let (_, outcome) = run_occurrence(port.clone(), clock, 60_000, "digest", 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(port.finished.lock().unwrap().as_slice(), [outcome]);
        assert_eq!(*port.finish_refusals.lock().unwrap(), 0);
    }
}
