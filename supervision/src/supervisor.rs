//! The supervisor actor: starts children in order, restarts them by policy, escalates when
//! restarts come too fast, and stops children in reverse order.
//!
//! It must never block on anything but its own children: no I/O, no calls to actors it
//! does not supervise. Observers are called inline, so they must be quick.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::task::JoinHandle;

use crate::intensity::RestartWindow;
use crate::spec::{ChildSpec, Intensity, Restart, Strategy};
use crate::status::{ChildState, ChildStatus, Observer, RestartEvent};

/// How long [`SupervisorRef::status`] waits for each supervisor in the tree.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Restart events kept for the meltdown report.
const RECENT_EVENTS: usize = 16;

/// Everything a supervisor needs to run.
pub struct SupervisorSpec {
    pub strategy: Strategy,
    pub intensity: Intensity,
    /// Started in this order, stopped in the reverse order.
    pub children: Vec<ChildSpec>,
    pub observer: Option<Arc<dyn Observer>>,
}

impl SupervisorSpec {
    pub fn one_for_one(children: Vec<ChildSpec>) -> Self {
        Self {
            strategy: Strategy::OneForOne,
            intensity: Intensity::default(),
            children,
            observer: None,
        }
    }

    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "supervisor {supervisor}: more than {max_restarts} restarts in {period:?}; last failure of {child}: {reason}"
    )]
    Meltdown {
        supervisor: String,
        child: String,
        reason: String,
        max_restarts: u32,
        period: Duration,
    },
    #[error("supervisor did not answer: {0}")]
    Unavailable(String),
}

/// Messages a supervisor understands. Only [`SupervisorRef`] builds them.
pub enum SupervisorMsg {
    #[doc(hidden)]
    Status(RpcReplyPort<Vec<(ChildStatus, Option<ActorCell>)>>),
    /// A delayed restart of `indices`, valid only while `generation` is current.
    #[doc(hidden)]
    Restart {
        indices: Vec<usize>,
        generation: u64,
    },
}

/// The supervisor actor. Spawn it with [`Supervisor::spawn`].
pub struct Supervisor {
    name: String,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    state: ChildState,
    restarts: u32,
    last_failure: Option<(SystemTime, String)>,
}

pub struct SupervisorState {
    strategy: Strategy,
    intensity: Intensity,
    window: RestartWindow,
    children: Vec<Child>,
    observer: Option<Arc<dyn Observer>>,
    recent: VecDeque<RestartEvent>,
    /// Bumped whenever a restart is scheduled, so a stale delayed restart is ignored.
    generation: u64,
}

impl Supervisor {
    /// Starts a supervisor and, in order, its children; linked to `parent` when given.
    pub async fn spawn(
        name: impl Into<String>,
        spec: SupervisorSpec,
        parent: Option<ActorCell>,
    ) -> Result<(SupervisorRef, JoinHandle<()>), SpawnErr> {
        let name = name.into();
        let supervisor = Supervisor { name: name.clone() };
        let (actor, join) = match parent {
            Some(parent) => Actor::spawn_linked(None, supervisor, spec, parent).await?,
            None => Actor::spawn(None, supervisor, spec).await?,
        };
        Ok((SupervisorRef { actor, name }, join))
    }

