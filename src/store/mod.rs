//! The store: one set of queries over sqlx's `Any` driver, for SQLite and PostgreSQL.
//!
//! Owns the connection pools and migrations. Instants cross this edge as integer
//! milliseconds since the epoch (UTC); ids as text UUIDs. The few real dialect differences
//! live in [`dialect`]; no query is written twice.

pub mod activity;
pub mod audit;
pub mod backup;
pub mod dialect;
pub mod erased;
pub mod group_commit;
pub mod jobs;
pub mod ledger;
mod migrations;
pub mod outbox;
pub mod policies;
pub mod preferences;
pub mod recipients;
pub mod replicas;
pub mod retention;
pub mod serve_lock;
pub mod sessions;
pub mod stats;
pub mod suppressions;
pub mod throttles;

use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use dialect::Backend;
pub use migrations::{MigrationState, expected_migrations};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("database write failed: {0}")]
    Batch(#[from] group_commit::WriteError),
}

/// Connection pools for one database.
///
/// SQLite allows one writer at a time, and a pool of writers only makes them fight for the
/// lock: SQLite gets a single writer connection and a separate pool of readers. On
/// PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    writer: AnyPool,
    reader: AnyPool,
    /// SQLite connections kept out of the pools for the hottest reads (see [`Kept`]).
    kept: Option<std::sync::Arc<Kept>>,
}

/// Connections lent without a pool. sqlx 0.8 pings every connection a pool takes back, one
/// more round trip to the connection's thread per query; a local SQLite file does not drop
/// connections, so the reads made for every email borrow from here instead.
#[derive(Debug)]
pub struct Kept {
    idle: std::sync::Mutex<Vec<sqlx::AnyConnection>>,
    permits: tokio::sync::Semaphore,
}

/// A connection borrowed from [`Kept`], returned when dropped.
pub struct KeptConnection<'a> {
    kept: &'a Kept,
    conn: Option<sqlx::AnyConnection>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl std::ops::Deref for KeptConnection<'_> {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        self.conn.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for KeptConnection<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        self.conn.as_mut().expect("held until dropped")
    }
}

impl Drop for KeptConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.kept
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

impl Kept {
    async fn from_pool(pool: &AnyPool, n: usize) -> Result<Self, StoreError> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(pool.acquire().await?.detach());
        }
        Ok(Self {
            idle: std::sync::Mutex::new(idle),
            permits: tokio::sync::Semaphore::new(n),
        })
    }

    async fn borrow(&self) -> KeptConnection<'_> {
        let permit = self.permits.acquire().await.expect("never closed");
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        KeptConnection {
            kept: self,
            conn,
            _permit: permit,
        }
    }
}

/// Whether a database error code says the database cannot take writes for now rather than
/// that the statement was wrong: SQLite's FULL, READONLY and IOERR (the primary code in the
/// low byte of an extended one); PostgreSQL's insufficient resources (53…), a read-only
/// transaction (25006), a server shutting down or starting (57P…) and connection exceptions
/// (08…).
fn cannot_write(sqlite: bool, code: &str) -> bool {
    if sqlite {
        return code
            .parse::<i32>()
            .is_ok_and(|extended| matches!(extended & 0xff, 8 | 10 | 13));
    }
    code.starts_with("53") || code == "25006" || code.starts_with("57P") || code.starts_with("08")
}

