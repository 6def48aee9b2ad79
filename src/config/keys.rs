//! Keys: the admin key, the client keys with their tiers, and the keys that sign
//! unsubscribe links (versioned, so a rotation keeps old links working).

use std::path::PathBuf;

use super::reader::Reader;
use crate::secret::Secret;

/// A client key from `API_KEYS`, with its tier (`free` when none is given).
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub key: Secret,
    pub tier: String,
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// The admin key (`X-API-Key`).
    pub api_access_key: Secret,
    pub api_keys: Vec<ClientKey>,
    /// Signs unsubscribe tokens.
    pub secret_key: Secret,
    /// The version new unsubscribe tokens carry (`SECRET_KEY_VERSION`).
    pub secret_key_version: u32,
    /// Earlier signing keys, so links signed with them keep working after a rotation.
    pub previous_secret_keys: Vec<(u32, Secret)>,
    /// Set when this start generated development secrets (said once, as it starts).
    pub generated_secrets: Option<GeneratedSecrets>,
}

/// Development secrets a start generated because their settings were unset.
#[derive(Debug, Clone)]
pub struct GeneratedSecrets {
    /// The file that keeps them for the next starts.
    pub file: PathBuf,
    /// Whether the admin key was generated (else `API_ACCESS_KEY` gave it).
    pub api_access_key: bool,
    /// Whether the key that signs the links in emails was generated (else `SECRET_KEY`
    /// gave it).
    pub secret_key: bool,
}

/// The shortest key production accepts (admin, client and signing keys alike): each can be
/// guessed offline or by trying, from what it protects.
const MIN_KEY_CHARS: usize = 32;

impl KeysConfig {
    /// The keys as set; in development an unset admin or signing key is left empty, to be
    /// filled by [`KeysConfig::load_dev_secrets`].
    pub(super) fn read(r: &mut Reader<'_>, production: bool) -> Self {
        // Both can be guessed offline from what they protect (a presented key, a signed
        // link), so in production neither may be short.
        let mut long_in_production = |name: &str| {
            let value = r.required_in_production(name, production);
            if production
                && value
                    .as_ref()
                    .is_some_and(|k| k.chars().count() < MIN_KEY_CHARS)
            {
                r.problem(format!(
                    "{name}: must be at least {MIN_KEY_CHARS} characters when HERALD_ENV=production"
                ));
            }
            value
        };
        let api_access_key = long_in_production("API_ACCESS_KEY");
        let secret_key = long_in_production("SECRET_KEY");
        let secret_key_version = r.parse("SECRET_KEY_VERSION", 1u32, "a whole number");
        let mut previous_secret_keys = Vec::new();
        for entry in r.list("SECRET_KEY_PREVIOUS") {
            match entry
                .split_once(':')
                .and_then(|(v, k)| Some((v.trim().parse::<u32>().ok()?, k.trim())))
            {
                Some((version, key)) if !key.is_empty() && version != secret_key_version => {
                    previous_secret_keys.push((version, Secret::new(key)));
                }
                _ => r.problem(
                    "SECRET_KEY_PREVIOUS: expected version:key entries (e.g. 1:oldkey) with versions other than SECRET_KEY_VERSION",
                ),
            }
        }
        let mut api_keys = Vec::new();
        let mut short = 0;
        for entry in r.list("API_KEYS") {
            let (key, tier) = match entry.split_once(':') {
                Some((key, tier)) => (key.trim(), tier.trim()),
                None => (entry.as_str(), "free"),
            };
            if key.is_empty() || tier.is_empty() {
                r.problem("API_KEYS: expected key or key:tier entries separated by commas");
                continue;
            }
            short += usize::from(key.chars().count() < MIN_KEY_CHARS);
            api_keys.push(ClientKey {
                key: Secret::new(key),
                tier: tier.to_ascii_lowercase(),
            });
        }
        if production && short > 0 {
            r.problem(format!(
                "API_KEYS: {short} of the keys shorter than {MIN_KEY_CHARS} characters; each must \
                 be at least that long when HERALD_ENV=production"
            ));
        }
        Self {
            api_access_key: Secret::new(api_access_key.unwrap_or_default()),
            api_keys,
            secret_key: Secret::new(secret_key.unwrap_or_default()),
            secret_key_version,
            previous_secret_keys,
            generated_secrets: None,
        }
    }

    /// Whether a key was left for the development secrets to fill.
    pub(super) fn incomplete(&self) -> bool {
        self.api_access_key.expose().is_empty() || self.secret_key.expose().is_empty()
    }
}
