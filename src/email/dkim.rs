//! DKIM signatures (RFC 6376; Ed25519 by RFC 8463) over a message exactly as it is sent:
//! relaxed canonicalization of headers and body, SHA-256, the signature prepended as the
//! first header. Signing the formatted bytes covers every header the message carries,
//! including a multipart message's own `Content-Type`. Checked against an independent
//! verifier (dkimpy) in the tests.

use base64::Engine;

use crate::config::{Dkim, DkimKey, SIGNED_HEADERS};

/// `message` (CRLF line ends, headers then a blank line then the body) with a
/// `DKIM-Signature` header in front, made at `now_secs`.
pub fn sign(dkim: &Dkim, message: &[u8], now_secs: u64) -> Vec<u8> {
    let (head, body) = split(message);
    let fields = header_fields(head);
    let b64 = base64::engine::general_purpose::STANDARD;
    let body_hash = b64.encode(body_digest(body));
    // Only the headers present, in the order the list gives them.
    let mut names = Vec::new();
    let mut hashed = Vec::new();
    for wanted in SIGNED_HEADERS {
        if let Some((name, value)) = fields
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
        {
            names.push(name.to_ascii_lowercase());
            hashed.extend(canonical_header(name, value));
            hashed.extend(b"\r\n");
        }
    }
    let unsigned = format!(
        "v=1; a={}; c=relaxed/relaxed; d={}; s={}; t={now_secs}; h={}; bh={body_hash}; b=",
        dkim.key.algorithm(),
        dkim.domain,
        dkim.selector,
        names.join(":")
    );
    hashed.extend(canonical_header("DKIM-Signature", unsigned.as_bytes()));
    let signature = match &*dkim.key {
        // RSASSA-PKCS1-v1_5 with SHA-256 over the header data (ring hashes it).
        DkimKey::Rsa(key) => {
            let mut signature = vec![0; key.public().modulus_len()];
            key.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                &hashed,
                &mut signature,
            )
            .expect("a parsed RSA key signs");
            signature
        }
        // RFC 8463: Ed25519 over the SHA-256 digest of the header data.
        DkimKey::Ed25519(key) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, &hashed);
            key.sign(digest.as_ref()).as_ref().to_vec()
        }
    };
    let mut signed = Vec::with_capacity(message.len() + unsigned.len() + 400);
    signed.extend(b"DKIM-Signature: ");
    signed.extend(unsigned.as_bytes());
    signed.extend(b64.encode(signature).as_bytes());
    signed.extend(b"\r\n");
    signed.extend(message);
    signed
}

/// The header block (without the blank line) and the body.
fn split(message: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(at) => (&message[..at + 2], &message[at + 4..]),
        None => (message, &[]),
    }
}

/// Each header field as its name and its raw value (folding included, final CRLF not).
fn header_fields(head: &[u8]) -> Vec<(String, &[u8])> {
    let mut fields: Vec<(String, &[u8])> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end_of_field =
            head[i..].starts_with(b"\r\n") && !matches!(head.get(i + 2), Some(b' ' | b'\t'));
        if end_of_field {
            let field = &head[start..i];
            if let Some(colon) = memchr::memchr(b':', field) {
                let name = String::from_utf8_lossy(&field[..colon]).trim().to_owned();
                fields.push((name, &field[colon + 1..]));
            }
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    fields
}

/// RFC 6376 3.4.2: the name lowercased, the value unfolded, runs of whitespace as one space,
/// none at either end.
fn canonical_header(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = name.trim().to_ascii_lowercase().into_bytes();
    out.push(b':');
    let mut space = false;
    let mut started = false;
    for &byte in value {
        match byte {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => space = true,
            _ => {
                // Whitespace inside the value becomes one space; before it, none.
                if space && started {
                    out.push(b' ');
                }
                space = false;
                started = true;
                out.push(byte);
            }
        }
    }
    out
}

/// RFC 6376 3.4.4, relaxed: whitespace at line ends dropped, runs of whitespace as one
/// space, empty lines at the end dropped, a CRLF at the end of a non-empty body. Written to
/// `out` a run at a time: a line without whitespace to change goes as it is.
fn canonicalize_body(body: &[u8], mut out: impl FnMut(&[u8])) {
    let mut blank_lines = 0usize;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let end = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |last| last + 1);
        let line = &line[..end];
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        for _ in 0..blank_lines {
            out(b"\r\n");
        }
        blank_lines = 0;
        let mut rest = line;
        while let Some(at) = memchr::memchr2(b' ', b'\t', rest) {
            out(&rest[..at]);
            out(b" ");
            let run = rest[at..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            rest = &rest[at + run..];
        }
        out(rest);
        out(b"\r\n");
    }
}

/// The SHA-256 digest of the canonical body.
fn body_digest(body: &[u8]) -> ring::digest::Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    canonicalize_body(body, |part| context.update(part));
    context.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_body(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        canonicalize_body(body, |part| out.extend(part));
        out
    }

    #[test]
    fn bodies_and_headers_canonicalize_as_rfc_6376_shows() {
        // RFC 6376 3.4.5, relaxed.
        assert_eq!(canonical_header("A", b" X"), b"a:X");
        assert_eq!(canonical_header("B ", b" Y\t\r\n\tZ  "), b"b:Y Z");
        assert_eq!(
            canonical_header("Subject", b" Ada: a  report "),
            b"subject:Ada: a report"
        );
        assert_eq!(
            canonical_body(b" C \r\nD \t E\r\n\r\n\r\n"),
            b" C\r\nD E\r\n"
        );
        assert_eq!(canonical_body(b""), b"");
        assert_eq!(canonical_body(b"\r\n\r\n"), b"");
        assert_eq!(canonical_body(b"x\r\n\r\ny"), b"x\r\n\r\ny\r\n");
    }

    #[test]
    fn folded_fields_are_read_whole() {
        let fields =
            header_fields(b"From: a@b\r\nContent-Type: multipart/mixed;\r\n boundary=\"x\"\r\n");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].0, "Content-Type");
        assert_eq!(
            canonical_header(&fields[1].0, fields[1].1),
            b"content-type:multipart/mixed; boundary=\"x\""
        );
    }
}
