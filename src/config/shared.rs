//! The settings every replica must share (DEPLOYMENT.md, "Settings that must be equal on
//! every replica"), kept as fingerprints so replicas can compare theirs without showing one
//! another (or the database) a value: a replica started with another throttle rule, digest
//! schedule or signing key breaks promises the others keep, and nothing else would say so.
//!
//! A setting is compared by the value in force: unset and its default written out are one
//! value, and so are `5` and `05`, `SKIP` and `skip`, `a, b` and `a,b`. A setting herald
//! reads as text with no default (a host, an address, a URL) is compared as written
//! (trimmed; blank is unset). The admin key and the signing key are compared as in force,
//! also when development generated them, and the DKIM key by its public half (wherever its
//! file is, however it is written).
//!
//! The signing key (`SECRET_KEY`, long and random) is fingerprinted by a plain hash; every
//! other setting by an HMAC under it, so a fingerprint in the database cannot be tried
//! against guesses (a weak SMTP password, a small limit) by whoever reads it without the
//! key. Replicas whose signing keys differ can therefore compare nothing else: that one
//! difference is all they report until it is mended.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{Dkim, KeysConfig};

/// The names compared. `DATABASE_URL` is not: replicas that see each other share the
/// database, however each names it.
pub const SHARED_SETTINGS: &[&str] = &[
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "SECRET_KEY",
    "SECRET_KEY_VERSION",
    "SECRET_KEY_PREVIOUS",
    "API_ACCESS_KEY",
    "API_KEYS",
    "RATE_LIMIT_MAX_REQUESTS",
    "RATE_LIMIT_WINDOW_SECONDS",
    "RATE_LIMIT_SESSIONS_MAX_REQUESTS",
    "RATE_LIMIT_SESSIONS_WINDOW_SECONDS",
    "TRUSTED_PROXIES",
    "SESSION_START_AUTH",
    "SESSION_REPORT_LIMIT",
    "SESSION_REPORT_WINDOW_HOURS",
    "WEEKLY_DIGEST_LIMIT",
    "WEEKLY_DIGEST_WINDOW_DAYS",
    "DIGEST_SCHEDULE",
    "DIGEST_TIMEZONE",
    "DIGEST_DELIVERY",
    "PURGE_SCHEDULE",
    "MISSED_RUN_POLICY",
    "JOB_LEASE_SECONDS",
    "RETENTION_SEND_LOG_DAYS",
    "RETENTION_SESSIONS_DAYS",
    "RETENTION_SESSION_EVENTS_DAYS",
    "RETENTION_AUDIT_LOG_DAYS",
    "EMAIL_PROVIDER",
    "EMAIL_FROM",
    "EMAIL_REPLY_TO",
    "EMAIL_FEEDBACK_ID",
    "API_BASE_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USER",
    "SMTP_PASS",
    "SMTP_TLS",
    "SENDGRID_API_KEY",
    "SENDGRID_API_URL",
    "DKIM_DOMAIN",
    "DKIM_SELECTOR",
    "DKIM_PRIVATE_KEY_FILE",
    "EMAIL_EVENTS_SECRET",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
    "SOFT_BOUNCE_LIMIT",
    "SOFT_BOUNCE_WINDOW_DAYS",
];

/// A fingerprint of each shared setting, by name, and under [`SCHEME`] how they were taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SharedSettings(BTreeMap<String, String>);

/// Where a row says how its fingerprints were taken. A row without it is from a herald that
/// took them of each setting as written: against such a row only the signing key (taken the
/// same way by both) is compared, so a rolling update from that version names no setting
/// that only looks different.
const SCHEME: &str = "~fingerprints";

/// This herald's way: of the value in force.
const IN_FORCE: &str = "in-force";

