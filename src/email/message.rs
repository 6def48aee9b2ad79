//! Builds the MIME message of an email: multipart/alternative text and HTML, the PDF
//! attached, a `Message-ID` derived from the idempotency key (so a resend after a crash is
//! recognisable as the same email), the RFC 2369 / RFC 8058 unsubscribe headers, and the
//! headers that keep out-of-office replies away ([`AUTOMATIC`]).

use lettre::Message;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::secret::hex;
use crate::templates::Rendered;

/// `List-Unsubscribe: <https://…>`
#[derive(Debug, Clone)]
pub struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
#[derive(Debug, Clone)]
pub struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// `X-Herald-Ref: v1.<row>.<mac>`: herald's signed reference to the ledger row, which
/// bounces and complaints quote back.
#[derive(Debug, Clone)]
pub struct HeraldRef(String);

impl Header for HeraldRef {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Herald-Ref")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Every email herald sends is written by a machine, and says so: `Auto-Submitted` (RFC
/// 3834), which vacation responders honour, and `X-Auto-Response-Suppress` for Exchange and
/// Outlook, so a digest run does not bring back an out-of-office reply from every parent
/// away that week. Delivery reports (bounces) are not suppressed: they stop mail that does
/// not arrive.
pub const AUTOMATIC: [(&str, &str); 2] = [
    ("Auto-Submitted", "auto-generated"),
    ("X-Auto-Response-Suppress", "OOF, AutoReply"),
];

/// The Message-ID of the email with this idempotency key.
pub fn message_id(idempotency_key: &str, from_domain: &str) -> String {
    format!(
        "<{}@{from_domain}>",
        hex(&Sha256::digest(idempotency_key.as_bytes())[..16])
    )
}

/// The `Feedback-ID` of an email of `email_type` from the sender `sender_id`: Gmail's
/// feedback loop counts complaints by each field, so by email type.
pub fn feedback_id(email_type: &str, sender_id: &str) -> String {
    format!("{email_type}:{sender_id}")
}

pub struct Parts<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    /// The `Feedback-ID` header's value, when the deployment has one.
    pub feedback_id: Option<&'a str>,
    pub to: &'a str,
    pub message_id: &'a str,
    pub unsubscribe_url: &'a str,
    /// herald's signed reference to the ledger row (`X-Herald-Ref`).
    pub reference: &'a str,
    pub rendered: Rendered,
    pub pdf: Option<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("could not build the message: {0}")]
    Message(String),
}

/// An email ready to go, in no provider's format yet: SMTP and files take it as a MIME
/// message ([`Outgoing::into_message`]), SendGrid as JSON.
pub struct Outgoing {
    pub from: Mailbox,
    /// Where a reply goes, when not to the sender (`EMAIL_REPLY_TO`).
    pub reply_to: Option<Mailbox>,
    /// The `Feedback-ID` header's value ([`feedback_id`]), when the deployment has one.
    pub feedback_id: Option<String>,
    pub to: String,
    pub message_id: String,
    pub unsubscribe_url: String,
    /// herald's signed reference to the ledger row.
    pub reference: String,
    pub rendered: Rendered,
    pub pdf: Option<(String, Vec<u8>)>,
}

impl Outgoing {
    pub fn into_message(self) -> Result<Message, BuildError> {
        let Self {
            from,
            reply_to,
            feedback_id,
            to,
            message_id,
            unsubscribe_url,
            reference,
            rendered,
            pdf,
        } = self;
        build(Parts {
            from: &from,
            reply_to: reply_to.as_ref(),
            feedback_id: feedback_id.as_deref(),
            to: &to,
            message_id: &message_id,
            unsubscribe_url: &unsubscribe_url,
            reference: &reference,
            rendered,
            pdf,
        })
    }
}

pub fn build(parts: Parts<'_>) -> Result<Message, BuildError> {
    let from = parts.from.clone();
    let to: Mailbox = herald_actors::email::deliverable(parts.to)
        .parse()
        .map_err(|_| BuildError::Address("recipient".to_owned()))?;
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(parts.rendered.text))
        .singlepart(SinglePart::html(parts.rendered.html));
    let body =
        match parts.pdf {
            Some((filename, bytes)) => MultiPart::mixed().multipart(alternative).singlepart(
                Attachment::new(filename).body(
                    bytes,
                    ContentType::parse("application/pdf").expect("valid content type"),
                ),
            ),
            None => alternative,
        };
    let mut builder = Message::builder().from(from);
    if let Some(reply_to) = parts.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    if let Some(feedback_id) = parts.feedback_id {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Feedback-ID"),
            feedback_id.to_owned(),
        ));
    }
    let builder = builder
        .to(to)
        .subject(parts.rendered.subject)
        .message_id(Some(parts.message_id.to_owned()))
        .date_now()
        .header(ListUnsubscribe(format!("<{}>", parts.unsubscribe_url)))
        .header(ListUnsubscribePost)
        .header(HeraldRef(parts.reference.to_owned()));
    AUTOMATIC
        .iter()
        .fold(builder, |builder, (name, value)| {
            builder.raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(name),
                (*value).to_owned(),
            ))
        })
        .multipart(body)
        .map_err(|e| BuildError::Message(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn message_ids_are_deterministic_per_key() {
        let a = message_id("parent@example.com:session_reports:1", "herald.localhost");
        assert_eq!(
            a,
            message_id("parent@example.com:session_reports:1", "herald.localhost")
        );
        assert_ne!(
            a,
            message_id("parent@example.com:session_reports:2", "herald.localhost")
        );
        assert!(a.starts_with('<') && a.ends_with("@herald.localhost>"));
    }
}
