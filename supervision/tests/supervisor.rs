//! Supervisor behaviour driven through real actors: crash a child, poll until it is back.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_supervision::{
    Backoff, ChildSlot, ChildSpec, ChildState, Intensity, Observer, Restart, RestartEvent,
    Strategy, Supervisor, SupervisorSpec,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

enum WorkerMsg {
    /// Replies with the incarnation number of the worker.
    Ping(RpcReplyPort<u32>),
    Panic,
    Fail,
    Exit,
}

#[derive(Clone)]
struct Worker {
    name: &'static str,
    starts: Arc<AtomicU32>,
    /// While positive, `pre_start` fails and decrements it.
    failing_starts: Arc<AtomicU32>,
    stops: Arc<Mutex<Vec<&'static str>>>,
}

impl Worker {
    fn new(name: &'static str, stops: &Arc<Mutex<Vec<&'static str>>>) -> Self {
        Self {
            name,
            starts: Arc::default(),
            failing_starts: Arc::default(),
            stops: stops.clone(),
        }
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = u32;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<u32, ActorProcessingErr> {
        if self
            .failing_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("cannot start yet".into());
        }
        Ok(self.starts.fetch_add(1, Ordering::SeqCst) + 1)
    }

    async fn post_stop(
        &self,
        _: ActorRef<WorkerMsg>,
        _: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        self.stops.lock().unwrap().push(self.name);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        incarnation: &mut u32,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(*incarnation);
            }
            WorkerMsg::Panic => panic!("worker {} told to panic", self.name),
            WorkerMsg::Fail => return Err(format!("worker {} told to fail", self.name).into()),
            WorkerMsg::Exit => myself.stop(None),
        }
        Ok(())
    }
}

#[derive(Default)]
struct Recorder {
    restarts: Mutex<Vec<RestartEvent>>,
    meltdowns: Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn on_restart(&self, event: &RestartEvent) {
        self.restarts.lock().unwrap().push(event.clone());
    }
    fn on_meltdown(&self, supervisor: &str, _recent: &[RestartEvent]) {
        self.meltdowns.lock().unwrap().push(supervisor.to_owned());
    }
}

/// Polls `check` until it holds or five seconds pass.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn ping(slot: &ChildSlot) -> Option<u32> {
    let actor: ActorRef<WorkerMsg> = slot.get()?;
    ractor::call_t!(actor, WorkerMsg::Ping, 500).ok()
}

fn send(slot: &ChildSlot, message: WorkerMsg) {
    let actor: ActorRef<WorkerMsg> = slot.get().expect("child is running");
    assert!(
        actor.send_message(message).is_ok(),
        "child accepts messages"
    );
}

fn stops() -> Arc<Mutex<Vec<&'static str>>> {
    Arc::default()
}

