//! The scheduler actor against a ledger in memory and a clock the tests move: occurrences
//! that come due while a run goes on or the database is away, failed runs run again (also
//! by another replica, or one that starts later), and lapsed leases taken over.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::Semaphore;

use super::*;
use crate::clock::ManualClock;
use crate::scheduler::calendar::{MissedPolicy, Schedule};
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
            (Claim::Rerun { attempts }, Some(&(Occurrence::Failed { attempts: done, .. }, _)))
                if done == attempts =>
            {
                done + 1
            }
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
    async fn unsettled(
        &self,
        since_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<(String, i64)>, PortError> {
        self.reachable()?;
        let rows = self.rows.lock().unwrap();
        // Runs start at their occurrence here.
        Ok(rows
            .range(since_ms..)
            .filter(|(_, (occurrence, attempts))| match occurrence {
                Occurrence::Running { .. } => true,
                Occurrence::Failed { .. } => *attempts <= max_attempts,
                Occurrence::Succeeded => false,
            })
            .map(|(&scheduled_for, _)| ("hourly".to_owned(), scheduled_for))
            .collect())
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
async fn a_failed_run_by_hand_whose_replica_stopped_is_run_again_by_one_already_running() {
    let (ledger, clock) = at_half_past_nine();
    ledger.permits.add_permits(1_000);
    // b runs 10:00 on time: the job's latest occurrence is one b ran well.
    let (b, b_handle) = hourly_with(&ledger, &clock, 300).await;
    fire(&b, &clock, TEN);
    until("b's run", || *ledger.finished.lock().unwrap() == 1).await;
    // a runs 05:00 by hand; it fails, and a stops before its turn to run it again comes.
    *ledger.failures.lock().unwrap() = 1;
    let (a, a_handle) = hourly_with(&ledger, &clock, 300).await;
    let early = TEN - 5 * HOUR;
    let run = ractor::call_t!(
        a,
        SchedulerMsg::RunNow,
        1_000,
        "hourly".to_owned(),
        Some(early)
    );
    assert!(run.unwrap().is_ok());
    until("the failure", || *ledger.finished.lock().unwrap() == 2).await;
    stop(a, a_handle).await;
    // b, which no timer of its own wakes before 11:00, finds it in its sweep of the ledger
    // (every 100 ms with this lease) and runs it again once its turn has come.
    clock.advance_ms(1_000);
    until("the rerun on b", || *ledger.finished.lock().unwrap() == 3).await;
    assert_eq!(ledger.started(), [TEN, early, early]);
    assert_eq!(ledger.row(early), Some((Occurrence::Succeeded, 2)));
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
