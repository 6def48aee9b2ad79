//! DKIM end to end: herald signs what it sends over SMTP, and an independent verifier
//! (dkimpy, from PyPI) checks the message exactly as the SMTP server received it, with the
//! public key a DNS TXT record would publish. A changed header breaks the signature.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::email::{complete_for, spawn_mail_app_with};
use crate::helpers::{Backend, tool_present};
use crate::smtp::SmtpServer;

const VERIFY: &str = r#"
import sys, dkim
message = open(sys.argv[1], "rb").read()
record = open(sys.argv[2], "rb").read()
print(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))
"#;

/// `python3` with dkimpy, or `None` (and a note) where it is not installed; CI installs it.
fn verifier() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    tool_present(ok, "dkimpy", "pip install dkimpy pynacl").then_some("python3")
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A private key file of `kind` (`RSA` or `ed25519`, PKCS#8 as `openssl genpkey` writes it)
/// and the TXT record that would publish its public key.
fn keypair(kind: &str, dir: &Path) -> (PathBuf, String) {
    let key = dir.join(format!("{kind}.pem"));
    let key_path = key.to_str().unwrap();
    let mut args = vec!["genpkey", "-algorithm", kind, "-out", key_path];
    if kind == "RSA" {
        args.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
    }
    openssl(&args);
    let public = openssl(&["pkey", "-in", key_path, "-pubout", "-outform", "DER"]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let record = if kind == "RSA" {
        format!("v=DKIM1; k=rsa; p={}", b64.encode(&public))
    } else {
        // RFC 8463: the raw 32-byte key, not its SubjectPublicKeyInfo.
        format!(
            "v=DKIM1; k=ed25519; p={}",
            b64.encode(&public[public.len() - 32..])
        )
    };
    (key, record)
}

fn verify(python: &str, dir: &Path, message: &[u8], record: &str) -> bool {
    let (message_file, record_file) = (dir.join("message.eml"), dir.join("record.txt"));
    std::fs::write(&message_file, message).unwrap();
    std::fs::write(&record_file, record).unwrap();
    let out = Command::new(python)
        .args(["-c", VERIFY])
        .arg(&message_file)
        .arg(&record_file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dkimpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said.trim() == "True"
}

async fn signed_over_smtp(kind: &str) {
    let Some(python) = verifier() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (key, record) = keypair(kind, dir.path());
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app_with(
        Backend::Sqlite,
        &smtp,
        &[
            ("DKIM_DOMAIN", "herald.example.org"),
            ("DKIM_SELECTOR", "reports2026"),
            ("DKIM_PRIVATE_KEY_FILE", key.to_str().unwrap()),
            ("EMAIL_REPLY_TO", "Support <help@herald.example.org>"),
            ("EMAIL_FEEDBACK_ID", "herald-example"),
        ],
    )
    .await;
    complete_for(&app, "parent@example.com").await;
    let message = smtp.wait_for(1).await.remove(0).data;
    let text = String::from_utf8_lossy(&message).into_owned();
    let signature = text
        .split("\r\n")
        .skip_while(|l| !l.starts_with("DKIM-Signature:"))
        .take_while(|l| l.starts_with("DKIM-Signature:") || l.starts_with([' ', '\t']))
        .collect::<String>()
        .to_ascii_lowercase();
    assert!(signature.contains("d=herald.example.org"), "{signature}");
    assert!(signature.contains("s=reports2026"), "{signature}");
    for header in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "reply-to",
        "feedback-id",
    ] {
        let signed = signature
            .split("h=")
            .nth(1)
            .and_then(|h| h.split(';').next())
            .unwrap_or_default();
        assert!(
            signed.split(':').any(|h| h.trim() == header),
            "{header} is not signed: {signature}"
        );
    }
    assert!(
        verify(python, dir.path(), &message, &record),
        "a valid signature"
    );

    // A changed header, or a one-click unsubscribe link rewritten in transit, fails.
    let tampered = text.replacen("Subject: ", "Subject: Re: ", 1);
    assert!(!verify(python, dir.path(), tampered.as_bytes(), &record));
    let tampered = text.replacen(
        "List-Unsubscribe: <https://",
        "List-Unsubscribe: <https://evil.",
        1,
    );
    assert_ne!(tampered, text);
    assert!(!verify(python, dir.path(), tampered.as_bytes(), &record));
    // Gmail's feedback loop counts complaints by the signed Feedback-ID, the email's type
    // first; one changed in transit fails.
    assert!(
        text.contains("\r\nFeedback-ID: session_reports:herald-example\r\n"),
        "{text}"
    );
    let tampered = text.replacen("Feedback-ID: session_reports:", "Feedback-ID: other:", 1);
    assert_ne!(tampered, text);
    assert!(!verify(python, dir.path(), tampered.as_bytes(), &record));
    // A parent's reply cannot be sent elsewhere in transit either.
    let tampered = text.replacen("help@herald.example.org", "help@evil.example", 1);
    assert_ne!(tampered, text);
    assert!(!verify(python, dir.path(), tampered.as_bytes(), &record));
}

#[tokio::test]
async fn an_rsa_signature_verifies_and_a_changed_header_breaks_it() {
    signed_over_smtp("RSA").await;
}

#[tokio::test]
async fn an_ed25519_signature_verifies_and_a_changed_header_breaks_it() {
    signed_over_smtp("ed25519").await;
}

/// `herald check` prints the TXT record to publish for the key: the very record openssl
/// derives from the key file (the record the signatures above verify with).
#[tokio::test]
async fn check_prints_the_record_that_publishes_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, algorithm) in [("RSA", "rsa"), ("ed25519", "ed25519")] {
        let (key, record) = keypair(kind, dir.path());
        let vars = std::collections::HashMap::from(
            [
                ("EMAIL_PROVIDER", "file"),
                ("EMAIL_FILE_DIR", dir.path().to_str().unwrap()),
                ("EMAIL_FROM", "reports@herald.example.org"),
                ("DKIM_DOMAIN", "herald.example.org"),
                ("DKIM_SELECTOR", "reports2026"),
                ("DKIM_PRIVATE_KEY_FILE", key.to_str().unwrap()),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let (_, lines) = crate::check::check("sqlite::memory:", &vars).await;
        assert_eq!(
            crate::check::line(&lines, "dkim"),
            format!(
                "dkim      ok    signs with {algorithm}-sha256 as \
                 reports2026._domainkey.herald.example.org; publish there the TXT record {record}"
            ),
        );
    }
}

#[test]
fn a_bad_key_or_a_sender_outside_the_domain_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keypair("ed25519", dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let load = |vars: &[(&str, &str)]| {
        let mut all: std::collections::HashMap<String, String> = [
            ("API_ACCESS_KEY", "k"),
            ("SECRET_KEY", "s"),
            ("EMAIL_FROM", "reports@herald.example.org"),
        ]
        .iter()
        .chain(vars)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        all.insert("DKIM_SELECTOR".into(), "s1".into());
        herald::config::Config::from_lookup(&move |k| all.get(k).cloned())
    };
    let key = key.to_str().unwrap();
    let ok = load(&[
        ("DKIM_DOMAIN", "example.org"),
        ("DKIM_PRIVATE_KEY_FILE", key),
    ])
    .unwrap();
    let dkim = ok.email.dkim.expect("configured");
    assert_eq!(dkim.key.algorithm(), "ed25519-sha256");
    assert!(!format!("{dkim:?}").contains(&std::fs::read_to_string(key).unwrap()[30..60]));

    let errors = load(&[("DKIM_DOMAIN", "other.org"), ("DKIM_PRIVATE_KEY_FILE", key)])
        .unwrap_err()
        .0;
    assert!(
        errors[0].starts_with("DKIM_DOMAIN: 'other.org' does not cover"),
        "{errors:?}"
    );
    let errors = load(&[
        ("DKIM_DOMAIN", "herald.example.org"),
        ("DKIM_PRIVATE_KEY_FILE", garbage.to_str().unwrap()),
    ])
    .unwrap_err()
    .0;
    assert!(
        errors[0].starts_with("DKIM_PRIVATE_KEY_FILE:"),
        "{errors:?}"
    );
    let errors = load(&[("DKIM_DOMAIN", "herald.example.org")])
        .unwrap_err()
        .0;
    assert!(errors[0].contains("set all three"), "{errors:?}");
    // SendGrid signs with its own key: herald's would be set and never used.
    let errors = load(&[
        ("DKIM_DOMAIN", "example.org"),
        ("DKIM_PRIVATE_KEY_FILE", key),
        ("EMAIL_PROVIDER", "sendgrid"),
        ("SENDGRID_API_KEY", "SG.test"),
    ])
    .unwrap_err()
    .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("DKIM_DOMAIN: the sendgrid provider sends with SendGrid's own"),
        "{errors:?}"
    );
}
