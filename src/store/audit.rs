//! The audit log: who changed what operational setting, from what to what, and when.

use sqlx::{Any, Transaction};

use super::now_ms;

/// One audit row, written inside the transaction of the change it records.
pub struct AuditEntry<'a> {
    /// The fingerprint of the key that made the change.
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn record(
    tx: &mut Transaction<'_, Any>,
    entry: AuditEntry<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, action, target, old_value, new_value) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    // Time-ordered, so that changes made within one millisecond list in the order made.
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now_ms())
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.old_value)
    .bind(entry.new_value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The target of a change made to `addresses` at once: the address masked, or how many.
pub fn addresses_target<A: AsRef<str>>(addresses: &[A]) -> String {
    match addresses {
        [one] => crate::redact::mask_email(one.as_ref()),
        many => format!("{} addresses", many.len()),
    }
}

/// Records an operational action that has no row of its own to change in the same
/// transaction (a limiter reset, a throttle reset done through its actor).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record_alone(
    store: &super::Store,
    actor: &str,
    action: &str,
    target: &str,
) -> Result<(), super::StoreError> {
    let mut tx = store.writer().begin().await?;
    record(
        &mut tx,
        AuditEntry {
            actor,
            action,
            target,
            old_value: None,
            new_value: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One change as the audit log has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at_ms: i64,
    /// Who made it: the fingerprint of the admin key, or `cli@` and the `HERALD_INSTANCE` of
    /// the shell that ran the command.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

/// Which changes to list: since an instant, of one action, a page of them.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub since_ms: Option<i64>,
    pub action: Option<&'a str>,
    pub limit: i64,
    pub offset: i64,
}

impl<'a> AuditFilter<'a> {
    /// From what an operator typed: `since` an RFC 3339 instant, `action` one of
    /// [`ACTIONS`]; else the field at fault and why.
    pub fn parse(
        since: Option<&str>,
        action: Option<&'a str>,
        limit: i64,
        offset: i64,
    ) -> Result<Self, (&'static str, String)> {
        let since_ms = since
            .map(|raw| {
                chrono::DateTime::parse_from_rfc3339(raw.trim())
                    .map(|at| at.timestamp_millis())
                    .map_err(|_| {
                        (
                            "since",
                            format!(
                                "expected an RFC 3339 instant (2026-12-01T09:00:00Z), got '{raw}'"
                            ),
                        )
                    })
            })
            .transpose()?;
        if let Some(action) = action
            && !ACTIONS.contains(&action)
        {
            return Err((
                "action",
                format!(
                    "unknown action '{action}'; expected one of {}",
                    ACTIONS.join(", ")
                ),
            ));
        }
        Ok(Self {
            since_ms,
            action,
            limit,
            offset,
        })
    }
}

/// The changes that match, newest first, and how many match in all.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(
    store: &super::Store,
    filter: &AuditFilter<'_>,
) -> Result<(Vec<AuditRow>, i64), super::StoreError> {
    const MATCHING: &str =
        "FROM audit_log WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR action = $2)";
    let rows = sqlx::query(&format!(
        "SELECT at, actor, action, target, old_value, new_value {MATCHING} \
         ORDER BY at DESC, id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(filter.since_ms)
    .bind(filter.action)
    .bind(filter.limit)
    .bind(filter.offset)
    .fetch_all(store.reader())
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {MATCHING}"))
        .bind(filter.since_ms)
        .bind(filter.action)
        .fetch_one(store.reader())
        .await?;
    let rows = rows
        .iter()
        .map(|row| {
            use sqlx::Row;
            Ok(AuditRow {
                at_ms: row.try_get(0)?,
                actor: row.try_get(1)?,
                action: row.try_get(2)?,
                target: row.try_get(3)?,
                old_value: row.try_get(4)?,
                new_value: row.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((rows, total))
}

/// The actions herald records, for a filter's help and its check.
pub const ACTIONS: &[&str] = &[
    "email.retry",
    "email_throttle.reset",
    "job.run",
    "rate_limit.reset",
    "rate_limit_policy.update",
    "recipient.erase",
    "recipient.unsubscribe",
    "suppression.add",
    "suppression.lift",
];

/// What a job run by hand is audited as: the job, the week chosen if one was, and the run.
pub fn job_target(job: &str, week: Option<chrono::NaiveDate>, run_id: &str) -> String {
    match week {
        Some(week) => format!("{job} week {week} run {run_id}"),
        None => format!("{job} run {run_id}"),
    }
}
