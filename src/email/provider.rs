//! Mail providers: `console` (logs the email, recipient masked), `smtp` (lettre's SMTP
//! connections, pooled: [`super::smtp`]), `file` (writes `.eml` files), `sendgrid`. Each reports how an attempt ended in
//! the dispatcher's terms: sent, transient (retry), permanent (fail) or unreachable (pause,
//! not counted).

use std::path::PathBuf;
use std::sync::Arc;

use herald_actors::dispatcher::Attempt;
use lettre::address::Envelope;

use super::message::Outgoing;
use super::smtp::Smtp;
use crate::config::{Dkim, EmailConfig, EmailProvider};
use crate::redact::mask_email;

#[derive(Clone)]
pub enum Mailer {
    Console,
    Smtp(Arc<Smtp>),
    File(PathBuf),
    SendGrid(Arc<super::sendgrid::SendGrid>),
}

/// What the console provider prints for an email: a banner, the sender (and where replies
/// go, when elsewhere), the recipient masked, the subject, the unsubscribe link, the
/// attachment, and the text part.
fn console_text(outgoing: &Outgoing, masked_to: &str) -> String {
    const RULE: &str = "────────────────────────────────────────────────────────────────";
    let attachment = outgoing.pdf.as_ref().map_or_else(
        || "none".to_owned(),
        |(name, bytes)| format!("{name} ({} kB)", bytes.len().div_ceil(1024)),
    );
    let reply_to = outgoing
        .reply_to
        .as_ref()
        .map_or_else(String::new, |to| format!("Reply-To:    {to}\n"));
    format!(
        "\n{RULE}\n  herald email (console provider: nothing was sent)\n{RULE}\n\
         From:        {from}\n\
         {reply_to}\
         To:          {masked_to}\n\
         Subject:     {subject}\n\
         Message-ID:  {id}\n\
         Unsubscribe: {url}\n\
         Attachment:  {attachment}\n{RULE}\n{text}\n{RULE}\n",
        from = outgoing.from,
        subject = outgoing.rendered.subject,
        id = outgoing.message_id,
        url = outgoing.unsubscribe_url,
        text = outgoing.rendered.text.trim_end(),
    )
}

impl Mailer {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        Ok(match config.provider {
            EmailProvider::Console => Self::Console,
            EmailProvider::File => Self::File(config.file_dir.clone()),
            EmailProvider::Smtp => Self::Smtp(Arc::new(Smtp::from_config(config)?)),
            EmailProvider::SendGrid => {
                Self::SendGrid(Arc::new(super::sendgrid::SendGrid::from_config(config)?))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Smtp(_) => "smtp",
            Self::File(_) => "file",
            Self::SendGrid(_) => "sendgrid",
        }
    }

    /// Reaches the provider as a send would, sending nothing: the mail server connected to
    /// and logged in to, SendGrid's key asked whether it may send. What was reached, or
    /// `Err` with why not.
    pub async fn check(&self) -> Result<String, String> {
        match self {
            Self::Console => {
                Ok("console: each email printed on standard error, none sent".to_owned())
            }
            Self::File(dir) => match std::fs::metadata(dir) {
                Ok(found) if found.is_dir() => {
                    Ok(format!("file: .eml files into {}", dir.display()))
                }
                Ok(_) => Err(format!("file: {} is not a directory", dir.display())),
                Err(_) => Ok(format!(
                    "file: .eml files into {}, made at the first email",
                    dir.display()
                )),
            },
            Self::Smtp(smtp) => smtp
                .check()
                .await
                .map(|reached| format!("smtp: {reached}"))
                .map_err(|failed| format!("smtp: {failed}")),
            Self::SendGrid(sendgrid) => sendgrid
                .check()
                .await
                .map(|()| "sendgrid: the key may send mail".to_owned())
                .map_err(|failed| format!("sendgrid: {failed}")),
        }
    }

    /// Sends `outgoing`, signed with `dkim` by the providers that deliver the bytes themselves
    /// (`smtp`, `file`).
    pub async fn send(&self, outgoing: Outgoing, dkim: Option<&Dkim>) -> Attempt {
        let sent = Attempt::Sent {
            message_id: outgoing.message_id.clone(),
        };
        match self {
            Self::SendGrid(sendgrid) => sendgrid.send(outgoing).await,
            Self::Console => {
                let (message_id, to) = (outgoing.message_id.clone(), mask_email(&outgoing.to));
                let shown = console_text(&outgoing, &to);
                match outgoing.into_message() {
                    Ok(message) => {
                        tracing::info!(%to, %message_id, bytes = message.formatted().len(), "email (console provider)");
                        // The developer sees the email itself, as one block, on stderr, so
                        // the log stream on stdout stays one line per record.
                        eprint!("{shown}");
                        sent
                    }
                    Err(err) => Attempt::Permanent(err.to_string()),
                }
            }
            Self::File(dir) => {
                let name: String = outgoing
                    .message_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect();
                let path = dir.join(format!("{name}.eml"));
                let bytes = match mime(outgoing, dkim).await {
                    Ok((_, bytes)) => bytes,
                    Err(failed) => return failed,
                };
                let written = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&path, bytes).await
                };
                match written.await {
                    Ok(()) => sent,
                    Err(err) => Attempt::Transient(format!("writing {}: {err}", path.display())),
                }
            }
            Self::Smtp(smtp) => {
                let (envelope, bytes) = match mime(outgoing, dkim).await {
                    Ok(built) => built,
                    Err(failed) => return failed,
                };
                match smtp.send(&envelope, bytes).await {
                    Ok(()) => sent,
                    Err(failed) => failed,
                }
            }
        }
    }
}

