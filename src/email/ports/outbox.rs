//! The dispatcher's port: claims rows of the outbox, renders each email through the
//! templates (and a report's PDF), sends it through the provider and records the outcome.

use std::sync::Arc;
use std::time::Duration;

use herald_actors::clock::SharedClock;
use herald_actors::dispatcher::{Attempt, Claimed, DispatchObserver, DispatchPort, Mark};
use herald_actors::email::EmailType;
use herald_actors::port::PortError;

use super::{HandOff, Reports, port_error, store_error};
use crate::email::message::{self, Outgoing};
use crate::email::{Mailer, Signer};
use crate::store::group_commit::GroupCommit;
use crate::store::outbox;
use crate::store::{Store, sessions};
use crate::templates;

/// The dispatcher's port: the outbox, the templates and the mail provider.
pub struct OutboxPort {
    pub store: Store,
    /// Writes delivery outcomes with group commit.
    pub writes: GroupCommit,
    /// Rows handed from `claim` to `deliver`, with the instant of the claim, so the row is
    /// not read twice.
    pub claimed: HandOff<(outbox::Delivery, i64)>,
    /// Summaries handed over by `/complete`, so the session is not read again.
    pub reports: Arc<Reports>,
    pub mailer: Mailer,
    /// Signs what the provider sends, when DKIM is configured.
    pub dkim: Option<crate::config::Dkim>,
    pub signer: Signer,
    /// The sender, parsed once at start.
    pub from: lettre::message::Mailbox,
    /// Where a reply goes, when not to the sender.
    pub reply_to: Option<lettre::message::Mailbox>,
    /// The sender's identifier in Gmail's feedback loop (`EMAIL_FEEDBACK_ID`).
    pub feedback_id: Option<String>,
    pub api_base_url: String,
    /// This replica's name, written on the rows it claims.
    pub instance: String,
    /// The emails' templates.
    pub templates: Arc<templates::Templates>,
    pub clock: SharedClock,
    /// The zone each digest's days are counted in.
    pub digest_zones: crate::store::preferences::DigestZones,
}

/// How long the preference a claim read is trusted. A row that waited longer for a send
/// slot (sends queued behind a slow server) reads it again, so an unsubscribe stops a queued
/// email that has not started within a second.
const CLAIMED_PREFERENCE_TRUSTED_MS: i64 = 1_000;

impl OutboxPort {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    fn sender_domain(&self) -> &str {
        self.from.email.domain()
    }

