//! Storage: the database everything durable lives in, and the Redis that holds the shared
//! rate-limit windows when several replicas serve.

use std::path::{Path, PathBuf};

use super::reader::Reader;
use crate::secret::Secret;

pub const DEFAULT_DATABASE_URL: &str = "sqlite://herald.db?mode=rwc";
/// Connections each process opens to PostgreSQL at most.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub database_url: Secret,
    /// On PostgreSQL, the most connections this process opens (`DATABASE_MAX_CONNECTIONS`):
    /// with several replicas, their sum is what the database serves at once.
    pub max_connections: u32,
    /// Shared rate-limit windows; required for several replicas.
    pub redis_url: Option<Secret>,
}

impl StorageConfig {
    pub(super) fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let explicit = r.required_in_production("DATABASE_URL", production);
        let database_url = explicit.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            r.problem("DATABASE_URL: expected a sqlite:// or postgres:// URL");
        }
        let max_connections = r.ranged(
            "DATABASE_MAX_CONNECTIONS",
            DEFAULT_MAX_CONNECTIONS,
            (2, 1_000),
            "connections",
        );
        let redis_url = r.get("REDIS_URL");
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
        {
            r.problem("REDIS_URL: expected redis://host:port[/db], rediss://… or unix://…");
        }
        Self {
            database_url: Secret::new(database_url),
            max_connections,
            redis_url: redis_url.map(Secret::new),
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }

    /// The SQLite database file, unless the database is PostgreSQL or in memory.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        sqlite_file(self.database_url.expose())
    }

    /// The directory of the SQLite file (else the working directory), where development
    /// secrets are kept.
    pub(super) fn secrets_dir(&self) -> PathBuf {
        self.sqlite_file()
            .and_then(|path| {
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(Path::to_path_buf)
            })
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// The file of a `sqlite:` URL, unless it is PostgreSQL's or in memory.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    Some(PathBuf::from(path))
}
