//! Rate-limit policies as stored in `rate_limit_policies`.

use sqlx::Row;

use super::audit::{self, AuditEntry};
use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyRow {
    pub group: String,
    pub tier: String,
    pub max_requests: i64,
    pub window_seconds: i64,
}

#[tracing::instrument(level = "debug", skip_all)]
pub async fn load(store: &Store) -> Result<Vec<PolicyRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT group_name, tier, max_requests, window_seconds FROM rate_limit_policies \
         ORDER BY group_name, tier",
    )
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PolicyRow {
                group: row.try_get(0)?,
                tier: row.try_get(1)?,
                max_requests: row.try_get(2)?,
                window_seconds: row.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Writes every change and its audit row in one transaction: all or nothing.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn apply(
    store: &Store,
    actor: &str,
    changes: &[(Option<PolicyRow>, PolicyRow)],
) -> Result<(), StoreError> {
    let mut tx = store.writer().begin().await?;
    for (old, new) in changes {
        sqlx::query(
            "INSERT INTO rate_limit_policies (group_name, tier, max_requests, window_seconds, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (group_name, tier) DO UPDATE SET max_requests = excluded.max_requests, \
             window_seconds = excluded.window_seconds, updated_at = excluded.updated_at",
        )
        .bind(&new.group)
        .bind(&new.tier)
        .bind(new.max_requests)
        .bind(new.window_seconds)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            AuditEntry {
                actor,
                action: "rate_limit_policy.update",
                target: &format!("{}/{}", new.group, new.tier),
                old_value: old.as_ref().and_then(|o| serde_json::to_string(o).ok()),
                new_value: serde_json::to_string(new).ok(),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
