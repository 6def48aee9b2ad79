//! What the scheduler is told and answers: the jobs registered in code, its messages, its
//! settings, and what a run or a listing returns.

use std::time::Duration;

use ractor::RpcReplyPort;

use super::calendar::{MissedPolicy, Schedule};

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
    /// Looks for occurrences the ledger holds unsettled that this process does not watch
    /// (a run by hand that failed on another replica, which stopped), and sweeps again a
    /// third of the lease later.
    Sweep,
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
