//! The store: one set of queries over sqlx's `Any` driver, for SQLite and PostgreSQL.
//!
//! Owns the connection pools and migrations. Instants cross this edge as integer
//! milliseconds since the epoch (UTC); ids as text UUIDs. The few real dialect differences
//! live in [`dialect`]; no query is written twice.

pub mod audit;
pub mod dialect;
pub mod group_commit;
pub mod jobs;
mod migrations;
pub mod outbox;
pub mod policies;
pub mod preferences;
pub mod sessions;
pub mod stats;
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
    Write(String),
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
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url);
        match backend {
            Backend::Sqlite => {
                let url = dialect::sqlite_url_with_create(url);
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
                Ok(Self {
                    backend,
                    writer,
                    reader,
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(10)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?;
                Ok(Self {
                    backend,
                    writer: pool.clone(),
                    reader: pool,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool for statements that write.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool for reads; on SQLite these never wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
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
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// An instant as the store keeps it (epoch milliseconds), as a UTC time.
pub fn instant(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Milliseconds since the epoch, the store's representation of an instant.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