#[tokio::test]
async fn a_child_that_panics_in_its_handler_is_restarted_and_serves_the_next_message() {
    let log = stops();
    let child = ChildSpec::actor("worker", Worker::new("worker", &log), || ());
    let slot = child.slot();
    let recorder = Arc::new(Recorder::default());
    let spec = SupervisorSpec::one_for_one(vec![child]).observer(recorder.clone());
    let (sup, _join) = Supervisor::spawn("root", spec, None).await.unwrap();

    assert_eq!(ping(&slot).await, Some(1));
    send(&slot, WorkerMsg::Panic);
    eventually("second incarnation answers", || async {
        ping(&slot).await == Some(2)
    })
    .await;

    let events = recorder.restarts.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].child, "worker");
    assert!(
        events[0].reason.contains("told to panic"),
        "{}",
        events[0].reason
    );

    let status = sup.status().await.unwrap();
    assert_eq!(status[0].restarts, 1);
    assert_eq!(status[0].state, ChildState::Running);
    let (_, reason) = status[0].last_failure.clone().expect("failure recorded");
    assert!(reason.contains("told to panic"));
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_child_whose_handler_returns_err_is_restarted() {
    let log = stops();
    let child = ChildSpec::actor("worker", Worker::new("worker", &log), || ());
    let slot = child.slot();
    let (sup, _join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(vec![child]), None)
        .await
        .unwrap();
    send(&slot, WorkerMsg::Fail);
    eventually("restarted after Err", || async {
        ping(&slot).await == Some(2)
    })
    .await;
    let status = sup.status().await.unwrap();
    assert!(
        status[0]
            .last_failure
            .as_ref()
            .unwrap()
            .1
            .contains("told to fail")
    );
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_child_whose_pre_start_fails_is_retried_until_it_starts() {
    let log = stops();
    let worker = Worker::new("worker", &log);
    worker.failing_starts.store(2, Ordering::SeqCst);
    let child = ChildSpec::actor("worker", worker.clone(), || ()).backoff(Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
    });
    let slot = child.slot();
    let (sup, _join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(vec![child]), None)
        .await
        .unwrap();
    eventually("started after two failed starts", || async {
        ping(&slot).await == Some(1)
    })
    .await;
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].restarts, 2);
    assert!(
        status[0]
            .last_failure
            .as_ref()
            .unwrap()
            .1
            .contains("cannot start yet")
    );
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_child_that_never_starts_exhausts_the_intensity_and_fails_the_supervisor() {
    let log = stops();
    let worker = Worker::new("worker", &log);
    worker.failing_starts.store(u32::MAX, Ordering::SeqCst);
    let child = ChildSpec::actor("worker", worker, || ()).backoff(Backoff::none());
    let spec = SupervisorSpec::one_for_one(vec![child]).intensity(Intensity {
        max_restarts: 3,
        period: Duration::from_secs(60),
    });
    let (sup, join) = Supervisor::spawn("root", spec, None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .unwrap()
        .unwrap();
    assert!(!sup.is_alive());
}

#[tokio::test]
async fn exceeding_the_restart_intensity_stops_the_children_and_escalates_to_the_parent() {
    let log = stops();
    let steady = Worker::new("steady", &log);
    let flaky = Worker::new("flaky", &log);
    let flaky_slot_holder: Arc<Mutex<Option<ChildSlot>>> = Arc::default();
    let holder = flaky_slot_holder.clone();
    let recorder = Arc::new(Recorder::default());
    let inner_recorder = recorder.clone();
    let nested = ChildSpec::supervisor("inner", move || {
        let steady = ChildSpec::actor("steady", steady.clone(), || ());
        let flaky = ChildSpec::actor("flaky", flaky.clone(), || ()).backoff(Backoff::none());
        *holder.lock().unwrap() = Some(flaky.slot());
        SupervisorSpec::one_for_one(vec![steady, flaky])
            .intensity(Intensity {
                max_restarts: 2,
                period: Duration::from_secs(60),
            })
            .observer(inner_recorder.clone())
    })
    .restart(Restart::Temporary);
    let inner_slot = nested.slot();
    let outer = SupervisorSpec::one_for_one(vec![nested]).observer(recorder.clone());
    let (sup, _join) = Supervisor::spawn("outer", outer, None).await.unwrap();
    let flaky_slot = flaky_slot_holder.lock().unwrap().clone().unwrap();

    for incarnation in 1..=3 {
        eventually("flaky is up", || async {
            ping(&flaky_slot).await == Some(incarnation)
        })
        .await;
        send(&flaky_slot, WorkerMsg::Panic);
    }
    eventually("inner supervisor gave up", || async {
        inner_slot.cell().is_none()
    })
    .await;

    assert_eq!(
        *recorder.meltdowns.lock().unwrap(),
        vec!["inner".to_owned()]
    );
    // Every child of the melted-down supervisor was stopped, newest first.
    assert_eq!(*log.lock().unwrap(), vec!["steady"]);
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].state, ChildState::Stopped);
    assert!(
        status[0]
            .last_failure
            .as_ref()
            .unwrap()
            .1
            .contains("restarts")
    );
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_temporary_child_stays_down() {
    let log = stops();
    let child =
        ChildSpec::actor("once", Worker::new("once", &log), || ()).restart(Restart::Temporary);
    let slot = child.slot();
    let (sup, _join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(vec![child]), None)
        .await
        .unwrap();
    send(&slot, WorkerMsg::Panic);
    eventually("status shows it stopped", || async {
        sup.status().await.unwrap()[0].state == ChildState::Stopped
    })
    .await;
    assert!(slot.cell().is_none());
    assert_eq!(sup.status().await.unwrap()[0].restarts, 0);
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_transient_child_is_restarted_on_failure_but_not_on_a_normal_exit() {
    let log = stops();
    let child = ChildSpec::actor("t", Worker::new("t", &log), || ()).restart(Restart::Transient);
    let slot = child.slot();
    let (sup, _join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(vec![child]), None)
        .await
        .unwrap();
    send(&slot, WorkerMsg::Fail);
    eventually("restarted after failure", || async {
        ping(&slot).await == Some(2)
    })
    .await;
    send(&slot, WorkerMsg::Exit);
    eventually("stopped after normal exit", || async {
        sup.status().await.unwrap()[0].state == ChildState::Stopped
    })
    .await;
    assert_eq!(sup.status().await.unwrap()[0].restarts, 1);
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn children_stop_in_reverse_start_order() {
    let log = stops();
    let children = ["first", "second", "third"]
        .into_iter()
        .map(|name| ChildSpec::actor(name, Worker::new(name, &log), || ()))
        .collect();
    let (sup, join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(children), None)
        .await
        .unwrap();
    sup.shutdown(Duration::from_secs(5)).await;
    join.await.unwrap();
    assert_eq!(*log.lock().unwrap(), vec!["third", "second", "first"]);
}

#[tokio::test]
async fn one_for_all_restarts_every_sibling() {
    let log = stops();
    let a = ChildSpec::actor("a", Worker::new("a", &log), || ());
    let b = ChildSpec::actor("b", Worker::new("b", &log), || ());
    let (slot_a, slot_b) = (a.slot(), b.slot());
    let spec = SupervisorSpec::one_for_one(vec![a, b]).strategy(Strategy::OneForAll);
    let (sup, _join) = Supervisor::spawn("root", spec, None).await.unwrap();
    send(&slot_a, WorkerMsg::Panic);
    eventually("both restarted", || async {
        ping(&slot_a).await == Some(2) && ping(&slot_b).await == Some(2)
    })
    .await;
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn rest_for_one_restarts_only_later_siblings() {
    let log = stops();
    let a = ChildSpec::actor("a", Worker::new("a", &log), || ());
    let b = ChildSpec::actor("b", Worker::new("b", &log), || ());
    let c = ChildSpec::actor("c", Worker::new("c", &log), || ());
    let (slot_a, slot_b, slot_c) = (a.slot(), b.slot(), c.slot());
    let spec = SupervisorSpec::one_for_one(vec![a, b, c]).strategy(Strategy::RestForOne);
    let (sup, _join) = Supervisor::spawn("root", spec, None).await.unwrap();
    send(&slot_b, WorkerMsg::Panic);
    eventually("b and c restarted", || async {
        ping(&slot_b).await == Some(2) && ping(&slot_c).await == Some(2)
    })
    .await;
    assert_eq!(ping(&slot_a).await, Some(1));
    sup.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn status_nests_the_children_of_a_child_supervisor() {
    let log = stops();
    let worker = Worker::new("leaf", &log);
    let nested = ChildSpec::supervisor("limiter", move || {
        SupervisorSpec::one_for_one(vec![ChildSpec::actor("shard-0", worker.clone(), || ())])
    });
    let (sup, _join) = Supervisor::spawn("root", SupervisorSpec::one_for_one(vec![nested]), None)
        .await
        .unwrap();
    let status = sup.status().await.unwrap();
    assert_eq!(status[0].id, "limiter");
    assert_eq!(status[0].children.len(), 1);
    assert_eq!(status[0].children[0].id, "shard-0");
    assert_eq!(status[0].children[0].state, ChildState::Running);
    sup.shutdown(Duration::from_secs(5)).await;
}
