//! Development secrets: generated on first start and kept beside the SQLite database, so
//! keys and unsubscribe links survive restarts. Production never gets here (it refuses to
//! start without its secrets).

use std::path::{Path, PathBuf};

use super::DEV_SECRETS_FILE;
use super::keys::{GeneratedSecrets, KeysConfig};
use crate::secret::{Secret, random_token};

impl KeysConfig {
    /// Development only: reuse the secrets kept beside the database, or generate and keep
    /// them, so links and keys survive restarts.
    pub(super) fn load_dev_secrets(&mut self, dir: PathBuf) -> Result<(), String> {
        let file = dir.join(DEV_SECRETS_FILE);
        let mut stored = std::collections::HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    stored.insert(k.trim().to_owned(), v.trim().to_owned());
                }
            }
        }
        let mut fill = |name: &str, slot: &mut Secret| {
            if !slot.expose().is_empty() {
                return false;
            }
            let mut generated = false;
            let value = stored.entry(name.to_owned()).or_insert_with(|| {
                generated = true;
                random_token()
            });
            *slot = Secret::new(value.clone());
            generated
        };
        let generated = GeneratedSecrets {
            api_access_key: fill("API_ACCESS_KEY", &mut self.api_access_key),
            secret_key: fill("SECRET_KEY", &mut self.secret_key),
            file: file.clone(),
        };
        if generated.api_access_key || generated.secret_key {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("{}: cannot create directory: {e}", dir.display()))?;
            let text: String = stored.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            write_private(&file, &text).map_err(|e| {
                format!("{}: cannot write development secrets: {e}", file.display())
            })?;
            self.generated_secrets = Some(generated);
        }
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}
