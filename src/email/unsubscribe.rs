//! Unsubscribe tokens: `v{version}.{recipient_key}.{mac}`.
//!
//! The recipient key is a random id stored with the recipient's preferences, so a token
//! names the recipient without revealing the address and cannot be guessed from it. The
//! MAC (HMAC-SHA256, truncated to 128 bits) is keyed by the signing key of `version`, so a
//! token is verified without any lookup and keys can rotate: new links use the current key,
//! old links keep working while their key is listed in `SECRET_KEY_PREVIOUS`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::secret::{Secret, hex};

/// Whether `token` has a token's shape, `v{version}.{32 hex}.{32 lower-case hex}` (the
/// pattern the API document gives); says nothing of its MAC.
pub fn well_formed(token: &str) -> bool {
    let mut parts = token.split('.');
    let version = parts.next().and_then(|v| v.strip_prefix('v'));
    let ok_version = version
        .is_some_and(|v| (1..=9).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()));
    let ok_key = parts
        .next()
        .is_some_and(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()));
    let ok_mac = parts.next().is_some_and(|m| {
        m.len() == 32
            && m.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    ok_version && ok_key && ok_mac && parts.next().is_none()
}

#[derive(Clone)]
pub struct Signer {
    current: (u32, Secret),
    previous: Vec<(u32, Secret)>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("version", &self.current.0)
            .finish_non_exhaustive()
    }
}

fn full_mac(key: &Secret, message: &str) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}

