//! SMTP delivery: herald's own pool of lettre connections, each send bounded by
//! `SMTP_TIMEOUT_SECONDS`, the DATA body written dot-stuffed in one pass, and a server's
//! refusal read into the dispatcher's terms (and into a hard bounce or a policy refusal).

use std::time::{Duration, Instant};

use anyhow::Context;
use herald_actors::dispatcher::Attempt;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, Tls, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension};

use crate::config::{EmailConfig, SmtpConfig, SmtpTls};

/// SMTP over lettre's connections, pooled here so that every attempt, connecting included,
/// is bounded by `SMTP_TIMEOUT_SECONDS`. lettre's own pool bounds only the connect, so a
/// server that stops answering would hold a send slot for ever; and a connection given up on
/// mid-conversation would be lent again with the late reply still to come, so the next
/// message would read the last one's answer. A connection that timed out or failed is closed,
/// never reused.
pub struct Smtp {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    /// Connections between sends, each with when it was last used; most recent last.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    max_idle: usize,
}

/// An idle connection older than this is closed rather than reused: servers drop them.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Smtp {
    pub(super) fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        let smtp = &config.smtp;
        let host = smtp.host.clone().unwrap_or_default();
        let tls = match smtp.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(&host, smtp)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(&host, smtp)?),
        };
        let credentials = match (&smtp.user, &smtp.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            _ => None,
        };
        Ok(Self {
            host,
            port: smtp.port,
            tls,
            credentials,
            hello: ClientId::default(),
            timeout: config.delivery.smtp_timeout,
            idle: std::sync::Mutex::default(),
            max_idle: config.delivery.concurrency,
        })
    }

    /// One attempt at `email`, bounded by the timeout; `Err` says how it failed.
    pub(super) async fn send(&self, envelope: &Envelope, email: Vec<u8>) -> Result<(), Attempt> {
        let payload = Payload::new(envelope, email);
        match tokio::time::timeout(self.timeout, self.attempt(envelope, &payload)).await {
            Ok(outcome) => outcome,
            // The attempt, and the connection it held, were dropped: the socket is closed.
            Err(_) => Err(Attempt::Transient(format!(
                "timed out: no answer from the mail server within {} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    /// A server that cannot be connected to, greeted or logged in to says nothing about the
    /// message: sending pauses (the breaker), no attempt is counted, and the email goes out
    /// once the server or its login is fixed. Replies to the message itself decide its fate.
    async fn attempt(&self, envelope: &Envelope, payload: &Payload) -> Result<(), Attempt> {
        let mut conn = match self.reuse().await {
            Some(conn) => conn,
            None => self
                .connect()
                .await
                .map_err(|err| Attempt::Unreachable(describe(&err)))?,
        };
        transfer(&mut conn, envelope, payload).await?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push((conn, Instant::now()));
        }
        Ok(())
    }

    /// Connects, greets, starts TLS and logs in as a send would, then says goodbye, within
    /// the timeout: what was reached, or `Err` with what failed (addresses masked).
    pub(super) async fn check(&self) -> Result<String, String> {
        let server = format!("{}:{}", self.host, self.port);
        let reached = tokio::time::timeout(self.timeout, async {
            let mut conn = self.connect().await?;
            conn.quit().await.map(drop)
        });
        match reached.await {
            Ok(Ok(())) => {
                let tls = match self.tls {
                    Tls::None => "without TLS",
                    Tls::Wrapper(_) => "over TLS",
                    _ => "with STARTTLS",
                };
                let login = match &self.credentials {
                    Some(_) => "logged in",
                    None => "no login",
                };
                Ok(format!("{server} {tls}, {login}"))
            }
            Ok(Err(err)) => Err(format!("{server}: {}", describe(&err))),
            Err(_) => Err(format!(
                "{server}: no answer within {} s (SMTP_TIMEOUT_SECONDS)",
                self.timeout.as_secs_f64()
            )),
        }
    }

    /// The most recently used idle connection that still answers, if any.
    async fn reuse(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if since.elapsed() < IDLE_TIMEOUT && conn.test_connected().await {
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, lettre::transport::smtp::Error> {
        let wrapped = match &self.tls {
            Tls::Wrapper(parameters) => Some(parameters.clone()),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.timeout),
            &self.hello,
            wrapped,
            None,
        )
        .await?;
        if let Tls::Required(parameters) = &self.tls {
            conn.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(conn)
    }
}

/// A message ready for the DATA phase, prepared once for all the attempts it may take.
///
/// An all-ASCII message (every message herald builds: its parts are base64 or
/// quoted-printable) is dot-stuffed here and goes out in one write: lettre's codec stuffs the
/// body one byte at a time, about a fifth of all the CPU herald spent on a report email with
/// its PDF. A message or address that is not ASCII takes lettre's own `send`, with its checks
/// for 8BITMIME and SMTPUTF8.
enum Payload {
    Stuffed(String),
    Raw(Vec<u8>),
}

/// Whether every address of `envelope` is ASCII, as a server without SMTPUTF8 takes it.
fn ascii_addresses(envelope: &Envelope) -> bool {
    let ascii = |address: &Address| AsRef::<str>::as_ref(address).is_ascii();
    envelope.from().is_none_or(ascii) && envelope.to().iter().all(ascii)
}

impl Payload {
    fn new(envelope: &Envelope, email: Vec<u8>) -> Self {
        match String::from_utf8(email) {
            Ok(text) if text.is_ascii() && ascii_addresses(envelope) => {
                Self::Stuffed(data_body(text))
            }
            Ok(text) => Self::Raw(text.into_bytes()),
            Err(err) => Self::Raw(err.into_bytes()),
        }
    }
}

/// One message's SMTP transaction on `conn`: lettre's commands and replies (MAIL, RCPT,
/// DATA), then a stuffed body written as it is; the server's refusal in the dispatcher's
/// terms.
async fn transfer(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    payload: &Payload,
) -> Result<(), Attempt> {
    let body = match payload {
        Payload::Stuffed(body) => body,
        Payload::Raw(email) => {
            refused_before_sending(conn, envelope, email)?;
            return conn
                .send(envelope, email)
                .await
                .map(drop)
                .map_err(|err| classify(&err));
        }
    };
    let started: Result<(), lettre::transport::smtp::Error> = async {
        conn.command(Mail::new(envelope.from().cloned(), Vec::new()))
            .await?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), Vec::new())).await?;
        }
        conn.command(Data).await?;
        Ok(())
    }
    .await;
    started.map_err(|err| classify(&err))?;
    // A command's text is written as it is, and the reply read: here the body and its end.
    conn.command(body)
        .await
        .map(drop)
        .map_err(|err| after_the_body(classify(&err)))
}

/// A connection lost once the message's body was written says something about the
/// message: a server, or a filter in front of it, may fail on this message each time. It
/// counts as an attempt, as a timeout does, rather than as a server out of reach, which
/// would try the message again and again, uncounted, for as long as it lives.
fn after_the_body(attempt: Attempt) -> Attempt {
    match attempt {
        Attempt::Unreachable(error) => Attempt::Transient(format!(
            "the connection was lost after the message was sent, before the server answered: \
             {error}"
        )),
        other => other,
    }
}

/// What this server cannot take of a message, known before a command is sent: an address
/// that is not ASCII without SMTPUTF8 (RFC 6531), eight-bit text without 8BITMIME (RFC
/// 6152). lettre refuses to send either as a failure of its own, which herald would read as
/// a server out of reach: the email would be tried again and again, uncounted, each time
/// pausing every other email. It is this email's failure, and final: the same server will
/// not take it later.
fn refused_before_sending(
    conn: &AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
) -> Result<(), Attempt> {
    let offers = |extension| conn.server_info().supports_feature(extension);
    if !ascii_addresses(envelope) && !offers(Extension::SmtpUtfEight) {
        return Err(Attempt::Permanent(
            "the mail server takes no address that is not ASCII before the @ (it does not \
             offer SMTPUTF8)"
                .to_owned(),
        ));
    }
    if !email.is_ascii() && !offers(Extension::EightBitMime) {
        return Err(Attempt::Permanent(
            "the mail server takes no eight-bit text (it does not offer 8BITMIME)".to_owned(),
        ));
    }
    Ok(())
}

/// `email` as the DATA phase sends it (RFC 5321 §4.5.2), exactly as lettre's codec would:
/// a `.` that begins a line (at the very start, or right after CRLF) is doubled, and CRLF
/// `.` CRLF ends it. Dots are rare (base64 has none), so most messages are kept as they are.
fn data_body(email: String) -> String {
    let bytes = email.as_bytes();
    let doubled: Vec<usize> = memchr::memchr_iter(b'.', bytes)
        .filter(|&dot| dot == 0 || bytes[..dot].ends_with(b"\r\n"))
        .collect();
    let mut body = if doubled.is_empty() {
        email
    } else {
        let mut body = String::with_capacity(email.len() + doubled.len() + 5);
        let mut copied = 0;
        for dot in doubled {
            body.push_str(&email[copied..dot]);
            body.push('.');
            copied = dot;
        }
        body.push_str(&email[copied..]);
        body
    };
    body.push_str("\r\n.\r\n");
    body
}

/// TLS towards `host`: the public roots, and the certificates of `SMTP_TLS_CA_FILE`.
fn tls_parameters(host: &str, smtp: &SmtpConfig) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = &smtp.tls_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("SMTP_TLS_CA_FILE: reading {}", path.display()))?;
        if !pem.windows(17).any(|w| w == b"BEGIN CERTIFICATE") {
            anyhow::bail!(
                "SMTP_TLS_CA_FILE: no PEM certificates in {}",
                path.display()
            );
        }
        let certificates = Certificate::from_pem(&pem)
            .with_context(|| format!("SMTP_TLS_CA_FILE: unreadable PEM in {}", path.display()))?;
        builder = builder.add_root_certificate(certificates);
    }
    Ok(builder.build()?)
}

