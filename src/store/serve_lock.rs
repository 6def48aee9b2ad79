//! SQLite serves one process: the first `herald serve` on a database file holds an
//! exclusive lock on `<file>.lock` (the operating system's advisory file lock, released
//! when the process ends, however it ends), and a second one refuses to start. The CLI's
//! jobs do not take it: they may run beside a server. Several replicas need PostgreSQL.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Held while this process serves the database file.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeLockError {
    #[error(
        "another herald is already serving {0} (SQLite serves one process; several replicas need PostgreSQL)"
    )]
    Held(PathBuf),
    #[error("cannot lock {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl ServeLock {
    pub fn acquire(database: &Path) -> Result<Self, ServeLockError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ServeLockError::Io(path.clone(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(ServeLockError::Held(database.to_owned())),
            Err(TryLockError::Error(e)) => Err(ServeLockError::Io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("herald.db");
        let first = ServeLock::acquire(&db).unwrap();
        let refused = ServeLock::acquire(&db).unwrap_err();
        assert!(matches!(refused, ServeLockError::Held(_)), "{refused}");
        assert!(refused.to_string().contains("PostgreSQL"));
        drop(first);
        ServeLock::acquire(&db).unwrap();
    }
}
