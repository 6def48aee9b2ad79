//! Bounces, complaints and deferrals reported after sending, from any source (SendGrid's
//! Event Webhook, the generic signed webhook), turned into suppressions: a hard bounce or a
//! complaint suppresses the address at once; soft bounces do once `SOFT_BOUNCE_LIMIT` of
//! them fall within `SOFT_BOUNCE_WINDOW_DAYS`. Each event is applied once, however often it
//! is delivered.

use crate::config::EventsConfig;
use crate::store::suppressions::{self, Event, Reason};
use crate::store::{Store, StoreError};

/// What was reported about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The mailbox does not exist.
    HardBounce,
    /// A temporary refusal (full mailbox, a blocked message).
    SoftBounce,
    /// The recipient marked the email as spam.
    Complaint,
    /// Delivery is being retried by the provider.
    Deferred,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HardBounce => "hard_bounce",
            Self::SoftBounce => "soft_bounce",
            Self::Complaint => "complaint",
            Self::Deferred => "deferred",
        }
    }
}

/// One reported event.
pub struct Reported<'a> {
    /// The source's own id for the event, or a digest of what identifies it.
    pub id: &'a str,
    pub email: &'a str,
    pub kind: Kind,
    pub source: &'static str,
    pub detail: Option<&'a str>,
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Seen before: nothing changed.
    Repeated,
    /// Recorded; the address was suppressed by it.
    Suppressed,
    /// Recorded; the address stays.
    Recorded,
}

/// A hard bounce of `email` reported by `source`: counted, and the address suppressed for
/// every email type. True when this added the suppression.
pub async fn hard_bounce(
    store: &Store,
    email: &str,
    source: &str,
    detail: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    crate::metrics::email_bounce("hard");
    suppressions::suppress(store, email, Reason::Bounced, source, detail, now_ms).await
}

pub async fn apply(
    store: &Store,
    config: &EventsConfig,
    event: &Reported<'_>,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let fresh = suppressions::record_event(
        store,
        &Event {
            id: &format!("{}:{}", event.source, event.id),
            email: event.email,
            kind: event.kind.as_str(),
            source: event.source,
            detail: event.detail,
            at_ms: now_ms,
        },
    )
    .await?;
    if !fresh {
        return Ok(Applied::Repeated);
    }
    let suppress = |reason, detail: Option<String>| async move {
        suppressions::suppress(
            store,
            event.email,
            reason,
            event.source,
            detail.as_deref(),
            now_ms,
        )
        .await
        .map(|_| Applied::Suppressed)
    };
    match event.kind {
        Kind::HardBounce => hard_bounce(store, event.email, event.source, event.detail, now_ms)
            .await
            .map(|_| Applied::Suppressed),
        Kind::Complaint => {
            crate::metrics::email_complaint();
            suppress(Reason::Complained, event.detail.map(str::to_owned)).await
        }
        Kind::SoftBounce => {
            crate::metrics::email_bounce("soft");
            let window = i64::try_from(config.soft_bounce_window.as_millis()).unwrap_or(i64::MAX);
            let recent = suppressions::count_events(
                store,
                event.email,
                Kind::SoftBounce.as_str(),
                now_ms.saturating_sub(window),
            )
            .await?;
            if recent >= i64::from(config.soft_bounce_limit) {
                let detail = format!(
                    "{recent} soft bounces in {} days",
                    config.soft_bounce_window.as_secs() / 86_400
                );
                suppress(Reason::Bounced, Some(detail)).await
            } else {
                Ok(Applied::Recorded)
            }
        }
        Kind::Deferred => Ok(Applied::Recorded),
    }
}
