//! The dispatcher actor against an outbox in memory: claims a round at a time, rows handed
//! back when they wait too long or the dispatcher stops, a row never sent twice, and a
//! database that is away waited for.

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::clock::ManualClock;
use crate::port::PortError;

/// An outbox in memory whose sends wait for a permit, as do the writes of outcomes. A
/// claimed row whose lease ran out is claimed again, as in the database.
struct Outbox {
    pending: Mutex<VecDeque<Claimed>>,
    leased: Mutex<Vec<Claimed>>,
    claims: Mutex<Vec<usize>>,
    delivered: Mutex<Vec<String>>,
    sent: Mutex<Vec<String>>,
    released: Mutex<Vec<String>>,
    gate: Semaphore,
    mark_gate: Semaphore,
    /// While set, each claim fails with it.
    refusal: Mutex<Option<PortError>>,
    refused: Mutex<usize>,
    /// The next writes of an outcome fail with this error, this many times.
    mark_refusal: Mutex<Option<(PortError, usize)>>,
    /// Writes of an outcome tried, refused or not.
    marks: Mutex<usize>,
    /// The send of this row panics.
    panics: Mutex<Option<String>>,
    /// The rows marked failed, with why.
    failed: Mutex<Vec<(String, String)>>,
}

const OPEN: usize = 1_000_000;

impl Outbox {
    fn with_rows(n: usize) -> Arc<Self> {
        let rows = (0..n).map(|i| Claimed {
            id: format!("row{i}"),
            attempts: 0,
            created_at: 0,
            email_type: "session_reports".into(),
            lease_until: i64::MAX,
        });
        Arc::new(Self {
            pending: Mutex::new(rows.collect()),
            leased: Mutex::default(),
            claims: Mutex::default(),
            delivered: Mutex::default(),
            sent: Mutex::default(),
            released: Mutex::default(),
            gate: Semaphore::new(0),
            mark_gate: Semaphore::new(OPEN),
            refusal: Mutex::default(),
            refused: Mutex::default(),
            mark_refusal: Mutex::default(),
            marks: Mutex::default(),
            panics: Mutex::default(),
            failed: Mutex::default(),
        })
    }
}

impl Outbox {
    /// Waits for the first round of claims, lets one send through, and waits until its
    /// free slot has claimed the next round.
    async fn second_round(&self) {
        let claims = || self.claims.lock().unwrap().len();
        until("the first round", || claims() == 1).await;
        self.gate.add_permits(1);
        until("the second round", || claims() == 2).await;
    }
}