    async fn build(&self, claimed: &Claimed) -> Result<Result<Outgoing, Attempt>, PortError> {
        // The claim returned the row's fields; a row claimed by an earlier incarnation, one
        // that waited too long for the preference its claim read, or one missing from the
        // hand-off for any reason, is read back.
        let handed_over = self
            .claimed
            .take(&claimed.id)
            .filter(|(_, claimed_at)| self.now_ms() - claimed_at <= CLAIMED_PREFERENCE_TRUSTED_MS)
            .map(|(delivery, _)| delivery);
        let delivery = match handed_over {
            Some(delivery) => Some(delivery),
            None => outbox::delivery(&self.store, &claimed.id)
                .await
                .map_err(port_error)?,
        };
        let Some(delivery) = delivery else {
            return Ok(Err(Attempt::Permanent(
                "the ledger row disappeared".to_owned(),
            )));
        };
        let (enabled, recipient_key) = delivery.preference.clone().unwrap_or((true, None));
        if !enabled {
            return Ok(Err(Attempt::Suppressed));
        }
        let recipient_key =
            recipient_key.ok_or_else(|| PortError::new("the recipient has no preferences row"))?;
        let token = self.signer.token(&recipient_key);
        let unsubscribe_url = format!(
            "{}/api/v1/email/unsubscribe/{token}?type={}",
            self.api_base_url, delivery.email_type
        );
        let preferences_url = format!(
            "{}/api/v1/email/preferences/page/{token}",
            self.api_base_url
        );
        let links = templates::Links {
            unsubscribe: &unsubscribe_url,
            preferences: &preferences_url,
        };
        let message_id = message::message_id(&delivery.idempotency_key, self.sender_domain());
        let email_type = match delivery.email_type.parse::<EmailType>() {
            Ok(email_type) => email_type,
            Err(unknown) => return Ok(Err(Attempt::Permanent(unknown.to_string()))),
        };
        // Worded in the recipient's language when the deployment has templates of it.
        let templates = self
            .templates
            .for_locale(delivery.recipient_locale.as_deref());
        let (rendered, attachment) = match email_type {
            EmailType::SessionReport => {
                let session_id = delivery.session_id.clone().unwrap_or_default();
                let now = self.now_ms();
                let summary = match self.reports.take(&delivery.idempotency_key) {
                    Some(summary) => Some(summary),
                    None => sessions::summary(&self.store, &session_id, now)
                        .await
                        .map_err(port_error)?,
                };
                let Some(summary) = summary else {
                    return Ok(Err(Attempt::Permanent(
                        "the session no longer exists".to_owned(),
                    )));
                };
                let rendered = match templates.session_report(&summary, links) {
                    Ok(rendered) => rendered,
                    Err(err) => return Ok(Err(Attempt::Permanent(err))),
                };
                // A report renders in well under a millisecond: no need for a blocking thread.
                (
                    rendered,
                    Some((
                        format!("session-report-{session_id}.pdf"),
                        templates.report_pdf(
                            &summary,
                            self.digest_zones
                                .reading(delivery.recipient_zone.as_deref()),
                        ),
                    )),
                )
            }
            EmailType::WeeklyDigest => {
                let raw_week = delivery.week_start.clone().unwrap_or_default();
                let Some(week_start) = crate::reports::week::parse_date(&raw_week) else {
                    return Ok(Err(Attempt::Permanent(format!(
                        "bad week_start '{raw_week}'"
                    ))));
                };
                // The days of the week the run chose the recipient for: its zone's, also
                // when the recipient has moved since. (A digest queued before the ledger
                // kept the zone follows the recipient's.)
                let zone = match delivery.zone.as_deref().and_then(|z| z.parse().ok()) {
                    Some(zone) => zone,
                    None => self
                        .digest_zones
                        .of(&self.store, &delivery.email)
                        .await
                        .map_err(port_error)?,
                };
                let digest = crate::store::activity::recipient_digest(
                    &self.store,
                    &delivery.email,
                    week_start,
                    zone,
                )
                .await
                .map_err(port_error)?;
                let Some(digest) = digest else {
                    return Ok(Err(Attempt::Permanent(
                        "no activity left for that week".to_owned(),
                    )));
                };
                match templates.weekly_digest(&digest, links) {
                    Ok(rendered) => (rendered, None),
                    Err(err) => return Ok(Err(Attempt::Permanent(err))),
                }
            }
        };
        Ok(Ok(Outgoing {
            reference: self.signer.reference(&claimed.id),
            from: self.from.clone(),
            reply_to: self.reply_to.clone(),
            feedback_id: self
                .feedback_id
                .as_deref()
                .map(|sender| message::feedback_id(email_type.as_str(), sender)),
            to: delivery.email,
            message_id,
            unsubscribe_url,
            rendered,
            pdf: attachment,
        }))
    }

    /// A permanent refusal of a send: a hard bounce suppresses the address for every email
    /// type; a policy refusal is counted (and alerted on) but leaves the address alone.
    async fn refused(&self, recipient: &str, reply: &str) {
        match crate::email::smtp::refusal(reply) {
            crate::email::smtp::Refusal::HardBounce => {
                let suppressed = crate::email::events::hard_bounce(
                    &self.store,
                    recipient,
                    crate::store::suppressions::FROM_SMTP,
                    Some(reply),
                    self.now_ms(),
                )
                .await;
                match suppressed {
                    Ok(_) => tracing::warn!(
                        recipient = %crate::redact::mask_email(recipient),
                        "hard bounce: the address is suppressed"
                    ),
                    Err(err) => tracing::error!(error = %err, "could not record a hard bounce"),
                }
            }
            crate::email::smtp::Refusal::Policy => {
                crate::metrics::email_policy_refusal();
                tracing::warn!(%reply, "the mail server refused an email by policy");
            }
            crate::email::smtp::Refusal::Other => {}
        }
    }
}

