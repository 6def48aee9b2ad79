//! The scheduler: job calendars, the actor and its messages that runs each occurrence once, its port to the
//! occurrence ledger and the job bodies, the rules of watching an occurrence through that
//! ledger, and the client HTTP code uses.

pub mod actor;
pub mod calendar;
pub mod client;
pub mod msg;
pub mod port;
pub mod run;
pub mod watch;

pub use actor::Scheduler;
pub use calendar::{MissedPolicy, Schedule, ScheduleError, catch_up};
pub use client::SchedulerClient;
pub use msg::{JobSpec, JobStatus, RunError, SchedulerConfig, SchedulerMsg};
pub use port::{Claim, JobLedger, Occurrence, RunOutcome, SchedulerPort};
pub use run::{run_occurrence, run_started};