impl SharedSettings {
    pub(super) fn read(
        lookup: &dyn Fn(&str) -> Option<String>,
        keys: &KeysConfig,
        dkim: Option<&Dkim>,
    ) -> Self {
        let in_force = |name: &str| match name {
            "API_ACCESS_KEY" => Some(keys.api_access_key.expose().to_owned()),
            "SECRET_KEY" => Some(keys.secret_key.expose().to_owned()),
            // The key signs, not where it is kept: each replica may mount it elsewhere. The
            // key the configuration read, by its public half.
            "DKIM_PRIVATE_KEY_FILE" => dkim.map(|d| crate::secret::hex(d.key.public_key())),
            _ => lookup(name),
        };
        let key = keys.secret_key.expose().trim().to_owned();
        let mut fingerprints: BTreeMap<String, String> = SHARED_SETTINGS
            .iter()
            .map(|&name| {
                let value = in_force(name)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty());
                (name.to_owned(), fingerprint(&key, name, value.as_deref()))
            })
            .collect();
        fingerprints.insert(SCHEME.to_owned(), IN_FORCE.to_owned());
        Self(fingerprints)
    }

    /// The names whose settings differ between the two, in order (a name only one of them
    /// knows, from another version of herald, is left out: it is not a disagreement). Under
    /// different signing keys nothing else can be compared: only `SECRET_KEY` is named.
    pub fn differing(&self, other: &Self) -> Vec<String> {
        let differ = |name: &str| {
            let (mine, theirs) = (self.0.get(name), other.0.get(name));
            mine.zip(theirs)
                .is_some_and(|(mine, theirs)| mine != theirs)
        };
        if differ(SIGNING_KEY) {
            return vec![SIGNING_KEY.to_owned()];
        }
        if self.0.get(SCHEME) != other.0.get(SCHEME) {
            return Vec::new();
        }
        self.0
            .keys()
            .filter(|name| *name != SCHEME && differ(name))
            .cloned()
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What another replica stored; a row that does not read is compared as empty.
    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// The setting whose value keys the others' fingerprints.
const SIGNING_KEY: &str = "SECRET_KEY";

/// Twelve hex digits that match for equal values and from which no value can be read back:
/// of a hash for the signing key (long and random), of an HMAC under it for the rest.
fn fingerprint(key: &str, name: &str, value: Option<&str>) -> String {
    let Some(value) = value else {
        return "unset".to_owned();
    };
    let text = format!("herald shared setting {name}={value}");
    let digest = if name == SIGNING_KEY {
        Sha256::digest(text.as_bytes()).to_vec()
    } else {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    crate::secret::hex(&digest[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> SharedSettings {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut with_keys = vars.clone();
        with_keys.extend([
            ("API_ACCESS_KEY".to_owned(), "a".repeat(40)),
            ("SECRET_KEY".to_owned(), "s".repeat(40)),
            ("DATABASE_URL".to_owned(), "sqlite::memory:".to_owned()),
        ]);
        let lookup = move |name: &str| {
            with_keys
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        super::super::Config::from_lookup(&lookup).unwrap().shared
    }

    #[test]
    fn replicas_differ_only_in_the_settings_written_differently() {
        let one = settings(&[("SESSION_REPORT_LIMIT", "5"), ("LOG_LEVEL", "info")]);
        let same = settings(&[("SESSION_REPORT_LIMIT", " 5 "), ("LOG_LEVEL", "debug")]);
        assert!(
            one.differing(&same).is_empty(),
            "LOG_LEVEL is a replica's own"
        );
        let other = settings(&[
            ("SESSION_REPORT_LIMIT", "6"),
            ("DIGEST_TIMEZONE", "Europe/Paris"),
        ]);
        assert_eq!(
            one.differing(&other),
            ["DIGEST_TIMEZONE", "SESSION_REPORT_LIMIT"]
        );
        assert_eq!(other.differing(&one), one.differing(&other));
    }

    #[test]
    fn a_default_written_out_is_the_same_setting_as_one_left_unset() {
        let unset = settings(&[]);
        let written = settings(&[
            ("SESSION_REPORT_LIMIT", "05"),
            ("SESSION_REPORT_WINDOW_HOURS", "24"),
            ("DIGEST_SCHEDULE", "0 9 * * SUN"),
            ("DIGEST_TIMEZONE", "UTC"),
            ("DIGEST_DELIVERY", "LOCAL"),
            ("MISSED_RUN_POLICY", "catch_up"),
            ("REDIS_KEY_PREFIX", "herald:"),
            ("SMTP_PORT", "587"),
            ("SENDGRID_API_URL", "https://api.sendgrid.com/"),
        ]);
        assert!(
            unset.differing(&written).is_empty(),
            "{:?}",
            unset.differing(&written)
        );
        let one_way = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.0/16")]);
        let another = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8,192.168.0.0/16")]);
        assert!(one_way.differing(&another).is_empty());
        // Another value than the default is still named, and so is a choice made otherwise.
        let other = settings(&[("SESSION_REPORT_LIMIT", "6"), ("DIGEST_DELIVERY", "global")]);
        assert_eq!(
            unset.differing(&other),
            ["DIGEST_DELIVERY", "SESSION_REPORT_LIMIT"]
        );
    }

    #[test]
    fn a_row_of_fingerprints_taken_as_written_is_compared_by_its_signing_key_only() {
        let mine = settings(&[("SESSION_REPORT_LIMIT", "6")]);
        let mut as_written = settings(&[]);
        as_written.0.remove(SCHEME);
        assert!(mine.differing(&as_written).is_empty());
        let mut other_key = settings(&[("SECRET_KEY", &"t".repeat(40))]);
        other_key.0.remove(SCHEME);
        assert_eq!(mine.differing(&other_key), ["SECRET_KEY"]);
    }

    #[test]
    fn under_another_signing_key_only_the_key_is_named() {
        let one = settings(&[("SESSION_REPORT_LIMIT", "5")]);
        let mut with_other_key = vec![("SESSION_REPORT_LIMIT", "5")];
        let other_key = "t".repeat(40);
        with_other_key.push(("SECRET_KEY", other_key.as_str()));
        let other = settings(&with_other_key);
        assert_eq!(one.differing(&other), ["SECRET_KEY"]);
        // The same limit, fingerprinted under another key, does not match: a reader of the
        // table without the key cannot try guesses against it.
        assert_ne!(
            one.0["SESSION_REPORT_LIMIT"],
            other.0["SESSION_REPORT_LIMIT"]
        );
    }

    #[test]
    fn fingerprints_show_no_value_and_survive_the_database() {
        let shared = settings(&[
            ("SMTP_USER", "herald"),
            ("SMTP_PASS", "hunter2-hunter2"),
            ("SMTP_HOST", "mail.example.org"),
        ]);
        let stored = shared.to_json();
        assert!(!stored.contains("hunter2") && !stored.contains("mail.example.org"));
        assert!(!stored.contains(&"s".repeat(40)));
        assert_eq!(SharedSettings::from_json(&stored), shared);
        // A row from a version that compares fewer settings is no disagreement.
        let mut older = shared.clone();
        older.0.remove("SOFT_BOUNCE_LIMIT");
        assert!(shared.differing(&older).is_empty());
        assert!(
            SharedSettings::from_json("not json")
                .differing(&shared)
                .is_empty()
        );
    }

    #[test]
    fn the_dkim_key_is_compared_by_its_public_half_wherever_its_file_is() {
        // Two Ed25519 keys made for this test (`openssl genpkey -algorithm ed25519`).
        const ONE: &str = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEIA0KTBTkbyWZQBNt7gcLxKRVbr3t77+aMJNeTobyBQCQ\n\
            -----END PRIVATE KEY-----\n";
        const OTHER: &str = "-----BEGIN PRIVATE KEY-----\n\
            MC4CAQAwBQYDK2VwBCIEIF3VU32WcZQnDlI08RxNppWoFjb8yKy7R0z50gJdE6y4\n\
            -----END PRIVATE KEY-----\n";
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, key: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, key).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let (here, there, other) = (file("a.pem", ONE), file("b.pem", ONE), file("c.pem", OTHER));
        let with = |path: &str| {
            settings(&[
                ("DKIM_DOMAIN", "herald.localhost"),
                ("DKIM_SELECTOR", "herald"),
                ("DKIM_PRIVATE_KEY_FILE", path),
            ])
        };
        assert!(
            with(&here).differing(&with(&there)).is_empty(),
            "the same key elsewhere"
        );
        assert_eq!(
            with(&here).differing(&with(&other)),
            ["DKIM_PRIVATE_KEY_FILE"]
        );
    }

    #[test]
    fn every_shared_setting_is_one_herald_reads_and_deployment_lists() {
        let example = include_str!("../../.env.example");
        let deployment = include_str!("../../DEPLOYMENT.md");
        for name in SHARED_SETTINGS {
            assert!(
                example
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{name}="))),
                "{name} is not a setting herald reads"
            );
            assert!(
                deployment.contains(&format!("`{name}`")),
                "{name} is not in DEPLOYMENT.md's list"
            );
        }
    }
}