impl DispatchPort for OutboxPort {
    async fn claim(
        &self,
        limit: usize,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<Claimed>, PortError> {
        let rows = outbox::claim(&self.store, limit, now_ms, lease_ms, &self.instance)
            .await
            .map_err(store_error)?;
        for row in &rows {
            self.claimed
                .put(row.id.clone(), (row.delivery.clone(), now_ms));
        }
        Ok(rows
            .into_iter()
            .map(|row| Claimed {
                id: row.id,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                created_at: row.created_at,
                email_type: row.email_type,
                lease_until: row.lease_until,
            })
            .collect())
    }

    async fn recover(&self) -> Result<u64, PortError> {
        // What this process's earlier dispatcher, or an earlier run under the same name,
        // left mid-send goes out now, once more at most, with the same Message-ID. One
        // process serves a SQLite file (the serve lock), so there every such row is ours; on
        // PostgreSQL, the rows that carry our name.
        self.claimed.clear();
        match self.store.backend() {
            crate::store::Backend::Sqlite => outbox::reclaim_all(&self.store).await,
            crate::store::Backend::Postgres => {
                outbox::reclaim_own(&self.store, &self.instance).await
            }
        }
        .map_err(port_error)
    }

    async fn release(&self, claimed: &[Claimed]) -> Result<(), PortError> {
        for row in claimed {
            self.claimed.take(&row.id);
        }
        let leases: Vec<(&str, i64)> = claimed
            .iter()
            .map(|row| (row.id.as_str(), row.lease_until))
            .collect();
        outbox::release(&self.store, &leases)
            .await
            .map_err(port_error)
    }

    async fn deliver(&self, claimed: &Claimed) -> Attempt {
        match self.build(claimed).await {
            Ok(Ok(outgoing)) => {
                let recipient = outgoing.to.clone();
                let attempt = self.mailer.send(outgoing, self.dkim.as_ref()).await;
                if let Attempt::Permanent(reply) = &attempt {
                    self.refused(&recipient, reply).await;
                }
                attempt
            }
            Ok(Err(attempt)) => attempt,
            // The database hiccupped: try again later, as for a busy mail server.
            Err(err) => Attempt::Transient(err.message),
        }
    }

    async fn mark(&self, claimed: &Claimed, mark: &Mark, now_ms: i64) -> Result<(), PortError> {
        self.writes
            .run(vec![outbox::mark_statement(
                claimed.id.clone(),
                mark.clone(),
                now_ms,
            )])
            .await
            .map(drop)
            // A database that is away is waited for, while the row's lease lasts.
            .map_err(|err| store_error(err.into()))
    }

    async fn depth(&self) -> Result<u64, PortError> {
        outbox::depth(&self.store).await.map_err(port_error)
    }
}

/// Feeds the dispatcher's progress to the service metrics.
pub struct MetricsObserver;

impl DispatchObserver for MetricsObserver {
    fn attempted(&self, claimed: &Claimed, mark: &Mark, elapsed: Duration) {
        let outcome = match mark {
            Mark::Sent { .. } => "sent",
            Mark::Suppressed => "suppressed",
            Mark::Retry { .. } => "retried",
            Mark::Failed { .. } => "failed",
        };
        crate::metrics::email_attempt(&claimed.email_type, outcome, elapsed);
    }

    fn depth(&self, depth: u64) {
        crate::metrics::email_outbox_depth(depth);
    }

    fn provider_up(&self, up: bool) {
        crate::metrics::email_provider_up(up);
    }

