//! Backups of the embedded database: SQLite's `VACUUM INTO` writes a consistent snapshot of
//! the whole database to a new file while herald keeps serving (a read transaction, so
//! writers are not held up). PostgreSQL deployments use `pg_dump`.

use super::{Store, StoreError};

/// Writes a consistent copy of the SQLite database to `path`, which must not exist or be
/// empty.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn vacuum_into(store: &Store, path: &std::path::Path) -> Result<(), StoreError> {
    let target = path.to_str().ok_or_else(|| {
        StoreError::Database(sqlx::Error::Protocol(format!(
            "{} is not a UTF-8 path",
            path.display()
        )))
    })?;
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(store.reader())
        .await?;
    Ok(())
}