    /// Starts child `index`, recording it as running on success.
    async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        index: usize,
    ) -> Result<(), String> {
        let child = &mut state.children[index];
        match (child.spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                child.spec.slot.set(Some(cell.clone()));
                child.cell = Some(cell);
                child.state = ChildState::Running;
                Ok(())
            }
            Err(err) => Err(format!("start failed: {}", spawn_error_text(&err))),
        }
    }

    /// Starts `indices` in order; a child that fails to start counts as a failure and the
    /// rest of the list is retried after its backoff.
    async fn start_children(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        indices: Vec<usize>,
    ) -> Result<(), ActorProcessingErr> {
        for (position, &index) in indices.iter().enumerate() {
            if let Err(reason) = self.start_child(myself, state, index).await {
                let delay = self.register_restart(state, index, reason).await?;
                self.schedule(myself, state, indices[position..].to_vec(), delay);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Counts a restart of child `index` against the intensity and reports it; on too many
    /// restarts stops every child and returns the error that fails this supervisor.
    async fn register_restart(
        &self,
        state: &mut SupervisorState,
        index: usize,
        reason: String,
    ) -> Result<Duration, SupervisorError> {
        let now = SystemTime::now();
        let within_intensity = state.window.record(Instant::now());
        let child = &mut state.children[index];
        child.last_failure = Some((now, reason.clone()));
        child.state = ChildState::Restarting;
        child.spec.slot.set(None);

        if !within_intensity {
            child.state = ChildState::Stopped;
            let child_id = child.spec.id.clone();
            tracing::error!(
                supervisor = %self.name, child = %child_id, %reason,
                "restart intensity exceeded; stopping all children and escalating"
            );
            if let Some(observer) = &state.observer {
                observer.on_meltdown(&self.name, state.recent.make_contiguous());
            }
            stop_all(state).await;
            return Err(SupervisorError::Meltdown {
                supervisor: self.name.clone(),
                child: child_id,
                reason,
                max_restarts: state.intensity.max_restarts,
                period: state.intensity.period,
            });
        }

        child.restarts += 1;
        let event = RestartEvent {
            supervisor: self.name.clone(),
            child: child.spec.id.clone(),
            reason,
            restarts: child.restarts,
            at: now,
        };
        tracing::error!(
            supervisor = %event.supervisor, child = %event.child, restarts = event.restarts,
            reason = %event.reason, "restarting child"
        );
        if let Some(observer) = &state.observer {
            observer.on_restart(&event);
        }
        if state.recent.len() == RECENT_EVENTS {
            state.recent.pop_front();
        }
        state.recent.push_back(event);
        let nth = u32::try_from(state.window.len()).unwrap_or(u32::MAX);
        Ok(child.spec.backoff.delay(nth))
    }

    fn schedule(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        indices: Vec<usize>,
        delay: Duration,
    ) {
        state.generation += 1;
        let generation = state.generation;
        for &index in &indices {
            state.children[index].state = ChildState::Restarting;
        }
        let message = move || SupervisorMsg::Restart {
            indices,
            generation,
        };
        if delay.is_zero() {
            // Through the mailbox rather than inline, so a child failing on every start
            // cannot recurse, and status requests are answered in between.
            let _ = myself.send_message(message());
        } else {
            myself.send_after(delay, message);
        }
    }

    /// A child went down: decide, per its restart type and the strategy, what starts again.
    async fn child_down(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        cell: &ActorCell,
        failure: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        let id = cell.get_id();
        let Some(index) = state
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|c| c.get_id() == id))
        else {
            // An incarnation we already replaced or stopped on purpose.
            return Ok(());
        };
        let child = &mut state.children[index];
        child.cell = None;
        child.spec.slot.set(None);
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failure.is_some(),
            Restart::Temporary => false,
        };
        if !restart {
            if let Some(reason) = &failure {
                child.last_failure = Some((SystemTime::now(), reason.clone()));
                tracing::warn!(supervisor = %self.name, child = %child.spec.id, %reason, "child failed; not restarted");
            }
            child.state = ChildState::Stopped;
            return Ok(());
        }
        let reason = failure.unwrap_or_else(|| "exited normally".to_owned());
        let delay = self.register_restart(state, index, reason).await?;

        let indices: Vec<usize> = match state.strategy {
            Strategy::OneForOne => vec![index],
            Strategy::OneForAll => (0..state.children.len()).collect(),
            Strategy::RestForOne => (index..state.children.len()).collect(),
        };
        // Siblings that restart with it are stopped first, newest first.
        for &other in indices.iter().rev().filter(|&&i| i != index) {
            stop_child(&mut state.children[other]).await;
        }
        let indices: Vec<usize> = indices
            .into_iter()
            .filter(|&i| state.children[i].spec.restart != Restart::Temporary || i == index)
            .collect();
        self.schedule(myself, state, indices, delay);
        Ok(())
    }
}