    fn panicked(&self, claimed: &Claimed, message: &str) {
        let message = crate::redact::mask_emails_in(message);
        tracing::error!(id = %claimed.id, panic = %message, "sending an email panicked; it is failed");
        sentry::with_scope(
            |scope| scope.set_tag("email_type", &claimed.email_type),
            || {
                sentry::capture_message(
                    &format!("sending an email panicked: {message}"),
                    sentry::Level::Error,
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use herald_actors::clock::ManualClock;
    use herald_actors::email::{Email, SessionId};

    use super::*;
    use crate::reports::{SessionRecord, summarize};
    use crate::secret::Secret;
    use crate::store::outbox::LedgerKey;
    use crate::store::preferences::{self, Unsubscribe};

    const START_MS: i64 = 1_700_000_000_000;
    const LEASE_MS: i64 = 120_000;

    /// An outbox port over a fresh SQLite store, mailing to the console, on a clock the test
    /// moves.
    async fn port(dir: &tempfile::TempDir) -> (OutboxPort, ManualClock) {
        let store = Store::connect(&format!("sqlite://{}/herald.db", dir.path().display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let clock = ManualClock::new(START_MS as u64);
        let port = OutboxPort {
            writes: GroupCommit::spawn(store.clone()),
            store,
            claimed: HandOff::default(),
            reports: Arc::default(),
            mailer: Mailer::Console,
            dkim: None,
            signer: Signer::new((1, Secret::new("k".repeat(32))), Vec::new()),
            from: "reports@herald.example.org".parse().unwrap(),
            reply_to: None,
            feedback_id: None,
            api_base_url: "https://herald.example.org".to_owned(),
            instance: "test:1".to_owned(),
            templates: Arc::new(templates::Templates::shipped("herald", "")),
            clock: Arc::new(clock.clone()),
            digest_zones: crate::store::preferences::DigestZones {
                service: chrono_tz::UTC,
                local: true,
            },
        };
        (port, clock)
    }

    /// Queues a session report for `email`, its summary handed over as `/complete` does.
    async fn queue_report(port: &OutboxPort, email: &str) {
        let session = SessionId::random();
        let session_id = session.to_string();
        let idempotency_key = herald_actors::email::IdempotencyKey::session_report(
            &Email::parse(email).unwrap(),
            &session,
        )
        .as_str()
        .to_owned();
        let key = LedgerKey {
            idempotency_key: &idempotency_key,
            email,
            email_type: "session_reports",
            session_id: Some(&session_id),
            week_start: None,
            zone: None,
        };
        port.writes
            .run(outbox::enqueue_statements(&key, START_MS, START_MS))
            .await
            .unwrap();
        let session = SessionRecord {
            id: session_id.clone(),
            learner_name: Some("Ada".to_owned()),
            subject: Some("Fractions".to_owned()),
            started_at_ms: START_MS - 90_000,
            completed_at_ms: Some(START_MS),
        };
        port.reports
            .put(idempotency_key, summarize(&session, &[], START_MS));
    }

    async fn unsubscribe(port: &OutboxPort, email: &str) {
        let recipient_key: String =
            sqlx::query_scalar("SELECT recipient_key FROM email_preferences WHERE email = $1")
                .bind(email)
                .fetch_one(port.store.reader())
                .await
                .unwrap();
        let now = port.now_ms();
        assert!(
            preferences::unsubscribe(
                &port.store,
                &recipient_key,
                Unsubscribe::SessionReports,
                now
            )
            .await
            .unwrap()
            .is_some_and(|(_, changed)| changed)
        );
    }

    #[tokio::test]
    async fn a_queued_email_that_waited_past_the_claims_reading_checks_the_preference_again() {
        let dir = tempfile::tempdir().unwrap();
        let (port, clock) = port(&dir).await;
        let (gone, quick, stays) = ("gone@example.com", "quick@example.com", "stays@example.com");
        for email in [gone, quick, stays] {
            queue_report(&port, email).await;
        }
        let claimed = port.claim(3, START_MS, LEASE_MS).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let mut rows = HashMap::new();
        for row in claimed {
            let email: String =
                sqlx::query_scalar("SELECT email FROM email_send_logs WHERE id = $1")
                    .bind(&row.id)
                    .fetch_one(port.store.reader())
                    .await
                    .unwrap();
            rows.insert(email, row);
        }
        let row = |email: &str| &rows[email];
        // Both unsubscribe after the claim read their preference.
        unsubscribe(&port, gone).await;
        unsubscribe(&port, quick).await;

        // Within the trusted second the claim's reading stands: no read for the send.
        clock.advance_ms(CLAIMED_PREFERENCE_TRUSTED_MS as u64);
        assert!(matches!(
            port.deliver(row(quick)).await,
            Attempt::Sent { .. }
        ));

        // Past it, the preference is read again: the unsubscribe stops the email, and a
        // recipient who did not unsubscribe is still sent theirs, read back whole.
        clock.advance_ms(1);
        assert_eq!(port.deliver(row(gone)).await, Attempt::Suppressed);
        assert!(matches!(
            port.deliver(row(stays)).await,
            Attempt::Sent { .. }
        ));
        port.store.close().await;
    }

    /// An email queued for a spelling herald learnt of after the parent opted out under
    /// another (by a replica of the version before, say) is stopped by the claim, and by the
    /// reading a send makes again.
    #[tokio::test]
    async fn an_opt_out_under_another_spelling_stops_a_queued_email() {
        let dir = tempfile::tempdir().unwrap();
        let (port, _clock) = port(&dir).await;
        queue_report(&port, "Parent@example.com").await;
        unsubscribe(&port, "Parent@example.com").await;
        queue_report(&port, "parent@example.com").await;
        queue_report(&port, "other@example.com").await;
        let claimed = outbox::claim(&port.store, 3, START_MS, LEASE_MS, "test:1")
            .await
            .unwrap();
        let mut wanted = Vec::new();
        for row in &claimed {
            let again = outbox::delivery(&port.store, &row.id)
                .await
                .unwrap()
                .unwrap();
            wanted.push((
                row.delivery.email.as_str(),
                row.delivery.preference.as_ref().map(|p| p.0),
                again.preference.map(|p| p.0),
            ));
        }
        wanted.sort();
        assert_eq!(
            wanted,
            [
                ("Parent@example.com", Some(false), Some(false)),
                ("other@example.com", Some(true), Some(true)),
                ("parent@example.com", Some(false), Some(false)),
            ]
        );
        port.store.close().await;
    }
}
