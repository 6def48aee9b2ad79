//! A recipient as herald knows them: everything kept about a parent's address, and its
//! erasure (every row that names the address, and the sessions with their learners' names
//! and events that were reported to it, in one transaction).

use super::audit::{self, AuditEntry};
use super::erased::{self, OptOuts};
use super::ledger::{self, LedgerRow};
use super::preferences::{self, Preferences, Recorded};
use super::{Store, StoreError, sessions};
use crate::reports::SessionSummary;

/// Everything herald keeps about one address.
#[derive(Debug, Clone)]
pub struct Record {
    /// What it receives now (everything, when herald keeps no preferences for it or its
    /// other spellings), and its suppression: as decided with its other spellings, since an
    /// opt-out or a suppression under any of them holds for all.
    pub preferences: Preferences,
    /// Whether the address itself is on the suppression list (`preferences.suppressed` may
    /// be another spelling's).
    pub suppressed_itself: bool,
    /// Every change to them, oldest first.
    pub changes: Vec<Recorded>,
    /// The sessions reported to it, oldest first (an open one timed at `now_ms`).
    pub sessions: Vec<SessionSummary>,
    /// Its send ledger, newest first.
    pub emails: Vec<LedgerRow>,
    /// Addresses herald keeps that are this one with other capitals before the `@` (see
    /// [`other_spellings`]).
    pub other_spellings: Vec<String>,
    /// What an erasure of the address (any spelling) kept of its opt-outs, and when it was
    /// erased; `preferences` already counts it.
    pub kept_from_erasure: Option<(OptOuts, i64)>,
}

impl Record {
    /// Whether herald keeps nothing about the address: never mailed, never given
    /// preferences, never suppressed, no session reported to it (an opt-out kept from its
    /// erasure aside).
    pub fn is_empty(&self) -> bool {
        self.preferences.recipient_key.is_none()
            && !self.suppressed_itself
            && self.changes.is_empty()
            && self.sessions.is_empty()
            && self.emails.is_empty()
    }
}

/// The addresses herald keeps (a recipient it mailed, or one suppressed) that differ from
/// `email` only in the case of their letters. The part before the `@` may be
/// case-sensitive, so herald keeps `Parent@example.com` and `parent@example.com` apart; an
/// operator who looks one up, or erases it, is shown the other.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn other_spellings(store: &Store, email: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT email FROM email_preferences WHERE lower(email) = lower($1) AND email <> $1 \
         UNION SELECT email FROM email_suppressions WHERE lower(email) = lower($1) AND email <> $1 \
         ORDER BY 1",
    )
    .bind(email)
    .fetch_all(store.reader())
    .await?)
}

/// What herald keeps about `email`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record(store: &Store, email: &str, now_ms: i64) -> Result<Record, StoreError> {
    let mut summaries = Vec::new();
    for id in sessions::of_parent(store, email).await? {
        if let Some(summary) = sessions::summary(store, &id, now_ms).await? {
            summaries.push(summary);
        }
    }
    // This spelling's own: another's stops its mail too, and shows in its preferences.
    let suppressions: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM email_suppressions WHERE email = $1")
            .bind(email)
            .fetch_one(store.reader())
            .await?;
    Ok(Record {
        preferences: preferences::in_force(store, email).await?,
        suppressed_itself: suppressions > 0,
        changes: preferences::changes(store, email).await?,
        sessions: summaries,
        emails: ledger::for_email(store, email, i64::MAX).await?,
        other_spellings: other_spellings(store, email).await?,
        kept_from_erasure: erased::kept(store, email).await?,
    })
}

/// Rows deleted per table (by a dry run: that would be).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Sessions whose parent address it was, with their learners' names.
    pub sessions: u64,
    pub session_events: u64,
    /// The send ledger: sent, queued and failed emails alike (an email in the middle of
    /// being sent still goes; its outcome then has no row to land in).
    pub email_send_logs: u64,
    pub email_throttles: u64,
    pub email_preferences: u64,
    pub preference_changes: u64,
    /// A suppression goes too: the address is then unknown to herald.
    pub email_suppressions: u64,
    pub email_events: u64,
}

/// Deletes everything herald keeps about `email`, but for what it had turned off (or a
/// suppression had stopped), which is kept under a one-way hash of the address (see
/// [`erased`]); audited under `actor` in the same transaction (the address masked). Returns
/// the rows deleted and what is kept. With `dry_run` it all runs and is rolled back, so the
/// counts are exact and nothing changes.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn erase(
    store: &Store,
    email: &str,
    actor: &str,
    dry_run: bool,
    at_ms: i64,
) -> Result<(Erased, OptOuts), StoreError> {
    let mut tx = store.writer().begin().await?;
    // What is kept is read from the address's spellings, which a change may be turning on.
    preferences::lock_spellings(store.backend(), &mut tx, email).await?;
    let kept = erased::keep(&mut tx, email, at_ms).await?;
    // The address's other spellings herald keeps: what it stopped before the erasure it
    // goes on stopping there, recorded as the erasure's doing.
    for (field, off) in [
        ("weekly_digest_enabled", kept.weekly_digest),
        ("session_reports_enabled", kept.session_reports),
    ] {
        if off {
            preferences::switch_other_spellings(
                &mut tx,
                email,
                field,
                false,
                preferences::Source::Erasure,
                at_ms,
            )
            .await?;
        }
    }
    let mut delete = async |sql: &'static str| {
        Ok::<u64, StoreError>(
            sqlx::query(sql)
                .bind(email)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        )
    };
    let erased = Erased {
        session_events: delete(
            "DELETE FROM session_events WHERE session_id IN \
             (SELECT id FROM sessions WHERE parent_email = $1)",
        )
        .await?,
        sessions: delete("DELETE FROM sessions WHERE parent_email = $1").await?,
        email_send_logs: delete("DELETE FROM email_send_logs WHERE email = $1").await?,
        email_throttles: delete("DELETE FROM email_throttles WHERE email = $1").await?,
        email_preferences: delete("DELETE FROM email_preferences WHERE email = $1").await?,
        preference_changes: delete("DELETE FROM preference_changes WHERE email = $1").await?,
        email_suppressions: delete("DELETE FROM email_suppressions WHERE email = $1").await?,
        email_events: delete("DELETE FROM email_events WHERE email = $1").await?,
    };
    if dry_run {
        tx.rollback().await?;
        return Ok((erased, kept));
    }
    audit::record(
        &mut tx,
        AuditEntry {
            actor,
            action: "recipient.erase",
            target: &crate::redact::mask_email(email),
            old_value: None,
            new_value: Some(
                serde_json::json!({ "erased": erased, "opt_outs_kept": kept }).to_string(),
            ),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((erased, kept))
}
