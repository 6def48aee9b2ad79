//! The handle HTTP code uses to ask the throttle, with a deadline.

use std::time::Duration;

use herald_supervision::ChildSlot;
use ractor::ActorRef;

use super::actor::{Admission, ThrottleMsg, TypeState};
use super::port::SendRequest;
use crate::email::{Email, EmailType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    #[error("the email throttle is restarting or did not answer in time")]
    Unavailable,
    #[error("the email throttle could not reach the database: {0}")]
    Port(String),
}

#[derive(Clone)]
pub struct ThrottleClient {
    slot: ChildSlot,
    timeout: Duration,
}

impl ThrottleClient {
    pub fn new(slot: ChildSlot, timeout: Duration) -> Self {
        Self { slot, timeout }
    }

    fn actor(&self) -> Result<ActorRef<ThrottleMsg>, ThrottleError> {
        self.slot.get().ok_or(ThrottleError::Unavailable)
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, crate::port::PortError>>) -> ThrottleMsg,
    ) -> Result<T, ThrottleError> {
        let actor = self.actor()?;
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .send_message(build(tx.into()))
            .map_err(|_| ThrottleError::Unavailable)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(port))) => Err(ThrottleError::Port(port.0)),
            _ => Err(ThrottleError::Unavailable),
        }
    }

    pub async fn admit(&self, request: SendRequest) -> Result<Admission, ThrottleError> {
        self.ask(|reply| ThrottleMsg::Admit(request, reply)).await
    }

    pub async fn state(&self, email: Email) -> Result<Vec<TypeState>, ThrottleError> {
        self.ask(|reply| ThrottleMsg::State(email, reply)).await
    }

    pub async fn reset(
        &self,
        email: Email,
        email_type: Option<EmailType>,
    ) -> Result<u64, ThrottleError> {
        self.ask(|reply| ThrottleMsg::Reset(email, email_type, reply))
            .await
    }
}