/// Stops one child in an orderly way, killing it if it overruns its shutdown timeout.
async fn stop_child(child: &mut Child) {
    child.spec.slot.set(None);
    child.state = ChildState::Stopped;
    if let Some(cell) = child.cell.take() {
        let timeout = Some(child.spec.shutdown);
        if cell
            .stop_and_wait(Some("shutdown".to_owned()), timeout)
            .await
            .is_err()
        {
            tracing::warn!(child = %child.spec.id, "child did not stop in time; killing it");
            let _ = cell.kill_and_wait(Some(Duration::from_secs(1))).await;
        }
    }
}

/// Stops every child, the last started first.
async fn stop_all(state: &mut SupervisorState) {
    for child in state.children.iter_mut().rev() {
        stop_child(child).await;
    }
}

fn spawn_error_text(err: &SpawnErr) -> String {
    match err {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorSpec;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        spec: SupervisorSpec,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            strategy: spec.strategy,
            intensity: spec.intensity,
            window: RestartWindow::new(spec.intensity.max_restarts, spec.intensity.period),
            children: spec
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    cell: None,
                    state: ChildState::Restarting,
                    restarts: 0,
                    last_failure: None,
                })
                .collect(),
            observer: spec.observer,
            recent: VecDeque::new(),
            generation: 0,
        };
        let all = (0..state.children.len()).collect();
        self.start_children(&myself, &mut state, all).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        stop_all(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Status(reply) => {
                let snapshot = state
                    .children
                    .iter()
                    .map(|c| {
                        let status = ChildStatus {
                            id: c.spec.id.clone(),
                            state: c.state,
                            restarts: c.restarts,
                            last_failure: c.last_failure.clone(),
                            children: Vec::new(),
                        };
                        (status, c.spec.nested.then(|| c.cell.clone()).flatten())
                    })
                    .collect();
                let _ = reply.send(snapshot);
            }
            SupervisorMsg::Restart {
                indices,
                generation,
            } => {
                if generation == state.generation {
                    self.start_children(&myself, state, indices).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                self.child_down(&myself, state, &cell, Some(err.to_string()))
                    .await
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A kill signal or a cancelled task is abnormal even without an error value.
                let failure = reason.filter(|r| r == "killed" || r == "actor_task_cancelled");
                self.child_down(&myself, state, &cell, failure).await
            }
            _ => Ok(()),
        }
    }
}

/// A handle on a running supervisor.
#[derive(Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    name: String,
}

impl SupervisorRef {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Whether the supervisor process is still alive.
    pub fn is_alive(&self) -> bool {
        matches!(
            self.actor.get_status(),
            ractor::ActorStatus::Running | ractor::ActorStatus::Starting
        )
    }

    /// A snapshot of every child, nested supervisors included.
    pub async fn status(&self) -> Result<Vec<ChildStatus>, SupervisorError> {
        let raw = ractor::call_t!(
            self.actor,
            SupervisorMsg::Status,
            STATUS_TIMEOUT.as_millis() as u64
        )
        .map_err(|e| SupervisorError::Unavailable(e.to_string()))?;
        let mut out = Vec::with_capacity(raw.len());
        for (mut status, nested) in raw {
            if let Some(cell) = nested {
                let nested = SupervisorRef {
                    actor: ActorRef::from(cell),
                    name: status.id.clone(),
                };
                status.children = Box::pin(nested.status()).await.unwrap_or_default();
            }
            out.push(status);
        }
        Ok(out)
    }

    /// Stops the children in reverse start order, then the supervisor.
    pub async fn shutdown(&self, timeout: Duration) {
        if self
            .actor
            .stop_and_wait(Some("shutdown".to_owned()), Some(timeout))
            .await
            .is_err()
        {
            tracing::warn!(supervisor = %self.name, "supervisor did not stop in time; killing it");
            self.actor.kill();
        }
    }
}
