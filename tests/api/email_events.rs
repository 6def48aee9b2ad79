//! Bounces and complaints reported after sending: the generic signed webhook and SendGrid's
//! signed Event Webhook, each verified (signature and age) before anything is read, applied
//! once however often they are delivered, and turned into suppressions that stop the mail.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::Sha256;

use herald_actors::clock::Clock;

use crate::email::{complete_for, ledger};
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::smtp::SmtpServer;

const SECRET: &str = "events-secret-0123456789";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

async fn suppression(app: &TestApp, email: &str) -> Option<Value> {
    let listed: Value = app
        .get_admin(&format!("/admin/suppressions?email={email}"))
        .await
        .json()
        .await
        .unwrap();
    listed["suppressions"].as_array().unwrap().first().cloned()
}

/// Posts `body` to the generic webhook, signed with `secret` at `at` (Unix seconds).
async fn post_generic(app: &TestApp, body: &str, secret: &str, at: i64) -> reqwest::Response {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{at}.{body}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    app.client
        .post(app.url("/api/v1/email/events"))
        .header("X-Herald-Timestamp", at.to_string())
        .header("X-Herald-Signature", format!("sha256={signature}"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn now_secs(app: &TestApp) -> i64 {
    app.clock.now_ms() as i64 / 1000
}

async fn generic_events_are_verified_applied_once_and_stop_the_mail(backend: Backend) {
    let smtp = SmtpServer::start().await;
    let configure = |vars: &mut HashMap<String, String>| {
        smtp.configure(vars);
        vars.insert("EMAIL_EVENTS_SECRET".into(), SECRET.into());
        vars.insert("API_BASE_URL".into(), "https://herald.example.org".into());
        vars.insert("EMAIL_FROM".into(), "reports@herald.example.org".into());
    };
    let app = spawn_app_with(backend, configure, None).await;
    let now = now_secs(&app);

    // A hard bounce, posted twice: applied once.
    let body = json!({"email": "gone@example.com", "kind": "hard_bounce", "reason": "550 5.1.1 user unknown"}).to_string();
    let first = post_generic(&app, &body, SECRET, now).await;
    assert_eq!(first.status(), 202);
    assert_eq!(first.json::<Value>().await.unwrap()["applied"], 1);
    let repeat = post_generic(&app, &body, SECRET, now).await;
    assert_eq!(repeat.status(), 202);
    assert_eq!(repeat.json::<Value>().await.unwrap()["applied"], 0);
    let gone = suppression(&app, "gone@example.com")
        .await
        .expect("suppressed");
    assert_eq!(
        (gone["reason"].as_str(), gone["source"].as_str()),
        (Some("bounced"), Some("webhook"))
    );

    // Forged, tampered, stale or unsigned posts are refused alike, and change nothing.
    let other = json!({"email": "victim@example.com", "kind": "complaint"}).to_string();
    for response in [
        post_generic(&app, &other, "not-the-secret-at-all", now).await,
        post_generic(&app, &other, SECRET, now - 3_600).await,
        // Signed, but at instants so far off that their distance from now overflows.
        post_generic(&app, &other, SECRET, i64::MIN).await,
        post_generic(&app, &other, SECRET, i64::MAX).await,
        app.client
            .post(app.url("/api/v1/email/events"))
            .body(other.clone())
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(response.status(), 403);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "INVALID_SIGNATURE");
    }
    assert!(suppression(&app, "victim@example.com").await.is_none());

    // A complaint, then a completion for that parent: suppressed, nothing sent.
    let complaint = json!({"email": "angry@example.com", "kind": "complaint"}).to_string();
    assert_eq!(
        post_generic(&app, &complaint, SECRET, now).await.status(),
        202
    );
    let (_, done) = complete_for(&app, "angry@example.com").await;
    assert_eq!(
        done.json::<Value>().await.unwrap()["report_email"],
        "suppressed"
    );
    assert_eq!(
        ledger(&app, "angry@example.com").await[0]["reason"],
        "complained"
    );

    // Soft bounces suppress once three fall within the window.
    for i in 0..3 {
        let soft =
            json!({"email": "full@example.com", "kind": "soft_bounce", "id": format!("soft-{i}")})
                .to_string();
        assert_eq!(post_generic(&app, &soft, SECRET, now).await.status(), 202);
        assert_eq!(
            suppression(&app, "full@example.com").await.is_some(),
            i == 2,
            "after {}",
            i + 1
        );
    }

    // A bounce that quotes the email's X-Herald-Ref names its recipient without the address.
    complete_for(&app, "quoted@example.com").await;
    let sent = smtp.wait_for(1).await.remove(0);
    let text = String::from_utf8_lossy(&sent.data).into_owned();
    let reference = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Herald-Ref: "))
        .expect("every email carries its reference")
        .trim()
        .to_owned();
    let by_ref = json!({"ref": reference, "kind": "hard_bounce"}).to_string();
    assert_eq!(post_generic(&app, &by_ref, SECRET, now).await.status(), 202);
    assert!(suppression(&app, "quoted@example.com").await.is_some());
    let forged =
        json!({"ref": reference.replacen('.', ".0", 1), "kind": "hard_bounce"}).to_string();
    assert_eq!(post_generic(&app, &forged, SECRET, now).await.status(), 422);
}

/// A P-256 key pair: SendGrid's verification key as it shows it (base64 SubjectPublicKeyInfo)
/// and a signer of posts.
pub(crate) fn sendgrid_keys() -> (String, EcdsaKeyPair) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    (b64().encode(spki), pair)
}

async fn post_sendgrid(
    app: &TestApp,
    pair: &EcdsaKeyPair,
    body: &str,
    at: i64,
) -> reqwest::Response {
    let rng = ring::rand::SystemRandom::new();
    let signature = pair.sign(&rng, format!("{at}{body}").as_bytes()).unwrap();
    app.client
        .post(app.url("/api/v1/email/events/sendgrid"))
        .header(
            "X-Twilio-Email-Event-Webhook-Signature",
            b64().encode(signature.as_ref()),
        )
        .header("X-Twilio-Email-Event-Webhook-Timestamp", at.to_string())
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn sendgrid_events_are_verified_and_mapped(backend: Backend) {
    let (public, pair) = sendgrid_keys();
    let app = spawn_app_with(
        backend,
        |vars| {
            vars.insert("SENDGRID_WEBHOOK_PUBLIC_KEY".into(), public.clone());
        },
        None,
    )
    .await;
    let now = now_secs(&app);
    let body = json!([
        {"email": "hard@example.com", "event": "bounce", "type": "bounce", "reason": "550 5.1.1 unknown", "sg_event_id": "e1", "timestamp": now},
        {"email": "spam@example.com", "event": "spamreport", "sg_event_id": "e2", "timestamp": now},
        {"email": "later@example.com", "event": "deferred", "reason": "451 try later", "sg_event_id": "e3", "timestamp": now},
        {"email": "blocked@example.com", "event": "bounce", "type": "blocked", "sg_event_id": "e4", "timestamp": now},
        {"email": "invalid@example.com", "event": "dropped", "reason": "Invalid", "sg_event_id": "e5", "timestamp": now},
        {"email": "fine@example.com", "event": "delivered", "sg_event_id": "e6", "timestamp": now}
    ])
    .to_string();
    let accepted = post_sendgrid(&app, &pair, &body, now).await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(
        (accepted["events"].as_u64(), accepted["applied"].as_u64()),
        (Some(6), Some(5))
    );
    for (email, reason) in [
        ("hard@example.com", Some("bounced")),
        ("spam@example.com", Some("complained")),
        ("later@example.com", None),
        ("blocked@example.com", None),
        ("invalid@example.com", Some("bounced")),
        ("fine@example.com", None),
    ] {
        let found = suppression(&app, email).await;
        assert_eq!(
            found.as_ref().and_then(|s| s["reason"].as_str()),
            reason,
            "{email}"
        );
        if let Some(found) = found {
            assert_eq!(found["source"], "sendgrid");
        }
    }
    // SendGrid retries a post it thinks failed: nothing is applied twice.
    let again: Value = post_sendgrid(&app, &pair, &body, now)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["applied"], 0);
    // A tampered body, another key, or a stale timestamp is refused.
    let tampered = body.replace("fine@", "victim@");
    let (_, stranger) = sendgrid_keys();
    for response in [
        {
            let rng = ring::rand::SystemRandom::new();
            let signature = pair.sign(&rng, format!("{now}{body}").as_bytes()).unwrap();
            app.client
                .post(app.url("/api/v1/email/events/sendgrid"))
                .header(
                    "X-Twilio-Email-Event-Webhook-Signature",
                    b64().encode(signature.as_ref()),
                )
                .header("X-Twilio-Email-Event-Webhook-Timestamp", now.to_string())
                .body(tampered.clone())
                .send()
                .await
                .unwrap()
        },
        post_sendgrid(&app, &stranger, &body, now).await,
        post_sendgrid(&app, &pair, &body, now - 3_600).await,
    ] {
        assert_eq!(response.status(), 403);
    }
}

#[tokio::test]
async fn unconfigured_webhooks_are_not_found() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    for path in ["/api/v1/email/events", "/api/v1/email/events/sendgrid"] {
        let response = app
            .client
            .post(app.url(path))
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

crate::on_both_backends!(
    generic_events_are_verified_applied_once_and_stop_the_mail,
    sendgrid_events_are_verified_and_mapped,
);
