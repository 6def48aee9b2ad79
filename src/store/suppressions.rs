//! The suppression list (`email_suppressions`): addresses herald no longer mails after a
//! hard bounce or a complaint, whatever their preferences say; and the bounce and complaint
//! events behind it (`email_events`), kept once each so a repeated delivery of one event
//! changes nothing.

use sqlx::Row;

use super::audit::{self, AuditEntry};
use super::{Store, StoreError};

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The mailbox does not exist or is disabled (a hard bounce).
    Bounced,
    /// The recipient marked an email as spam.
    Complained,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bounced => "bounced",
            Self::Complained => "complained",
        }
    }

    /// `bounced` or `complained`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "bounced" => Some(Self::Bounced),
            "complained" => Some(Self::Complained),
            _ => None,
        }
    }
}

/// One suppressed address: why, since when, from which source.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Suppression {
    pub email: String,
    /// `bounced` or `complained`.
    pub reason: String,
    /// Where it came from: `smtp`, `sendgrid`, `webhook`, or `operator` (added by hand).
    pub source: String,
    /// The provider's words (an SMTP reply, an event's reason).
    pub detail: Option<String>,
    pub created_at_ms: i64,
}

/// Suppresses `email`; an address already suppressed, under this spelling or another (each
/// of which stops its mail), keeps its first reason. True when this call added it.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn suppress(
    store: &Store,
    email: &str,
    reason: Reason,
    source: &str,
    detail: Option<&str>,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let done = insert(email, reason, source, detail, at_ms)
        .execute(store.writer())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The statement that suppresses `email` unless it is already, under any spelling: the list
/// holds an address once, so a lookup, a lift and the counts of an addition see one row.
fn insert<'q>(
    email: &'q str,
    reason: Reason,
    source: &'q str,
    detail: Option<&'q str>,
    at_ms: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "INSERT INTO email_suppressions (email, reason, source, detail, created_at) \
         SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
         (SELECT 1 FROM email_suppressions WHERE lower(email) = lower($1)) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(email)
    .bind(reason.as_str())
    .bind(source)
    .bind(detail.map(super::kept_text))
    .bind(at_ms)
}

/// An address an operator adds to the list: from another sender's bounces and complaints
/// when moving to herald, or one known not to want or take mail.
pub struct Addition {
    pub email: String,
    pub reason: Reason,
    pub detail: Option<String>,
}

/// What an addition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Added {
    /// Addresses now suppressed that were not.
    pub added: u64,
    /// Addresses that were suppressed already, under any spelling; each keeps its first
    /// reason.
    pub already_suppressed: u64,
    /// Whether these are only the counts the addition would give, with nothing changed.
    pub dry_run: bool,
}

/// The longest `detail` an operator gives an address they add, in characters.
pub const DETAIL_MAX: usize = 200;

/// The source of an address an operator added.
pub const BY_OPERATOR: &str = "operator";
/// The source of a hard bounce the mail server gave during the SMTP conversation.
pub const FROM_SMTP: &str = "smtp";
/// The source of a bounce or complaint from the generic events webhook.
pub const FROM_WEBHOOK: &str = "webhook";
/// The source of a bounce or complaint from SendGrid's Event Webhook.
pub const FROM_SENDGRID: &str = "sendgrid";

/// Every source of a suppression.
pub const SOURCES: [&str; 4] = [FROM_SMTP, FROM_WEBHOOK, FROM_SENDGRID, BY_OPERATOR];

/// Which suppressions a list shows; `None` for any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    /// The address under any spelling (the same address but for capitals).
    pub email: Option<&'a str>,
    pub reason: Option<Reason>,
    /// One of [`SOURCES`].
    pub source: Option<&'a str>,
}

