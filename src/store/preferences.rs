//! Email preferences: what each recipient wants, and the opaque key their unsubscribe
//! links name.

use sqlx::Row;

use super::{Store, StoreError};

/// What an unsubscribe link turns off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribe {
    WeeklyDigest,
    SessionReports,
    All,
}

impl Unsubscribe {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "weekly_digest" => Some(Self::WeeklyDigest),
            "session_reports" => Some(Self::SessionReports),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WeeklyDigest => "weekly_digest",
            Self::SessionReports => "session_reports",
            Self::All => "all",
        }
    }
}

/// Applies an unsubscribe; returns whether anything changed. The seed's effects: each type
/// turns its switch off and stamps its time; `all` does both.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn unsubscribe(
    store: &Store,
    recipient_key: &str,
    what: Unsubscribe,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let (digest, reports) = match what {
        Unsubscribe::WeeklyDigest => (true, false),
        Unsubscribe::SessionReports => (false, true),
        Unsubscribe::All => (true, true),
    };
    let changed = sqlx::query(
        "UPDATE email_preferences SET \
           weekly_digest_unsubscribed_at = CASE WHEN $3 = 1 AND weekly_digest_enabled = 1 THEN $2 ELSE weekly_digest_unsubscribed_at END, \
           weekly_digest_enabled = CASE WHEN $3 = 1 THEN 0 ELSE weekly_digest_enabled END, \
           session_reports_unsubscribed_at = CASE WHEN $4 = 1 AND session_reports_enabled = 1 THEN $2 ELSE session_reports_unsubscribed_at END, \
           session_reports_enabled = CASE WHEN $4 = 1 THEN 0 ELSE session_reports_enabled END, \
           updated_at = $2 \
         WHERE recipient_key = $1 AND (($3 = 1 AND weekly_digest_enabled = 1) OR ($4 = 1 AND session_reports_enabled = 1))",
    )
    .bind(recipient_key)
    .bind(at_ms)
    .bind(i64::from(digest))
    .bind(i64::from(reports))
    .execute(store.writer())
    .await?
    .rows_affected();
    Ok(changed > 0)
}

/// The two switches of a recipient, for tests and the admin view.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn switches(store: &Store, email: &str) -> Result<Option<(bool, bool)>, StoreError> {
    let row = sqlx::query("SELECT weekly_digest_enabled, session_reports_enabled FROM email_preferences WHERE email = $1")
        .bind(email)
        .fetch_optional(store.reader())
        .await?;
    row.map(|row| {
        Ok((
            row.try_get::<i64, _>(0)? != 0,
            row.try_get::<i64, _>(1)? != 0,
        ))
    })
    .transpose()
    .map_err(|e: sqlx::Error| StoreError::from(e))
}

/// The random key a recipient's unsubscribe links name, if the recipient has preferences.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn recipient_key(store: &Store, email: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT recipient_key FROM email_preferences WHERE email = $1")
            .bind(email)
            .fetch_optional(store.reader())
            .await?,
    )
}