impl DispatchPort for Outbox {
    async fn claim(
        &self,
        limit: usize,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, PortError> {
        if let Some(refusal) = self.refusal.lock().unwrap().clone() {
            *self.refused.lock().unwrap() += 1;
            return Err(refusal);
        }
        let mut leased = self.leased.lock().unwrap();
        let (expired, live): (Vec<Claimed>, Vec<Claimed>) =
            leased.drain(..).partition(|row| row.lease_until < now);
        *leased = live;
        let mut pending = self.pending.lock().unwrap();
        let take = limit.saturating_sub(expired.len()).min(pending.len());
        let claimed: Vec<Claimed> = expired
            .into_iter()
            .chain(pending.drain(..take))
            .map(|row| Claimed {
                lease_until: now + lease_ms,
                ..row
            })
            .collect();
        self.claims.lock().unwrap().push(claimed.len());
        leased.extend(claimed.iter().cloned());
        Ok(claimed)
    }

    async fn release(&self, claimed: &[Claimed]) -> Result<(), PortError> {
        let mut released = self.released.lock().unwrap();
        released.extend(claimed.iter().map(|row| row.id.clone()));
        self.leased
            .lock()
            .unwrap()
            .retain(|row| !claimed.iter().any(|c| c.id == row.id));
        let mut pending = self.pending.lock().unwrap();
        for row in claimed.iter().rev() {
            pending.push_front(row.clone());
        }
        Ok(())
    }

    async fn deliver(&self, claimed: &Claimed) -> Attempt {
        self.gate.acquire().await.unwrap().forget();
        if self.panics.lock().unwrap().as_deref() == Some(claimed.id.as_str()) {
            panic!("a defect in building {}", claimed.id);
        }
        self.delivered.lock().unwrap().push(claimed.id.clone());
        Attempt::Sent {
            message_id: claimed.id.clone(),
        }
    }

    async fn mark(&self, claimed: &Claimed, mark: &Mark, _: i64) -> Result<(), PortError> {
        if let Mark::Failed { error } = mark {
            let failed = (claimed.id.clone(), error.clone());
            self.failed.lock().unwrap().push(failed);
        }
        drop(self.mark_gate.acquire().await.unwrap());
        *self.marks.lock().unwrap() += 1;
        if let Some((error, left)) = self.mark_refusal.lock().unwrap().as_mut()
            && *left > 0
        {
            *left -= 1;
            return Err(error.clone());
        }
        self.leased
            .lock()
            .unwrap()
            .retain(|row| row.id != claimed.id);
        self.sent.lock().unwrap().push(claimed.id.clone());
        Ok(())
    }

    async fn depth(&self) -> Result<u64, PortError> {
        Ok(self.pending.lock().unwrap().len() as u64)
    }
}

struct Quiet;
impl DispatchObserver for Quiet {
    fn panicked(&self, claimed: &Claimed, message: &str) {
        assert_eq!(message, format!("a defect in building {}", claimed.id));
    }
}

async fn start(outbox: &Arc<Outbox>, concurrency: usize) -> ActorRef<DispatcherMsg> {
    start_with_clock(outbox, concurrency, ManualClock::new(1_000_000)).await
}

async fn start_with_clock(
    outbox: &Arc<Outbox>,
    concurrency: usize,
    clock: ManualClock,
) -> ActorRef<DispatcherMsg> {
    let dispatcher = Dispatcher {
        port: outbox.clone(),
        observer: Arc::new(Quiet),
        clock: Arc::new(clock),
        config: DispatcherConfig {
            concurrency,
            poll_every: Duration::from_secs(3600),
            drain_timeout: Duration::from_millis(50),
            ..DispatcherConfig::default()
        },
    };
    Actor::spawn(None, dispatcher, ()).await.unwrap().0
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_busy_outbox_is_claimed_a_round_at_a_time_not_a_row_at_a_time() {
    let outbox = Outbox::with_rows(40);
    outbox.gate.add_permits(1_000);
    let actor = start(&outbox, 4).await;
    until("every row sent", || outbox.sent.lock().unwrap().len() == 40).await;
    let claims = outbox.claims.lock().unwrap().clone();
    // Ten full rounds of four, then at most one empty look per slot as the last finish.
    let (full, empty): (Vec<usize>, Vec<usize>) = claims.iter().partition(|&&n| n > 0);
    assert_eq!(full, [4; 10], "{claims:?}");
    assert!(empty.len() <= 4, "{claims:?}");
    actor.stop_and_wait(None, None).await.unwrap();
}

/// With one send slot, a send that panics fails its email and frees the slot: the rows
/// after it go out, and it is not left to be claimed again when its lease runs out.
#[tokio::test]
async fn a_send_that_panics_fails_its_email_and_frees_its_slot() {
    let outbox = Outbox::with_rows(3);
    *outbox.panics.lock().unwrap() = Some("row0".to_owned());
    outbox.gate.add_permits(1_000);
    let actor = start(&outbox, 1).await;
    until("every row's outcome", || {
        outbox.sent.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(*outbox.delivered.lock().unwrap(), ["row1", "row2"]);
    assert_eq!(
        *outbox.failed.lock().unwrap(),
        [("row0".to_owned(), PANICKED.to_owned())]
    );
    assert!(outbox.leased.lock().unwrap().is_empty());
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn rows_waiting_for_a_slot_are_handed_back_when_the_dispatcher_stops() {
    let outbox = Outbox::with_rows(10);
    let actor = start(&outbox, 4).await;
    // Four sends hang; one is let through, so its slot claims a new round of four,
    // starts one of them and queues three.
    outbox.second_round().await;
    actor.stop_and_wait(None, None).await.unwrap();
    let released = outbox.released.lock().unwrap().clone();
    assert_eq!(released, ["row5", "row6", "row7"]);
    assert_eq!(outbox.sent.lock().unwrap().clone(), ["row0"]);
}

#[tokio::test]
async fn a_row_that_waited_through_half_its_lease_is_handed_back_and_claimed_afresh() {
    let outbox = Outbox::with_rows(4);
    let clock = ManualClock::new(1_000_000);
    let actor = start_with_clock(&outbox, 2, clock.clone()).await;
    // One send went out; its slot claimed row2 and row3, started row2 and queued row3.
    outbox.second_round().await;
    clock.advance_ms(DispatcherConfig::default().lease.as_millis() as u64 / 2);
    outbox.gate.add_permits(1);
    until("row3 handed back", || {
        !outbox.released.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(outbox.released.lock().unwrap().clone(), ["row3"]);
    outbox.gate.add_permits(10);
    until("every row sent", || outbox.sent.lock().unwrap().len() == 4).await;
    let mut sent = outbox.sent.lock().unwrap().clone();
    sent.sort();
    assert_eq!(sent, ["row0", "row1", "row2", "row3"], "each once");
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_slot_is_free_once_the_server_answered_while_the_outcome_is_written() {
    let outbox = Outbox::with_rows(6);
    let closed = outbox.mark_gate.acquire_many(OPEN as u32).await.unwrap();
    outbox.gate.add_permits(OPEN);
    let actor = start(&outbox, 2).await;
    // Two slots, and no outcome written yet: every email still goes out.
    until("every row delivered", || {
        outbox.delivered.lock().unwrap().len() == 6
    })
    .await;
    assert!(outbox.sent.lock().unwrap().is_empty());
    drop(closed);
    until("every outcome written", || {
        outbox.sent.lock().unwrap().len() == 6
    })
    .await;
    actor.stop_and_wait(None, None).await.unwrap();
}

#[tokio::test]
async fn a_row_still_being_sent_when_its_lease_runs_out_is_not_sent_again() {
    let outbox = Outbox::with_rows(1);
    let clock = ManualClock::new(1_000_000);
    let actor = start_with_clock(&outbox, 2, clock.clone()).await;
    until("row0 claimed", || outbox.claims.lock().unwrap().len() == 1).await;
    // Its send outlasts the lease: the database hands the row out again.
    clock.advance_ms(DispatcherConfig::default().lease.as_millis() as u64 + 1);
    actor.send_message(DispatcherMsg::Wake).unwrap();
    until("row0 claimed again", || {
        outbox.claims.lock().unwrap().clone() == [1, 1]
    })
    .await;
    outbox.gate.add_permits(10);
    until("row0 recorded", || !outbox.sent.lock().unwrap().is_empty()).await;
    actor.stop_and_wait(None, None).await.unwrap();
    assert_eq!(outbox.delivered.lock().unwrap().clone(), ["row0"]);
    assert_eq!(outbox.sent.lock().unwrap().clone(), ["row0"]);
}

#[tokio::test]
async fn a_claim_waits_for_a_database_that_is_away_and_fails_on_one_that_cannot_work() {
    let outbox = Outbox::with_rows(1);
    outbox.gate.add_permits(OPEN);
    *outbox.refusal.lock().unwrap() = Some(PortError::unavailable("connection refused"));
    let actor = start(&outbox, 2).await;
    for _ in 0..3 {
        actor.send_message(DispatcherMsg::Wake).unwrap();
    }
    until("four claims refused", || {
        *outbox.refused.lock().unwrap() == 4
    })
    .await;
    assert_eq!(actor.get_status(), ractor::ActorStatus::Running);
    // The database is back: the next poll sends.
    *outbox.refusal.lock().unwrap() = None;
    actor.send_message(DispatcherMsg::Wake).unwrap();
    until("row0 sent", || outbox.sent.lock().unwrap().len() == 1).await;
    // A claim that cannot work is the actor's failure, for its supervisor to see.
    *outbox.refusal.lock().unwrap() = Some(PortError::new("no such table: email_send_logs"));
    actor.send_message(DispatcherMsg::Wake).unwrap();
    until("the dispatcher failed", || {
        actor.get_status() == ractor::ActorStatus::Stopped
    })
    .await;
}

/// One row sent while the outcome's writes meet `error` `refusals` times: what was sent,
/// what was recorded, and how many writes were tried, once the dispatcher has stopped (it
/// waits for the send to end).
async fn sent_while_outcomes_are_refused(
    error: PortError,
    refusals: usize,
) -> (Vec<String>, Vec<String>, usize) {
    let outbox = Outbox::with_rows(1);
    outbox.gate.add_permits(OPEN);
    *outbox.mark_refusal.lock().unwrap() = Some((error, refusals));
    let dispatcher = Dispatcher {
        port: outbox.clone(),
        observer: Arc::new(Quiet),
        clock: Arc::new(ManualClock::new(1_000_000)),
        config: DispatcherConfig {
            drain_timeout: Duration::from_secs(10),
            ..DispatcherConfig::default()
        },
    };
    let actor = Actor::spawn(None, dispatcher, ()).await.unwrap().0;
    until("the first write of the outcome", || {
        *outbox.marks.lock().unwrap() > 0
    })
    .await;
    actor.stop_and_wait(None, None).await.unwrap();
    let delivered = outbox.delivered.lock().unwrap().clone();
    let sent = outbox.sent.lock().unwrap().clone();
    let marks = *outbox.marks.lock().unwrap();
    (delivered, sent, marks)
}

#[tokio::test]
async fn an_outcome_the_database_cannot_take_is_written_once_it_is_back() {
    // The server accepted the email; the database is away as its outcome is written. Lost,
    // the row would be claimed and the email sent again when its lease ran out.
    let away = PortError::unavailable("connection refused");
    let (delivered, sent, marks) = sent_while_outcomes_are_refused(away, 3).await;
    assert_eq!(delivered, ["row0"]);
    assert_eq!((sent, marks), (vec!["row0".to_owned()], 4));
    // An outcome refused for another cause is not tried again.
    let refused = PortError::new("no such column: message_id");
    let (delivered, sent, marks) = sent_while_outcomes_are_refused(refused, 1).await;
    assert_eq!(delivered, ["row0"]);
    assert_eq!((sent, marks), (vec![], 1));
}
