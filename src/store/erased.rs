//! What an erased address had turned off, kept after its erasure under a one-way hash of the
//! address in lower case and nothing else: a parent who asked to be forgotten is not mailed
//! again what they had turned off (or what a bounce or complaint had stopped) when a backend
//! names the address once more. The decision and the preferences read it with the address's
//! other spellings; a type turned back on for the address lifts it.
//!
//! The hash is a pseudonym, not an anonymisation: whoever holds the database and guesses the
//! address can confirm it, which is what lets herald recognise it.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};

/// The key an address's kept opt-outs are found under: SHA-256 of a fixed prefix and the
/// address in lower case, in hex.
pub fn address_hash(email: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"herald erased opt-outs\0");
    hasher.update(email.to_lowercase().as_bytes());
    crate::secret::hex(&hasher.finalize())
}

/// A recipient's preferences row as herald first writes it (`$1` the address, `$2` its
/// unsubscribe key, `$3` the time, `$4` its [`address_hash`]), or nothing when it has one:
/// with the types an erasure of the address kept switched off, so that what reads the row
/// alone (the dispatcher's check before a send) stops them too.
pub const NEW_PREFERENCES: &str = "INSERT INTO email_preferences \
     (email, recipient_key, created_at, updated_at, weekly_digest_enabled, session_reports_enabled) \
     SELECT $1, $2, $3, $3, COALESCE(MIN(1 - weekly_digest_off), 1), COALESCE(MIN(1 - session_reports_off), 1) \
     FROM erased_opt_outs WHERE address_hash = $4 \
     ON CONFLICT (email) DO NOTHING";

/// The types of email an erased address had stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct OptOuts {
    pub weekly_digest: bool,
    pub session_reports: bool,
}

impl OptOuts {
    pub fn any(self) -> bool {
        self.weekly_digest || self.session_reports
    }
}

/// Inside an erasure's transaction, before its deletes: keeps what `email` itself stops
/// (a switch turned off, or both types for a suppression), with what an earlier erasure of
/// another spelling kept. Returns what is kept for the address now, which the erasure
/// switches off in the preferences of the address's other spellings too.
pub(super) async fn keep(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email: &str,
    at_ms: i64,
) -> Result<OptOuts, StoreError> {
    let hash = address_hash(email);
    let row = sqlx::query(
        "SELECT COALESCE((SELECT 1 - weekly_digest_enabled FROM email_preferences WHERE email = $1), 0), \
                COALESCE((SELECT 1 - session_reports_enabled FROM email_preferences WHERE email = $1), 0), \
                (SELECT COUNT(*) FROM email_suppressions WHERE email = $1), \
                COALESCE((SELECT weekly_digest_off FROM erased_opt_outs WHERE address_hash = $2), 0), \
                COALESCE((SELECT session_reports_off FROM erased_opt_outs WHERE address_hash = $2), 0)",
    )
    .bind(email)
    .bind(&hash)
    .fetch_one(&mut **tx)
    .await?;
    let set =
        |column: usize| -> Result<bool, sqlx::Error> { Ok(row.try_get::<i64, _>(column)? != 0) };
    let suppressed = set(2)?;
    let kept = OptOuts {
        weekly_digest: set(0)? || suppressed || set(3)?,
        session_reports: set(1)? || suppressed || set(4)?,
    };
    if kept.any() {
        sqlx::query(
            "INSERT INTO erased_opt_outs (address_hash, weekly_digest_off, session_reports_off, erased_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (address_hash) DO UPDATE SET \
             weekly_digest_off = excluded.weekly_digest_off, session_reports_off = excluded.session_reports_off, \
             erased_at = excluded.erased_at",
        )
        .bind(&hash)
        .bind(i64::from(kept.weekly_digest))
        .bind(i64::from(kept.session_reports))
        .bind(at_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(kept)
}

/// Inside a change of preferences that turns `field` (`weekly_digest_enabled` or
/// `session_reports_enabled`) back on for `email`: lifts what an erasure kept of it, and
/// forgets the address's row once nothing of it is left.
pub(super) async fn lift(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    email: &str,
    field: &str,
) -> Result<(), StoreError> {
    let column = match field {
        "weekly_digest_enabled" => "weekly_digest_off",
        _ => "session_reports_off",
    };
    let hash = address_hash(email);
    sqlx::query(&format!(
        "UPDATE erased_opt_outs SET {column} = 0 WHERE address_hash = $1"
    ))
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM erased_opt_outs WHERE address_hash = $1 AND weekly_digest_off = 0 AND session_reports_off = 0",
    )
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What an erasure kept for `email` (any spelling of it), and when.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn kept(store: &Store, email: &str) -> Result<Option<(OptOuts, i64)>, StoreError> {
    let row = sqlx::query(
        "SELECT weekly_digest_off, session_reports_off, erased_at FROM erased_opt_outs WHERE address_hash = $1",
    )
    .bind(address_hash(email))
    .fetch_optional(store.reader())
    .await?;
    row.map(|row| {
        Ok((
            OptOuts {
                weekly_digest: row.try_get::<i64, _>(0)? != 0,
                session_reports: row.try_get::<i64, _>(1)? != 0,
            },
            row.try_get(2)?,
        ))
    })
    .transpose()
    .map_err(|e: sqlx::Error| StoreError::from(e))
}
