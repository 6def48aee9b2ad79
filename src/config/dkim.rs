//! DKIM: the domain, selector and private key outgoing mail is signed with (`smtp` and
//! `file` providers), read and checked at start so a bad key or a sender outside the
//! domain stops herald before any email is sent unsigned.

use std::sync::Arc;

use lettre::message::Mailbox;

use super::reader::Reader;

/// The headers every signature covers when the message has them. RFC 8058 asks for the two
/// `List-Unsubscribe` headers to be signed, so a one-click unsubscribe cannot be added or
/// changed in transit; RFC 6376 names `Reply-To` among those a signer should cover, so a
/// parent's reply cannot be sent elsewhere; Gmail counts a `Feedback-ID` only when the
/// signature covers it.
pub const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// A DKIM private key.
pub enum DkimKey {
    Rsa(ring::rsa::KeyPair),
    Ed25519(ring::signature::Ed25519KeyPair),
}

impl DkimKey {
    /// The `a=` tag of signatures made with this key.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "rsa-sha256",
            Self::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The public half, as ring encodes it: the same for a key however its file is written.
    pub fn public_key(&self) -> &[u8] {
        use ring::signature::KeyPair;
        match self {
            Self::Rsa(key) => key.public_key().as_ref(),
            Self::Ed25519(key) => key.public_key().as_ref(),
        }
    }
}

impl Dkim {
    /// Where the public key is published: `<selector>._domainkey.<domain>`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record that publishes the public key, as verifiers read it: for RSA its
    /// SubjectPublicKeyInfo (what `openssl pkey -pubout` writes, and Gmail and OpenDKIM
    /// publish), for Ed25519 the raw 32-byte key (RFC 8463).
    pub fn record(&self) -> String {
        use base64::Engine;
        let (kind, key) = match &*self.key {
            DkimKey::Rsa(_) => ("rsa", subject_public_key_info(self.key.public_key())),
            DkimKey::Ed25519(_) => ("ed25519", self.key.public_key().to_vec()),
        };
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        format!("v=DKIM1; k={kind}; p={key}")
    }
}

/// An RSA public key (PKCS#1 `RSAPublicKey`, as ring gives it) in an X.509
/// SubjectPublicKeyInfo with the `rsaEncryption` algorithm (RFC 5280, RFC 3279).
fn subject_public_key_info(rsa_public_key: &[u8]) -> Vec<u8> {
    /// 1.2.840.113549.1.1.1 and its NULL parameters.
    const RSA_ENCRYPTION: [u8; 13] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let bits = [&[0u8][..], rsa_public_key].concat();
    let content = [der(0x30, &RSA_ENCRYPTION), der(0x03, &bits)].concat();
    der(0x30, &content)
}

/// One DER element: its tag, its length (short form below 128, else long), its content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let length = content.len().to_be_bytes();
    let significant = &length[length.iter().take_while(|b| **b == 0).count()..];
    let mut element = vec![tag];
    match significant {
        [short] if *short < 0x80 => element.push(*short),
        [] => element.push(0),
        long => {
            element.push(0x80 | long.len() as u8);
            element.extend(long);
        }
    }
    element.extend(content);
    element
}

/// A ready DKIM signer. Its `Debug` names the domain, selector and algorithm, never the key.
#[derive(Clone)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    pub key: Arc<DkimKey>,
}

impl std::fmt::Debug for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkim")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}

/// Reads `DKIM_DOMAIN`, `DKIM_SELECTOR` and `DKIM_PRIVATE_KEY_FILE` (all or none).
pub(super) fn read(r: &mut Reader<'_>, from: &Mailbox) -> Option<Dkim> {
    let domain = r.get("DKIM_DOMAIN");
    let selector = r.get("DKIM_SELECTOR");
    let key_file = r.get("DKIM_PRIVATE_KEY_FILE");
    let (domain, selector, key_file) = match (domain, selector, key_file) {
        (None, None, None) => return None,
        (Some(d), Some(s), Some(k)) => (d.to_ascii_lowercase(), s, k),
        _ => {
            r.problem(
                "DKIM_DOMAIN, DKIM_SELECTOR, DKIM_PRIVATE_KEY_FILE: set all three to sign outgoing mail, or none",
            );
            return None;
        }
    };
    if !selector
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        r.problem(format!(
            "DKIM_SELECTOR: '{selector}' is not a DNS label (letters, digits, '-', '.', '_')"
        ));
    }
    let sender = from.email.domain().to_ascii_lowercase();
    if sender != domain && !sender.ends_with(&format!(".{domain}")) {
        r.problem(format!(
            "DKIM_DOMAIN: '{domain}' does not cover the sender's domain '{sender}' (EMAIL_FROM); receivers would not align the signature with the sender"
        ));
    }
    let pem = match std::fs::read_to_string(&key_file) {
        Ok(pem) => pem,
        Err(err) => {
            r.problem(format!(
                "DKIM_PRIVATE_KEY_FILE: cannot read {key_file}: {err}"
            ));
            return None;
        }
    };
    match private_key(&pem) {
        Ok(key) => Some(Dkim {
            domain,
            selector,
            key: Arc::new(key),
        }),
        Err(problem) => {
            r.problem(format!("DKIM_PRIVATE_KEY_FILE: {key_file}: {problem}"));
            None
        }
    }
}

/// A private key from a PEM file: RSA (2048 to 8192 bits) in PKCS#1 (`BEGIN RSA PRIVATE
/// KEY`) or PKCS#8, or Ed25519 in PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` writes
/// both).
fn private_key(pem: &str) -> Result<DkimKey, String> {
    use base64::Engine;
    let pem = pem.trim();
    let pkcs1 = pem.starts_with("-----BEGIN RSA PRIVATE KEY-----");
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "expected an RSA or Ed25519 private key in PEM".to_owned())?;
    let rsa = if pkcs1 {
        ring::rsa::KeyPair::from_der(&der)
    } else {
        ring::rsa::KeyPair::from_pkcs8(&der)
    };
    // ring signs with RSA keys of 2048 to 8192 bits; receivers want at least 1024.
    if let Ok(key) = rsa {
        return Ok(DkimKey::Rsa(key));
    }
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map(DkimKey::Ed25519)
        .map_err(|_| {
            "expected an RSA private key of 2048 to 8192 bits or an Ed25519 private key, in PEM"
                .to_owned()
        })
}
