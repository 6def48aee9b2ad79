//! The few places where SQLite and PostgreSQL differ. Everything else is shared SQL.

use sqlx::{AnyConnection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// `installed_on` of sqlx's migration table as epoch milliseconds.
    pub(crate) fn migration_installed_ms(self) -> &'static str {
        match self {
            Self::Sqlite => {
                "CAST(ROUND((julianday(installed_on) - 2440587.5) * 86400000) AS INTEGER)"
            }
            Self::Postgres => "CAST(EXTRACT(EPOCH FROM installed_on) * 1000 AS BIGINT)",
        }
    }

    /// Whether a table exists, with the table name as `$1`.
    pub(crate) fn table_exists_sql(self) -> &'static str {
        match self {
            Self::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            Self::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        }
    }
}

/// A SQLite URL that creates the file if missing, unless the caller chose a mode.
pub fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Per-connection settings: durable commits (the outbox must survive a power cut),
/// foreign keys enforced, and waiting for a lock instead of failing at once.
pub(crate) async fn sqlite_session_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA synchronous = FULL").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    conn.execute("PRAGMA busy_timeout = 5000").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode_only_when_none_is_given() {
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(Backend::from_url("sqlite://herald.db"), Backend::Sqlite);
        assert_eq!(Backend::from_url("postgres://h/d"), Backend::Postgres);
    }
}