impl StoreError {
    /// Whether the database could not be reached (connection refused or lost, no pooled
    /// connection in time, a conversation cut short), as opposed to a query that failed:
    /// worth a retry later.
    pub fn is_unavailable(&self) -> bool {
        fn unreachable(err: &sqlx::Error) -> bool {
            match err {
                // `Protocol`: the server's side of the wire broke off or made no sense (a
                // connection closed as it opened reads as a bad answer to the TLS request).
                sqlx::Error::Io(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => {
                    let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                    db.code().is_some_and(|code| cannot_write(sqlite, &code))
                }
                _ => false,
            }
        }
        match self {
            Self::Database(err) => unreachable(err),
            Self::Batch(group_commit::WriteError::Database(err)) => unreachable(err),
            Self::Batch(group_commit::WriteError::Stopped) => true,
            _ => false,
        }
    }
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, crate::config::storage::DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects with at most `max_connections` to PostgreSQL (SQLite has its own: one
    /// writer and a few readers).
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url);
        match backend {
            Backend::Sqlite => {
                let url = dialect::sqlite_url_with_create(url);
                if url.contains("mode=rwc") {
                    create_private_database(&url);
                }
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    // A local file does not drop connections: no ping before every query.
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            dialect::sqlite_session_pragmas(conn).await
                        })
                    })
                    .connect_with(url.parse::<AnyConnectOptions>()?)
                    .await?;
                let reader = AnyPoolOptions::new()
                    .max_connections(8)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(|conn, _| {
                        Box::pin(async move { dialect::sqlite_session_pragmas(conn).await })
                    })
                    .connect_with(url.parse::<AnyConnectOptions>()?)
                    .await?;
                let kept = Kept::from_pool(&reader, 4).await?;
                Ok(Self {
                    backend,
                    writer,
                    reader,
                    kept: Some(std::sync::Arc::new(kept)),
                })
            }
            Backend::Postgres => {
                let pool = match AnyPoolOptions::new()
                    .max_connections(max_connections)
                    // While the database is unreachable a request waits this long for a
                    // connection, then gets 503.
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await
                {
                    // The pool says only that it got no connection in time; one direct
                    // attempt says why (refused, unknown host, no such database…).
                    Err(sqlx::Error::PoolTimedOut) => {
                        return Err(
                            match <sqlx::AnyConnection as sqlx::Connection>::connect(url).await {
                                Err(cause) => cause,
                                Ok(_) => sqlx::Error::PoolTimedOut,
                            }
                            .into(),
                        );
                    }
                    connected => connected?,
                };
                Ok(Self {
                    backend,
                    writer: pool.clone(),
                    reader: pool,
                    kept: None,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether [`Store::close`] was called: background loops over the store stop then.
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }

    /// The pool for statements that write.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool for reads; on SQLite these never wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// A kept connection for a hot read, on SQLite; `None` means read through [`reader`].
    ///
    /// [`reader`]: Store::reader
    pub async fn kept(&self) -> Option<KeptConnection<'_>> {
        match &self.kept {
            Some(kept) => Some(kept.borrow().await),
            None => None,
        }
    }

    /// Applies every pending migration.
    #[tracing::instrument(skip_all, fields(backend = self.backend.as_str()))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = migrations::migrator(self.backend).await?;
        migrator.run(&self.writer).await?;
        Ok(())
    }

    /// Every known migration with when it was applied, if it was.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, StoreError> {
        migrations::status(self).await
    }

    /// Migrations a newer herald applied, which this build does not know (version and
    /// description): it serves the database all the same, as during a rolling update.
    pub async fn newer_migrations(&self) -> Result<Vec<(i64, String)>, StoreError> {
        migrations::newer(self).await
    }

    /// Whether every migration this build knows is applied.
    pub async fn migrations_current(&self) -> Result<bool, StoreError> {
        Ok(self
            .migration_status()
            .await?
            .iter()
            .all(|m| m.applied_at_ms.is_some()))
    }

    /// A round trip to the database, bounded by `timeout`; returns its latency.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let query = sqlx::query("SELECT 1").fetch_one(&self.reader);
        match tokio::time::timeout(timeout, query).await {
            Ok(row) => {
                let _: i64 = row?.try_get(0)?;
                Ok(started.elapsed())
            }
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    pub async fn close(&self) {
        if let Some(kept) = &self.kept {
            let idle = std::mem::take(&mut *kept.idle.lock().unwrap_or_else(|e| e.into_inner()));
            for conn in idle {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// An instant as the store keeps it (epoch milliseconds), as a UTC time.
pub fn instant(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Milliseconds since the epoch, the store's representation of an instant.
/// Rows of two columns as pairs.
fn pairs<A, B>(rows: &[sqlx::any::AnyRow]) -> Result<Vec<(A, B)>, StoreError>
where
    A: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    B: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The most characters kept of a text from outside herald (a mail server's reply, a
/// provider's reason for a bounce): a server may answer with a hundred kilobytes of reply
/// lines, which would otherwise be kept with each email it refuses.
pub const OUTSIDE_TEXT_MAX: usize = 1_000;

/// `text` as kept: its first [`OUTSIDE_TEXT_MAX`] characters, an ellipsis marking a cut.
pub fn kept_text(text: &str) -> String {
    match text.char_indices().nth(OUTSIDE_TEXT_MAX) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
    }
}

/// Creates the SQLite file of `url` readable by its owner only, before SQLite would create
/// it with the process's umask. An existing file is left as it is; a path that cannot be
/// created (a missing directory) is reported by SQLite as it opens it.
fn create_private_database(url: &str) {
    if let Some(path) = crate::config::storage::sqlite_file(url) {
        let _ = crate::secret::create_private(&path);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_long_text_from_outside_is_cut_with_an_ellipsis() {
        use super::{OUTSIDE_TEXT_MAX, kept_text};
        assert_eq!(kept_text("550 5.1.1 gone"), "550 5.1.1 gone");
        let exact = "ł".repeat(OUTSIDE_TEXT_MAX);
        assert_eq!(kept_text(&exact), exact);
        let long = kept_text(&"ł".repeat(100_000));
        assert_eq!(long.chars().count(), OUTSIDE_TEXT_MAX + 1);
        assert!(long.ends_with("ł…"));
    }

    #[test]
    fn full_read_only_and_failing_databases_are_unavailable_and_bad_statements_are_not() {
        use super::cannot_write;
        // SQLite: FULL, READONLY and an extended READONLY, IOERR_WRITE; then CONSTRAINT,
        // ERROR.
        for code in ["13", "8", "1032", "778"] {
            assert!(cannot_write(true, code), "{code}");
        }
        for code in ["19", "2067", "1"] {
            assert!(!cannot_write(true, code), "{code}");
        }
        // PostgreSQL: disk full, read-only transaction, shutting down, connection failure;
        // then a unique violation and a syntax error.
        for code in ["53100", "25006", "57P01", "08006"] {
            assert!(cannot_write(false, code), "{code}");
        }
        for code in ["23505", "42601"] {
            assert!(!cannot_write(false, code), "{code}");
        }
    }

    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.db");
        let store = Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(store.writer())
            .await
            .unwrap();
        let mode = |name: &str| {
            let path = dir.path().join(name);
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode("herald.db"), 0o600);
        assert_eq!(
            mode("herald.db-wal"),
            0o600,
            "SQLite gives its WAL the same"
        );
        store.close().await;
        // An existing file keeps what its owner gave it.
        let shared = dir.path().join("shared.db");
        std::fs::write(&shared, b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
        let store = Store::connect(&format!("sqlite://{}", shared.display()))
            .await
            .unwrap();
        store.close().await;
        assert_eq!(mode("shared.db"), 0o640);
    }

    #[tokio::test]
    async fn kept_connections_are_lent_one_borrower_at_a_time_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}/herald.db", dir.path().display()))
            .await
            .unwrap();
        let mut lent = Vec::new();
        for _ in 0..4 {
            lent.push(store.kept().await.expect("SQLite keeps connections"));
        }
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *lent[0])
            .await
            .unwrap();
        assert_eq!(one, 1);
        // All four are out: the next borrower waits until one comes back.
        let waiting = tokio::time::timeout(Duration::from_millis(50), store.kept()).await;
        assert!(waiting.is_err(), "a fifth borrower got a connection");
        lent.pop();
        let mut again = tokio::time::timeout(Duration::from_secs(5), store.kept())
            .await
            .expect("a returned connection is lent again")
            .unwrap();
        let two: i64 = sqlx::query_scalar("SELECT 2")
            .fetch_one(&mut *again)
            .await
            .unwrap();
        assert_eq!(two, 2);
        drop(again);
        drop(lent);
        store.close().await;
    }
}
