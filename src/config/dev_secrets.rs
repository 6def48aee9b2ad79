//! Development secrets: generated on first start and kept beside the SQLite database, so
//! keys and unsubscribe links survive restarts. Production never gets here (it refuses to
//! start without its secrets).
//!
//! Processes starting at once on an empty directory (the service and a command run beside
//! it) must agree: the file appears whole and only once (written aside, then linked into
//! place, which fails if another process got there first), and a start that finds it made
//! meanwhile takes what it holds.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::DEV_SECRETS_FILE;
use super::keys::{GeneratedSecrets, KeysConfig};
use crate::secret::{Secret, random_token};

/// The settings the file keeps.
const NAMES: [&str; 2] = ["API_ACCESS_KEY", "SECRET_KEY"];

impl KeysConfig {
    /// Development only: reuse the secrets kept beside the database, or generate and keep
    /// them, so links and keys survive restarts.
    pub(super) fn load_dev_secrets(&mut self, dir: PathBuf) -> Result<(), String> {
        let file = dir.join(DEV_SECRETS_FILE);
        let unset = [
            self.api_access_key.expose().is_empty(),
            self.secret_key.expose().is_empty(),
        ];
        loop {
            let existing = read(&file)?;
            let mut stored = existing.clone().unwrap_or_default();
            let mut generated = [false; 2];
            for ((name, unset), generated) in NAMES.iter().zip(unset).zip(&mut generated) {
                if unset && !stored.contains_key(*name) {
                    stored.insert((*name).to_owned(), random_token());
                    *generated = true;
                }
            }
            if generated.contains(&true) {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("{}: cannot create directory: {e}", dir.display()))?;
                let text: String = stored.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                match publish(&file, &text, existing.is_some()) {
                    Ok(()) => {}
                    // Another start made the file meanwhile: take what it keeps.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(format!(
                            "{}: cannot write development secrets: {e}",
                            file.display()
                        ));
                    }
                }
                self.generated_secrets = Some(GeneratedSecrets {
                    api_access_key: generated[0],
                    secret_key: generated[1],
                    file: file.clone(),
                });
            }
            for (name, slot) in NAMES
                .iter()
                .zip([&mut self.api_access_key, &mut self.secret_key])
            {
                if slot.expose().is_empty() {
                    *slot = Secret::new(stored[*name].clone());
                }
            }
            return Ok(());
        }
    }
}

/// The secrets the file keeps, or `None` when there is no file yet.
fn read(file: &Path) -> Result<Option<HashMap<String, String>>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{}: cannot read development secrets: {e}",
                file.display()
            ));
        }
    };
    let stored = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Some(stored))
}

/// Puts `text` in `file` whole: written aside, then linked into place when there is no file
/// yet (`AlreadyExists` if another start made one meanwhile), or renamed over the one
/// there when it gains a secret.
fn publish(file: &Path, text: &str, replace: bool) -> std::io::Result<()> {
    let aside = file.with_extension(format!("{}.{}", std::process::id(), &random_token()[..8]));
    write_private(&aside, text)?;
    let placed = if replace {
        std::fs::rename(&aside, file)
    } else {
        std::fs::hard_link(&aside, file)
    };
    let _ = std::fs::remove_file(&aside);
    placed
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
