//! Mail providers: `console` (logs the email, recipient masked), `smtp` (lettre, pooled),
//! `file` (writes `.eml` files). Each reports how an attempt ended in the dispatcher's
//! terms: sent, transient (retry), permanent (fail) or unreachable (pause, not counted).

use std::path::PathBuf;
use std::time::Duration;

use herald_actors::dispatcher::Attempt;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailConfig, EmailProvider, SmtpTls};
use crate::redact::mask_email;

#[derive(Clone)]
pub enum Mailer {
    Console,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(PathBuf),
}

impl Mailer {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        Ok(match config.provider {
            EmailProvider::Console => Self::Console,
            EmailProvider::File => Self::File(config.file_dir.clone()),
            EmailProvider::Smtp => {
                let smtp = &config.smtp;
                let host = smtp.host.clone().unwrap_or_default();
                let builder = match smtp.tls {
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                    }
                    SmtpTls::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                            .tls(Tls::Required(TlsParameters::new(host.clone())?))
                    }
                    SmtpTls::Tls => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                            .tls(Tls::Wrapper(TlsParameters::new(host.clone())?))
                    }
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(config.delivery.smtp_timeout))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(config.delivery.concurrency as u32)
                            .idle_timeout(Duration::from_secs(60)),
                    );
                if let (Some(user), Some(password)) = (&smtp.user, &smtp.password) {
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
                }
                Self::Smtp(builder.build())
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Smtp(_) => "smtp",
            Self::File(_) => "file",
        }
    }

    /// Sends `message`, whose Message-ID is `message_id`.
    pub async fn send(&self, message: Message, message_id: &str) -> Attempt {
        let sent = Attempt::Sent {
            message_id: message_id.to_owned(),
        };
        match self {
            Self::Console => {
                let to = message
                    .envelope()
                    .to()
                    .first()
                    .map(|a| mask_email(a.as_ref()))
                    .unwrap_or_default();
                tracing::info!(%to, %message_id, bytes = message.formatted().len(), "email (console provider)");
                sent
            }
            Self::File(dir) => {
                let name: String = message_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .collect();
                let path = dir.join(format!("{name}.eml"));
                let written = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&path, message.formatted()).await
                };
                match written.await {
                    Ok(()) => sent,
                    Err(err) => Attempt::Transient(format!("writing {}: {err}", path.display())),
                }
            }
            Self::Smtp(transport) => match transport.send(message).await {
                Ok(_) => sent,
                Err(err) => classify(&err),
            },
        }
    }
}

/// The server's reply decides: 5xx is permanent, 4xx and timeouts transient; no reply at
/// all means the server could not be reached.
fn classify(err: &lettre::transport::smtp::Error) -> Attempt {
    // Servers quote the recipient in their replies; the text reaches logs and the ledger.
    let text = crate::redact::mask_emails_in(&err.to_string());
    if err.is_permanent() {
        Attempt::Permanent(text)
    } else if err.is_transient() || err.is_timeout() {
        Attempt::Transient(text)
    } else {
        Attempt::Unreachable(text)
    }
}
