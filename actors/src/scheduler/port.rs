//! The scheduler's side effects: the occurrence ledger (`job_runs`) and the job bodies,
//! implemented by the service.

use std::future::Future;

use crate::port::PortError;

/// How a run ended, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// With the job's statistics as JSON.
    Succeeded(String),
    Failed(String),
}

/// Which occurrences [`SchedulerPort::try_start`] may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// One not in the ledger yet, or one a dead process left running (its lease expired).
    Start,
    /// One whose last run failed after `attempts` runs in all, to run it again: a claim
    /// made on an older view of it (another replica ran it again first) takes nothing.
    Rerun { attempts: u32 },
}

/// What the ledger holds of a job, for catching it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLedger {
    /// The latest occurrence in the ledger, whatever its status.
    pub latest: i64,
    /// When the earliest run the ledger holds started: runs that all started after an
    /// occurrence (an old week run by hand on a fresh install) are no sign the install
    /// existed at it.
    pub first_started: i64,
}

/// What the ledger holds of one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Vouched for until `lease_until_ms`; past it, the process running it stopped.
    Running {
        lease_until_ms: i64,
    },
    Succeeded,
    /// Its last run ended at `finished_at_ms`, after `attempts` runs in all.
    Failed {
        finished_at_ms: i64,
        attempts: u32,
    },
}

pub trait SchedulerPort: Send + Sync + 'static {
    /// Starts the occurrence `(job, scheduled_for)` as `claim` allows; returns the new
    /// run's id, or `None` when the ledger has it otherwise (it ran, runs under a live
    /// lease, or, for a rerun, did not fail).
    fn try_start(
        &self,
        job: &str,
        scheduled_for: i64,
        now_ms: i64,
        lease_ms: i64,
        claim: Claim,
    ) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
    /// Extends a running run's lease.
    fn renew(
        &self,
        run_id: &str,
        until_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    fn finish(
        &self,
        job: &str,
        run_id: &str,
        outcome: &RunOutcome,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The occurrence as the ledger holds it; `None` when it is not there.
    fn occurrence(
        &self,
        job: &str,
        scheduled_for: i64,
    ) -> impl Future<Output = Result<Option<Occurrence>, PortError>> + Send;
    /// The occurrences of every job that are not settled yet, as `(job, scheduled_for)`:
    /// running, or failed after at most `max_attempts` runs, their last run started at or
    /// after `since_ms`. A replica watches them though it did not run them, so a run by
    /// hand that fails is run again after the replica that ran it stops.
    fn unsettled(
        &self,
        since_ms: i64,
        max_attempts: u32,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, PortError>> + Send;
    /// What the ledger holds of `job`; `None` when it holds no run of it.
    fn job_ledger(
        &self,
        job: &str,
    ) -> impl Future<Output = Result<Option<JobLedger>, PortError>> + Send;
    /// The job's body for one occurrence; returns its statistics as JSON.
    fn run(
        &self,
        job: &str,
        scheduled_for: i64,
    ) -> impl Future<Output = Result<String, String>> + Send;
}
