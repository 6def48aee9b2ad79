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
    .bind(uuid::Uuid::new_v4().to_string())
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
