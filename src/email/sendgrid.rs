//! The `sendgrid` provider: SendGrid's v3 Mail Send API over a pooled HTTPS client
//! (rustls), each request bounded by `SMTP_TIMEOUT_SECONDS`. The same email as over SMTP:
//! text and HTML, the PDF attached, `List-Unsubscribe` and `List-Unsubscribe-Post`, and
//! herald's reference both as the `X-Herald-Ref` header and in `custom_args` (so SendGrid's
//! events carry it back). SendGrid signs with its own DKIM.
//!
//! Its answers in the dispatcher's terms: 2xx sent (SendGrid's `X-Message-Id` recorded);
//! 429, 5xx and timeouts retried with the backoff, not sooner than SendGrid says (a 429's
//! `X-RateLimit-Reset`, the instant its rate-limit period ends, or a `Retry-After`); 401 and
//! 403 pause sending like a refused SMTP login, burning no attempt; any other 4xx fails the
//! email with SendGrid's own error text.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use herald_actors::dispatcher::Attempt;
use serde_json::{Value, json};

use super::message::Outgoing;
use crate::config::EmailConfig;
use crate::secret::Secret;

pub struct SendGrid {
    client: reqwest::Client,
    /// `{SENDGRID_API_URL}/v3/mail/send`.
    endpoint: String,
    /// `{SENDGRID_API_URL}/v3/scopes`: what the key may do.
    scopes: String,
    api_key: Secret,
}

impl SendGrid {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        let settings = config
            .sendgrid
            .as_ref()
            .context("EMAIL_PROVIDER=sendgrid needs SENDGRID_API_KEY")?;
        let client = reqwest::Client::builder()
            .timeout(config.delivery.smtp_timeout)
            .connect_timeout(config.delivery.smtp_timeout)
            .pool_max_idle_per_host(config.delivery.concurrency)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .context("building the SendGrid HTTP client")?;
        Ok(Self {
            client,
            endpoint: format!("{}/v3/mail/send", settings.api_url),
            scopes: format!("{}/v3/scopes", settings.api_url),
            api_key: settings.api_key.clone(),
        })
    }

    pub async fn send(&self, outgoing: Outgoing) -> Attempt {
        let body = request(&outgoing);
        let response = self
            .client
            .post(&self.endpoint)
            .bearer_auth(self.api_key.expose())
            .json(&body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) if err.is_timeout() => {
                return Attempt::Transient(format!("SendGrid did not answer in time: {err}"));
            }
            Err(err) if err.is_connect() => {
                return Attempt::Unreachable(format!("SendGrid unreachable: {err}"));
            }
            Err(err) => return Attempt::Transient(format!("SendGrid request failed: {err}")),
        };
        let status = response.status();
        let message_id = header(&response, "x-message-id");
        let retry_after = wait_seconds(&response, unix_now());
        let text = response.text().await.unwrap_or_default();
        let said = format!("SendGrid {}: {}", status.as_u16(), errors(&text));
        match status.as_u16() {
            200..=299 => Attempt::Sent {
                message_id: message_id.unwrap_or_else(|| outgoing.message_id.clone()),
            },
            401 | 403 => Attempt::Unreachable(said),
            429 | 500..=599 => match retry_after {
                Some(seconds) => Attempt::RetryAfter {
                    error: said,
                    after_ms: seconds.max(0).saturating_mul(1000),
                },
                None => Attempt::Transient(said),
            },
            _ => Attempt::Permanent(said),
        }
    }

    /// Whether the key may send mail, asked of SendGrid without sending any: the key's
    /// scopes (`GET /v3/scopes`) must hold `mail.send`. `Err` says what SendGrid answered.
    pub async fn check(&self) -> Result<(), String> {
        let response = self
            .client
            .get(&self.scopes)
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|err| format!("SendGrid unreachable: {err}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("SendGrid {}: {}", status.as_u16(), errors(&text)));
        }
        let scopes: Value = serde_json::from_str(&text).unwrap_or_default();
        let listed = scopes["scopes"].as_array();
        if listed.is_some_and(|s| s.iter().any(|s| s == "mail.send")) {
            Ok(())
        } else {
            Err(
                "the key cannot send mail: SendGrid lists no `mail.send` among its scopes"
                    .to_owned(),
            )
        }
    }
}

/// How long SendGrid asks to wait, in seconds: `Retry-After`, or until `X-RateLimit-Reset`
/// (a Unix time, which its 429 carries) as seen at `now` (Unix seconds).
fn wait_seconds(response: &reqwest::Response, now: i64) -> Option<i64> {
    let number = |name| header(response, name).and_then(|s| s.parse::<i64>().ok());
    number("retry-after").or_else(|| number("x-ratelimit-reset").map(|reset| reset - now))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// SendGrid's error messages (`{"errors": [{"message", "field"}]}`), or the body as it is.
fn errors(body: &str) -> String {
    let listed: Option<Vec<String>> = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v["errors"].as_array().map(|errors| {
            errors
                .iter()
                .map(|e| match e["field"].as_str() {
                    Some(field) => format!("{} ({field})", e["message"].as_str().unwrap_or("")),
                    None => e["message"].as_str().unwrap_or("").to_owned(),
                })
                .collect()
        })
    });
    match listed {
        Some(messages) if !messages.is_empty() => messages.join("; "),
        _ => body.chars().take(300).collect(),
    }
}

/// The v3 Mail Send request for `outgoing`.
pub fn request(outgoing: &Outgoing) -> Value {
    let mut from = json!({ "email": outgoing.from.email.to_string() });
    if let Some(name) = &outgoing.from.name {
        from["name"] = json!(name);
    }
    let mut body = json!({
        "personalizations": [{ "to": [{ "email": herald_actors::email::deliverable(&outgoing.to) }] }],
        "from": from,
        "subject": outgoing.rendered.subject,
        // SendGrid requires text/plain first, then text/html.
        "content": [
            { "type": "text/plain", "value": outgoing.rendered.text },
            { "type": "text/html", "value": outgoing.rendered.html },
        ],
        "headers": {
            "List-Unsubscribe": format!("<{}>", outgoing.unsubscribe_url),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Herald-Ref": outgoing.reference,
        },
        "custom_args": { "herald_ref": outgoing.reference },
    });
    // Reply-To is one of the headers SendGrid reserves: it takes the address as a field.
    if let Some(reply_to) = &outgoing.reply_to {
        body["reply_to"] = json!({ "email": reply_to.email.to_string() });
        if let Some(name) = &reply_to.name {
            body["reply_to"]["name"] = json!(name);
        }
    }
    for (name, value) in crate::email::message::AUTOMATIC {
        body["headers"][name] = json!(value);
    }
    if let Some(feedback_id) = &outgoing.feedback_id {
        body["headers"]["Feedback-ID"] = json!(feedback_id);
    }
    if let Some((filename, bytes)) = &outgoing.pdf {
        body["attachments"] = json!([{
            "content": base64::engine::general_purpose::STANDARD.encode(bytes),
            "type": "application/pdf",
            "filename": filename,
            "disposition": "attachment",
        }]);
    }
    body
}
