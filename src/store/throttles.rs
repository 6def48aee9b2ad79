//! The durable per-recipient send times behind the email throttle (`email_throttles`).

use sqlx::Row;

use super::{Store, StoreError};

pub async fn sends_since(
    store: &Store,
    email: &str,
    email_type: &str,
    since_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query(
        "SELECT sent_at FROM email_throttles WHERE email = $1 AND email_type = $2 AND sent_at >= $3 ORDER BY sent_at",
    )
    .bind(email)
    .bind(email_type)
    .bind(since_ms)
    .fetch_all(store.reader())
    .await?;
    rows.iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Deletes a recipient's recorded sends (of one type, or all); returns how many.
pub async fn reset(
    store: &Store,
    email: &str,
    email_type: Option<&str>,
) -> Result<u64, StoreError> {
    let result = match email_type {
        Some(email_type) => {
            sqlx::query("DELETE FROM email_throttles WHERE email = $1 AND email_type = $2")
                .bind(email)
                .bind(email_type)
                .execute(store.writer())
                .await?
        }
        None => {
            sqlx::query("DELETE FROM email_throttles WHERE email = $1")
                .bind(email)
                .execute(store.writer())
                .await?
        }
    };
    Ok(result.rows_affected())
}
