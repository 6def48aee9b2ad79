//! Delivery events: the secret of the generic signed webhook, SendGrid's Event Webhook
//! public key, and when soft bounces add up to a suppression.

use std::time::Duration;

use super::reader::Reader;
use crate::secret::Secret;

/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo (RFC 5480), before the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Signs posts to `POST /api/v1/email/events` (HMAC-SHA256); the route answers 404
    /// while unset.
    pub secret: Option<Secret>,
    /// SendGrid's Event Webhook verification key, as the uncompressed P-256 point; the
    /// route answers 404 while unset.
    pub sendgrid_public_key: Option<Vec<u8>>,
    /// How old a signed post may be (its timestamp), so a captured one cannot be replayed
    /// later.
    pub max_age: Duration,
    /// This many soft bounces of one address within `soft_bounce_window` suppress it.
    pub soft_bounce_limit: u32,
    pub soft_bounce_window: Duration,
}

impl EventsConfig {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        let secret = r.get("EMAIL_EVENTS_SECRET");
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            r.problem("EMAIL_EVENTS_SECRET: must be at least 16 characters");
        }
        let sendgrid_public_key = r.get("SENDGRID_WEBHOOK_PUBLIC_KEY").and_then(|raw| {
            use base64::Engine;
            let der = base64::engine::general_purpose::STANDARD
                .decode(raw.trim())
                .unwrap_or_default();
            let point = match der.len() {
                65 => Some(der),
                91 if der.starts_with(&P256_SPKI_PREFIX) => Some(der[26..].to_vec()),
                _ => None,
            };
            if point.is_none() {
                r.problem(
                    "SENDGRID_WEBHOOK_PUBLIC_KEY: expected the base64 P-256 public key SendGrid shows for the Event Webhook",
                );
            }
            point
        });
        let soft_bounce_limit = r.parse("SOFT_BOUNCE_LIMIT", 3u32, "a whole number");
        r.nonzero("SOFT_BOUNCE_LIMIT", soft_bounce_limit == 0);
        Self {
            secret: secret.map(Secret::new),
            sendgrid_public_key,
            max_age: r.seconds("EMAIL_EVENTS_MAX_AGE_SECONDS", 300),
            soft_bounce_limit,
            soft_bounce_window: r.days("SOFT_BOUNCE_WINDOW_DAYS", 7),
        }
    }
}