/// Suppresses every address of `additions` in one transaction, audited with it
/// (`suppression.add`, the address masked, or how many for more than one): all or none. An
/// address named twice, under any spelling, counts once, with its first reason and
/// spelling. With `dry_run` the transaction is rolled back and nothing is audited: the
/// counts are those the addition would give.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn add(
    store: &Store,
    additions: &[Addition],
    actor: &str,
    at_ms: i64,
    dry_run: bool,
) -> Result<Added, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let additions: Vec<&Addition> = additions
        .iter()
        .filter(|addition| seen.insert(addition.email.to_lowercase()))
        .collect();
    let mut tx = store.writer().begin().await?;
    let mut added = 0;
    for addition in &additions {
        added += insert(
            &addition.email,
            addition.reason,
            BY_OPERATOR,
            addition.detail.as_deref(),
            at_ms,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    let done = Added {
        added,
        already_suppressed: additions.len() as u64 - added,
        dry_run,
    };
    if dry_run {
        tx.rollback().await?;
        return Ok(done);
    }
    let emails: Vec<&str> = additions.iter().map(|a| a.email.as_str()).collect();
    audit::record(
        &mut tx,
        AuditEntry {
            actor,
            action: "suppression.add",
            target: &audit::addresses_target(&emails),
            old_value: None,
            new_value: Some(format!(
                "{} added, {} already suppressed",
                done.added, done.already_suppressed
            )),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

fn suppression(row: &sqlx::any::AnyRow) -> Result<Suppression, sqlx::Error> {
    Ok(Suppression {
        email: row.try_get(0)?,
        reason: row.try_get(1)?,
        source: row.try_get(2)?,
        detail: row.try_get(3)?,
        created_at_ms: row.try_get(4)?,
    })
}

/// The condition of [`list`]'s `filter`: the address (`$1`, under any spelling, each of which
/// stops its mail), the reason (`$2`) and the source (`$3`), each when given.
const MATCHING: &str = "($1 IS NULL OR lower(email) = lower($1)) \
     AND ($2 IS NULL OR reason = $2) AND ($3 IS NULL OR source = $3)";

/// Suppressed addresses that match `filter`, newest first; and how many match.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    store: &Store,
    filter: Filter<'_>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Suppression>, i64), StoreError> {
    let reason = filter.reason.map(Reason::as_str);
    let rows = sqlx::query(&format!(
        "SELECT email, reason, source, detail, created_at FROM email_suppressions \
         WHERE {MATCHING} ORDER BY created_at DESC, email LIMIT $4 OFFSET $5"
    ))
    .bind(filter.email)
    .bind(reason)
    .bind(filter.source)
    .bind(limit)
    .bind(offset)
    .fetch_all(store.reader())
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM email_suppressions WHERE {MATCHING}"
    ))
    .bind(filter.email)
    .bind(reason)
    .bind(filter.source)
    .fetch_one(store.reader())
    .await?;
    let list = rows
        .iter()
        .map(suppression)
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((list, total))
}

/// The suppressed addresses that match `filter`, in the order of the addresses, the first
/// `limit` of those after `after` (from the first when `None`). Paging by the last address
/// read, an export neither skips nor repeats an address that stays on the list while it runs.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn addresses(
    store: &Store,
    filter: Filter<'_>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT email FROM email_suppressions WHERE {MATCHING} \
         AND ($4 IS NULL OR email > $4) ORDER BY email LIMIT $5"
    ))
    .bind(filter.email)
    .bind(filter.reason.map(Reason::as_str))
    .bind(filter.source)
    .bind(after)
    .bind(limit)
    .fetch_all(store.reader())
    .await?)
}

/// Lifts the suppression of `email` under every spelling (each of which stops its mail),
/// each audited in the same transaction; the one it removed, that of the spelling given
/// when there was one.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn lift(
    store: &Store,
    email: &str,
    actor: &str,
) -> Result<Option<Suppression>, StoreError> {
    let mut tx = store.writer().begin().await?;
    let rows = sqlx::query(
        "DELETE FROM email_suppressions WHERE lower(email) = lower($1) \
         RETURNING email, reason, source, detail, created_at",
    )
    .bind(email)
    .fetch_all(&mut *tx)
    .await?;
    let mut lifted = rows
        .iter()
        .map(suppression)
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    for gone in &lifted {
        audit::record(
            &mut tx,
            AuditEntry {
                actor,
                action: "suppression.lift",
                target: &crate::redact::mask_email(&gone.email),
                old_value: Some(format!("{} ({})", gone.reason, gone.source)),
                new_value: None,
            },
        )
        .await?;
    }
    tx.commit().await?;
    lifted.sort_by_key(|gone| gone.email != email);
    Ok(lifted.into_iter().next())
}

/// One bounce, complaint or deferral as reported.
pub struct Event<'a> {
    /// The provider's event id, or a digest of what identifies the event.
    pub id: &'a str,
    pub email: &'a str,
    pub kind: &'a str,
    pub source: &'a str,
    pub detail: Option<&'a str>,
    pub at_ms: i64,
}

/// Records `event` once: false when it was recorded before (a repeated delivery).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record_event(store: &Store, event: &Event<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO email_events (id, email, kind, source, detail, at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.email)
    .bind(event.kind)
    .bind(event.source)
    .bind(event.detail.map(super::kept_text))
    .bind(event.at_ms)
    .execute(store.writer())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How many events of `kind` `email` had since `since_ms`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn count_events(
    store: &Store,
    email: &str,
    kind: &str,
    since_ms: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM email_events WHERE email = $1 AND kind = $2 AND at >= $3",
    )
    .bind(email)
    .bind(kind)
    .bind(since_ms)
    .fetch_one(store.reader())
    .await?)
}