/// Servers quote the recipient in their replies; the text reaches logs and the ledger.
fn describe(err: &lettre::transport::smtp::Error) -> String {
    crate::redact::mask_emails_in(&err.to_string())
}

/// What a permanent refusal says about the recipient, read from its enhanced status code
/// (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The mailbox does not exist or is disabled (5.1.1, 5.1.2, 5.1.10, 5.2.1): a hard
    /// bounce, and the address is suppressed.
    HardBounce,
    /// A policy or reputation refusal (5.7.x): about the sender, not the address; counted
    /// and alerted on.
    Policy,
    /// Anything else, or no enhanced code at all: the email fails, the address stays.
    Other,
}

/// Classifies a permanent refusal by the first enhanced status code in its text.
pub fn refusal(text: &str) -> Refusal {
    let code = text
        .split(|c: char| c.is_whitespace() || c == ':' || c == '(' || c == ')')
        .find_map(|word| {
            let mut parts = word.splitn(3, '.');
            let class = parts.next()?;
            let subject: u16 = parts.next()?.parse().ok()?;
            let detail: u16 = parts.next()?.trim_end_matches([',', ';']).parse().ok()?;
            (class == "5").then_some((subject, detail))
        });
    match code {
        Some((1, 1 | 2 | 10) | (2, 1)) => Refusal::HardBounce,
        Some((7, _)) => Refusal::Policy,
        _ => Refusal::Other,
    }
}

