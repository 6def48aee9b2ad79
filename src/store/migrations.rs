//! Migrations embedded in the binary, one folder per backend with the same versions, so
//! `herald migrate` works from any directory and a deploy cannot miss a file.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::Row;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, Store, StoreError};

/// (version, description, SQLite text, PostgreSQL text)
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "email pipeline",
        include_str!("../../migrations/sqlite/0002_email_pipeline.sql"),
        include_str!("../../migrations/postgres/0002_email_pipeline.sql"),
    ),
    (
        3,
        "drop leases",
        include_str!("../../migrations/sqlite/0003_drop_leases.sql"),
        include_str!("../../migrations/postgres/0003_drop_leases.sql"),
    ),
    (
        4,
        "suppressions",
        include_str!("../../migrations/sqlite/0004_suppressions.sql"),
        include_str!("../../migrations/postgres/0004_suppressions.sql"),
    ),
    (
        5,
        "claimed by",
        include_str!("../../migrations/sqlite/0005_claimed_by.sql"),
        include_str!("../../migrations/postgres/0005_claimed_by.sql"),
    ),
    (
        6,
        "preference changes",
        include_str!("../../migrations/sqlite/0006_preference_changes.sql"),
        include_str!("../../migrations/postgres/0006_preference_changes.sql"),
    ),
    (
        7,
        "zone indexes",
        include_str!("../../migrations/sqlite/0007_zone_indexes.sql"),
        include_str!("../../migrations/postgres/0007_zone_indexes.sql"),
    ),
    (
        8,
        "digest zone",
        include_str!("../../migrations/sqlite/0008_digest_zone.sql"),
        include_str!("../../migrations/postgres/0008_digest_zone.sql"),
    ),
    (
        9,
        "job attempts",
        include_str!("../../migrations/sqlite/0009_job_attempts.sql"),
        include_str!("../../migrations/postgres/0009_job_attempts.sql"),
    ),
    (
        10,
        "replicas",
        include_str!("../../migrations/sqlite/0010_replicas.sql"),
        include_str!("../../migrations/postgres/0010_replicas.sql"),
    ),
    (
        11,
        "locale",
        include_str!("../../migrations/sqlite/0011_locale.sql"),
        include_str!("../../migrations/postgres/0011_locale.sql"),
    ),
    (
        12,
        "spellings",
        include_str!("../../migrations/sqlite/0012_spellings.sql"),
        include_str!("../../migrations/postgres/0012_spellings.sql"),
    ),
    (
        13,
        "erased opt-outs",
        include_str!("../../migrations/sqlite/0013_erased_opt_outs.sql"),
        include_str!("../../migrations/postgres/0013_erased_opt_outs.sql"),
    ),
];

/// One migration and whether (and when) it is applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationState {
    pub version: i64,
    pub description: String,
    pub applied_at_ms: Option<i64>,
}

pub fn expected_migrations() -> usize {
    MIGRATIONS.len()
}

#[derive(Debug)]
struct Embedded(Backend);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sqlite, postgres)| {
                    let sql = match self.0 {
                        Backend::Sqlite => sqlite,
                        Backend::Postgres => postgres,
                    };
                    Migration::new(
                        *version,
                        Cow::Borrowed(description),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The migrator of this build. A migration applied by a newer herald is let be, not an
/// error: during a rolling update (or a rollback) the version before serves beside the new
/// one, and every migration keeps working with the version before it (DEPLOYMENT.md).
pub(super) async fn migrator(backend: Backend) -> Result<Migrator, StoreError> {
    let mut migrator = Migrator::new(Embedded(backend)).await?;
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

/// The migrations applied to the database that this build does not know (a newer herald
/// applied them), with their descriptions, in order.
pub(super) async fn newer(store: &Store) -> Result<Vec<(i64, String)>, StoreError> {
    if !migrated_before(store).await? {
        return Ok(Vec::new());
    }
    let known = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
    let rows = sqlx::query(
        "SELECT version, description FROM _sqlx_migrations \
         WHERE success = TRUE AND version > $1 ORDER BY version",
    )
    .bind(known)
    .fetch_all(store.reader())
    .await?;
    super::pairs(&rows)
}

/// Whether the database has sqlx's ledger of migrations (any migration ever ran).
async fn migrated_before(store: &Store) -> Result<bool, StoreError> {
    let exists: i64 = sqlx::query(store.backend().table_exists_sql())
        .bind("_sqlx_migrations")
        .fetch_one(store.reader())
        .await?
        .try_get(0)?;
    Ok(exists > 0)
}

pub(super) async fn status(store: &Store) -> Result<Vec<MigrationState>, StoreError> {
    let backend = store.backend();
    let mut applied = std::collections::HashMap::new();
    if migrated_before(store).await? {
        let sql = format!(
            "SELECT version, {} FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
            backend.migration_installed_ms()
        );
        for row in sqlx::query(&sql).fetch_all(store.reader()).await? {
            applied.insert(row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(MIGRATIONS
        .iter()
        .map(|(version, description, _, _)| MigrationState {
            version: *version,
            description: (*description).to_owned(),
            applied_at_ms: applied.get(version).copied(),
        })
        .collect())
}
