//! The replicas serving now (`replicas`): each renews its row while it serves, with a
//! fingerprint of the settings every replica must share, and removes it as it stops. A
//! replica that died leaves its row until it is no longer seen as live.

use sqlx::Row;

use super::{Store, StoreError};

/// A replica as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub instance: String,
    /// [`crate::config::SharedSettings`] as JSON.
    pub settings: String,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
}

/// Writes (or renews) this replica's row.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn announce(store: &Store, row: &ReplicaRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replicas (instance, settings, started_at_ms, seen_at_ms) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (instance) DO UPDATE SET settings = excluded.settings, \
         started_at_ms = excluded.started_at_ms, seen_at_ms = excluded.seen_at_ms",
    )
    .bind(&row.instance)
    .bind(&row.settings)
    .bind(row.started_at_ms)
    .bind(row.seen_at_ms)
    .execute(store.writer())
    .await?;
    Ok(())
}

/// The replicas seen at `since_ms` or later, this one among them, by name.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn live(store: &Store, since_ms: i64) -> Result<Vec<ReplicaRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT instance, settings, started_at_ms, seen_at_ms FROM replicas \
         WHERE seen_at_ms >= $1 ORDER BY instance",
    )
    .bind(since_ms)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReplicaRow {
                instance: row.try_get(0)?,
                settings: row.try_get(1)?,
                started_at_ms: row.try_get(2)?,
                seen_at_ms: row.try_get(3)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Removes this replica's row (it stops), and the rows of replicas not seen since
/// `forget_before_ms`.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn withdraw(
    store: &Store,
    instance: &str,
    forget_before_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM replicas WHERE instance = $1 OR seen_at_ms < $2")
        .bind(instance)
        .bind(forget_before_ms)
        .execute(store.writer())
        .await?;
    Ok(())
}