/// The server's reply decides: 5xx is permanent, 4xx and timeouts transient; no reply at
/// all means the server could not be reached.
fn classify(err: &lettre::transport::smtp::Error) -> Attempt {
    let text = describe(err);
    if err.is_permanent() {
        Attempt::Permanent(text)
    } else if err.is_transient() || err.is_timeout() {
        Attempt::Transient(text)
    } else {
        Attempt::Unreachable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_from_their_enhanced_status_codes() {
        for text in [
            "permanent error (550): 5.1.1 <pa***@example.com>: user unknown",
            "550 5.1.2 bad destination system",
            "550 5.1.10 recipient address has null MX",
            "552 5.2.1 mailbox disabled, not accepting messages",
        ] {
            assert_eq!(refusal(text), Refusal::HardBounce, "{text}");
        }
        assert_eq!(
            refusal("554 5.7.1 Message rejected due to policy"),
            Refusal::Policy
        );
        assert_eq!(
            refusal("550 5.7.26 unauthenticated email is not accepted"),
            Refusal::Policy
        );
        for text in [
            "550 mailbox unavailable",
            "552 5.3.4 message too big",
            "550 5.1.3 bad syntax",
            "4.1.1 later",
            "",
        ] {
            assert_eq!(refusal(text), Refusal::Other, "{text}");
        }
    }

    fn smtp_with_ca_file(path: &std::path::Path) -> anyhow::Result<Smtp> {
        let path = path.display().to_string();
        let vars: std::collections::HashMap<&str, &str> = [
            ("API_ACCESS_KEY", "key"),
            ("SECRET_KEY", "secret"),
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_HOST", "mail.example.org"),
            ("SMTP_TLS", "starttls"),
            ("SMTP_TLS_CA_FILE", &path),
        ]
        .into();
        let config = crate::config::Config::from_lookup(&|k| vars.get(k).map(|v| v.to_string()))
            .expect("a valid configuration");
        Smtp::from_config(&config.email)
    }

    /// lettre's codec (`ClientCodec::encode`) transcribed, the reference: a byte at a time.
    fn stuffed_by_lettre(email: &str) -> String {
        #[derive(Clone, Copy, PartialEq)]
        enum Status {
            Middle,
            AfterCr,
            Start,
        }
        let mut status = Status::Start;
        let mut out = String::new();
        for c in email.chars() {
            out.push(c);
            status = match (c, status) {
                ('\r', _) => Status::AfterCr,
                ('\n', Status::AfterCr) => Status::Start,
                (_, Status::AfterCr) => Status::Middle,
                ('.', Status::Start) => {
                    out.push('.');
                    Status::Middle
                }
                (_, Status::Start) => Status::Middle,
                _ => status,
            };
        }
        out + "\r\n.\r\n"
    }

    #[test]
    fn the_data_body_is_stuffed_as_lettre_stuffs_it() {
        for email in [
            "",
            ".",
            "..",
            ".hidden\r\nline",
            "a\r\n.b\r\n..c\r\n.",
            "a\r\n\r\n.\r\n",
            "bare\n.lf and\r.cr are not line starts",
            "\n.\r\n\n\n.after bare LFs\r\n\r.",
            "ends with CRLF\r\n",
            "dots.in.the.middle\r\n. \r\n",
        ] {
            assert_eq!(
                data_body(email.to_owned()),
                stuffed_by_lettre(email),
                "{email:?}"
            );
        }
    }

    #[test]
    fn only_ascii_messages_to_ascii_addresses_are_stuffed_here() {
        let address = |text: &str| text.parse::<Address>().unwrap();
        let envelope = Envelope::new(
            Some(address("a@example.org")),
            vec![address("b@example.org")],
        )
        .unwrap();
        let stuffed = Payload::new(&envelope, b"a\r\n.b".to_vec());
        assert!(matches!(&stuffed, Payload::Stuffed(body) if body == "a\r\n..b\r\n.\r\n"));
        let eight_bit = Payload::new(&envelope, "caf\u{e9}".as_bytes().to_vec());
        assert!(matches!(eight_bit, Payload::Raw(raw) if raw == "caf\u{e9}".as_bytes()));
        let international = Envelope::new(None, vec![address("j\u{fc}rgen@example.org")]).unwrap();
        assert!(matches!(
            Payload::new(&international, b"a".to_vec()),
            Payload::Raw(_)
        ));
    }

    #[test]
    fn a_missing_or_certificate_less_ca_file_stops_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = smtp_with_ca_file(&missing).err().expect("refused");
        assert!(
            format!("{err:#}").contains("SMTP_TLS_CA_FILE: reading"),
            "{err:#}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = smtp_with_ca_file(&empty).err().expect("refused");
        assert!(
            format!("{err:#}").contains("no PEM certificates"),
            "{err:#}"
        );
    }
}
