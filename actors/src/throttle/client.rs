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

/// Talks to the throttle shards; a recipient always goes to the same shard, so every
/// decision about one recipient is still taken one at a time.
#[derive(Clone)]
pub struct ThrottleClient {
    shards: Vec<ChildSlot>,
    timeout: Duration,
}

impl ThrottleClient {
    pub fn new(shards: Vec<ChildSlot>, timeout: Duration) -> Self {
        assert!(!shards.is_empty(), "the throttle needs at least one shard");
        Self { shards, timeout }
    }

    fn actor(&self, email: &Email) -> Result<ActorRef<ThrottleMsg>, ThrottleError> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        email.as_str().hash(&mut hasher);
        let shard = (hasher.finish() % self.shards.len() as u64) as usize;
        self.shards[shard].get().ok_or(ThrottleError::Unavailable)
    }

    async fn ask<T: Send + 'static>(
        &self,
        email: &Email,
        build: impl FnOnce(ractor::RpcReplyPort<Result<T, crate::port::PortError>>) -> ThrottleMsg,
    ) -> Result<T, ThrottleError> {
        let actor = self.actor(email)?;
        let (tx, rx) = ractor::concurrency::oneshot();
        actor
            .send_message(build(tx.into()))
            .map_err(|_| ThrottleError::Unavailable)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(port))) => Err(ThrottleError::Port(port.message)),
            _ => Err(ThrottleError::Unavailable),
        }
    }

    pub async fn admit(&self, request: SendRequest) -> Result<Admission, ThrottleError> {
        let email = request.email.clone();
        self.ask(&email, |reply| ThrottleMsg::Admit(request, reply))
            .await
    }

    pub async fn state(&self, email: Email) -> Result<Vec<TypeState>, ThrottleError> {
        self.ask(&email.clone(), |reply| ThrottleMsg::State(email, reply))
            .await
    }

    pub async fn reset(
        &self,
        email: Email,
        email_type: Option<EmailType>,
    ) -> Result<u64, ThrottleError> {
        self.ask(&email.clone(), |reply| {
            ThrottleMsg::Reset(email, email_type, reply)
        })
        .await
    }
}