fn mac(key: &Secret, version: u32, recipient_key: &str) -> [u8; 16] {
    let full = full_mac(
        key,
        &format!("herald-unsubscribe:v{version}:{recipient_key}"),
    );
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

impl Signer {
    pub fn new(current: (u32, Secret), previous: Vec<(u32, Secret)>) -> Self {
        Self { current, previous }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(
            (
                config.keys.secret_key_version,
                config.keys.secret_key.clone(),
            ),
            config.keys.previous_secret_keys.clone(),
        )
    }

    pub fn token(&self, recipient_key: &str) -> String {
        let (version, key) = &self.current;
        format!(
            "v{version}.{recipient_key}.{}",
            hex(&mac(key, *version, recipient_key))
        )
    }

    /// herald's reference to the ledger row `row_id` (a UUID), carried by every email in
    /// `X-Herald-Ref` so a bounce or complaint that quotes it maps back to the row without a
    /// lookup by address. Signed apart from unsubscribe tokens (`ref.` in the MAC), so one
    /// cannot stand for the other.
    pub fn reference(&self, row_id: &str) -> String {
        let (version, key) = &self.current;
        let id = row_id.replace('-', "");
        format!(
            "v{version}.{id}.{}",
            hex(&mac(key, *version, &format!("ref.{id}")))
        )
    }

    /// The access tokens a session started with an `Idempotency-Key` may have: derived from
    /// its id with each signing key, the current one first (64 hex digits, as a random
    /// token), so a repeat of the start answers the token again though only its hash is
    /// stored. Signed apart from every other use of the keys (`herald-session-token` in the
    /// MAC).
    pub fn session_tokens(&self, session_id: &str) -> impl Iterator<Item = String> + '_ {
        let session_id = session_id.to_owned();
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .map(move |(version, key)| {
                hex(&full_mac(
                    key,
                    &format!("herald-session-token:v{version}:{session_id}"),
                ))
            })
    }

    /// The ledger row id (hyphenated) a genuine reference names.
    pub fn verify_reference(&self, reference: &str) -> Option<String> {
        let mut parts = reference.trim().split('.');
        let version: u32 = parts.next()?.strip_prefix('v')?.parse().ok()?;
        let id = parts.next()?;
        let presented = parts.next()?;
        if parts.next().is_some() || presented.len() != 32 {
            return None;
        }
        let uuid = uuid::Uuid::try_parse(id).ok()?;
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|(v, _)| *v == version)
            .map(|(_, key)| key)?;
        let expected = hex(&mac(key, version, &format!("ref.{id}")));
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
            .then(|| uuid.hyphenated().to_string())
    }

    /// The nonce of a preference form shown to `recipient_key` at `version` of their
    /// preferences: it holds only for that version, so a form cannot be forged without the
    /// key, nor sent again once the preferences changed.
    pub fn form_nonce(&self, recipient_key: &str, version: i64) -> String {
        let (v, key) = &self.current;
        hex(&mac(key, *v, &format!("form.{recipient_key}.{version}")))
    }

    /// Whether `nonce` is the one [`Self::form_nonce`] gives now, compared in constant time.
    pub fn form_nonce_holds(&self, nonce: &str, recipient_key: &str, version: i64) -> bool {
        let expected = self.form_nonce(recipient_key, version);
        bool::from(expected.as_bytes().ct_eq(nonce.as_bytes()))
    }

    /// The recipient key a genuine token names; `None` for anything forged or malformed.
    pub fn verify(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let version: u32 = parts.next()?.strip_prefix('v')?.parse().ok()?;
        let recipient_key = parts.next()?;
        let presented = parts.next()?;
        if parts.next().is_some()
            || recipient_key.len() != 32
            || !recipient_key.bytes().all(|b| b.is_ascii_hexdigit())
            || presented.len() != 32
        {
            return None;
        }
        let key = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|(v, _)| *v == version)
            .map(|(_, key)| key)?;
        let expected = hex(&mac(key, version, recipient_key));
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
            .then(|| recipient_key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_has_the_documented_shape() {
        let signer = Signer::new((7, Secret::new("k1")), vec![]);
        assert!(well_formed(&signer.token(RID)));
        for bad in [
            "",
            "v1",
            "v.x.y",
            "v1.0123.abcd",
            "1.0123456789abcdef0123456789abcdef.0123456789abcdef0123456789abcdef",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
        let upper_mac = format!("v1.{RID}.{}", "A".repeat(32));
        assert!(!well_formed(&upper_mac));
        let long_version = format!("v1234567890.{RID}.{RID}");
        assert!(!well_formed(&long_version));
    }

    #[test]
    fn a_token_verifies_and_names_its_recipient_key() {
        let signer = Signer::new((1, Secret::new("k1")), vec![]);
        let token = signer.token(RID);
        assert_eq!(signer.verify(&token).as_deref(), Some(RID));
        assert!(!token.contains('@'));
    }

    proptest::proptest! {
        /// Whatever a link scanner or an attacker sends as a token or a reference, checking
        /// it never panics and never names anyone.
        #[test]
        fn any_text_as_a_token_or_a_reference_is_refused(raw in "(\\PC|[.v0-9a-f\\-])*") {
            let signer = Signer::new((1, Secret::new("k1")), vec![(0, Secret::new("k0"))]);
            proptest::prop_assert_eq!(signer.verify(&raw), None);
            proptest::prop_assert_eq!(signer.verify_reference(&raw), None);
        }
    }

    #[test]
    fn a_reference_names_its_row_and_is_no_unsubscribe_token() {
        let signer = Signer::new((1, Secret::new("k1")), vec![]);
        let row = "3f2a0000-0000-4000-8000-00000000000a";
        let reference = signer.reference(row);
        assert_eq!(signer.verify_reference(&reference).as_deref(), Some(row));
        assert_eq!(signer.verify(&reference), None, "not an unsubscribe token");
        let token = signer.token(RID);
        assert_eq!(signer.verify_reference(&token), None, "not a reference");
        let forged = reference.replacen("3f2a", "3f2b", 1);
        assert_eq!(signer.verify_reference(&forged), None);
        let stranger = Signer::new((1, Secret::new("k2")), vec![]);
        assert_eq!(stranger.verify_reference(&reference), None);
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let signer = Signer::new((1, Secret::new("k1")), vec![]);
        let token = signer.token(RID);
        let other_rid = token.replacen("0123", "1123", 1);
        assert_eq!(signer.verify(&other_rid), None);
        let mut flipped = token.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(signer.verify(&flipped), None);
        let stranger = Signer::new((1, Secret::new("k2")), vec![]);
        assert_eq!(stranger.verify(&token), None);
        for junk in [
            "",
            "v1",
            "v1..",
            "x1.a.b",
            &format!("v9.{RID}.{}", "0".repeat(32)),
        ] {
            assert_eq!(signer.verify(junk), None, "{junk}");
        }
    }

    #[test]
    fn old_links_keep_working_after_a_key_rotation() {
        let old = Signer::new((1, Secret::new("k1")), vec![]);
        let token = old.token(RID);
        let rotated = Signer::new((2, Secret::new("k2")), vec![(1, Secret::new("k1"))]);
        assert_eq!(rotated.verify(&token).as_deref(), Some(RID));
        assert!(rotated.token(RID).starts_with("v2."));
        let retired = Signer::new((2, Secret::new("k2")), vec![]);
        assert_eq!(retired.verify(&token), None);
    }
}