/// `outgoing` as a MIME message: its envelope and its bytes, DKIM-signed when `dkim` is set.
async fn mime(outgoing: Outgoing, dkim: Option<&Dkim>) -> Result<(Envelope, Vec<u8>), Attempt> {
    let message = outgoing
        .into_message()
        .map_err(|err| Attempt::Permanent(err.to_string()))?;
    let bytes = signed(dkim, message.formatted()).await?;
    Ok((message.envelope().clone(), bytes))
}

/// `bytes` with a DKIM signature in front when `dkim` is set. An RSA signature costs a
/// millisecond or two of CPU: it is made on a blocking thread, not on the async workers.
async fn signed(dkim: Option<&Dkim>, bytes: Vec<u8>) -> Result<Vec<u8>, Attempt> {
    let Some(dkim) = dkim.cloned() else {
        return Ok(bytes);
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::task::spawn_blocking(move || super::dkim::sign(&dkim, &bytes, now))
        .await
        .map_err(|e| Attempt::Transient(format!("DKIM signing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_shows_the_email_with_the_recipient_masked() {
        let mut outgoing = Outgoing {
            from: "reports@herald.example.org".parse().unwrap(),
            reply_to: None,
            feedback_id: None,
            to: "parent@example.com".to_owned(),
            message_id: "<id@herald.example.org>".to_owned(),
            unsubscribe_url: "https://herald.example.org/u/v1.x.y".to_owned(),
            reference: "v1.0.0".to_owned(),
            rendered: crate::templates::Rendered {
                subject: "Ada's session report: Fractions".to_owned(),
                text: "Ada finished a session on Fractions.\n".to_owned(),
                html: String::new(),
            },
            pdf: Some(("report.pdf".to_owned(), vec![0; 2048])),
        };
        let shown = console_text(&outgoing, &mask_email(&outgoing.to));
        assert!(!shown.contains("Reply-To:"), "{shown}");
        outgoing.reply_to = Some("Support <help@herald.example.org>".parse().unwrap());
        let replied = console_text(&outgoing, &mask_email(&outgoing.to));
        assert!(
            replied.contains("\nReply-To:    Support <help@herald.example.org>\nTo:"),
            "{replied}"
        );
        for expected in [
            "herald email (console provider: nothing was sent)",
            "From:        reports@herald.example.org",
            "To:          pa***@example.com",
            "Subject:     Ada's session report: Fractions",
            "Unsubscribe: https://herald.example.org/u/v1.x.y",
            "Attachment:  report.pdf (2 kB)",
            "Ada finished a session on Fractions.",
        ] {
            assert!(shown.contains(expected), "{expected:?} not in\n{shown}");
        }
        assert!(!shown.contains("parent@example.com"));
    }
}
