//! A small SMTP server for the tests, on 127.0.0.1: records what it accepts, answers the
//! end of DATA with scripted codes, can refuse connections for a while, ask for a login,
//! and speak TLS (STARTTLS or from the first byte) with a certificate from its own CA.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::HeldPort;

#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    /// Whether the message came over TLS.
    pub secure: bool,
}

impl Received {
    /// The URL of the `List-Unsubscribe` header.
    pub fn unsubscribe_url(&self) -> String {
        unsubscribe_url(&self.data)
    }
}

/// The URL of a message's `List-Unsubscribe` header, unfolded and without its angle brackets.
pub fn unsubscribe_url(message: &[u8]) -> String {
    let parsed = mailparse::parse_mail(message).expect("a parsable message");
    let header: String = parsed
        .headers
        .iter()
        .find(|h| h.get_key() == "List-Unsubscribe")
        .expect("a List-Unsubscribe header")
        .get_value()
        .split_whitespace()
        .collect();
    header.trim_matches(['<', '>']).to_owned()
}

/// How the server offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `STARTTLS` after the greeting (`SMTP_TLS=starttls`).
    StartTls,
    /// TLS from the first byte (`SMTP_TLS=tls`).
    Implicit,
}

/// The server's TLS: a certificate for 127.0.0.1 signed by a CA made for this server, whose
/// certificate is written to a file for `SMTP_TLS_CA_FILE`.
struct Tls {
    mode: TlsMode,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_file: tempfile::NamedTempFile,
}

impl Tls {
    fn new(mode: TlsMode) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone()], key)
            .unwrap();
        let mut ca_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut ca_file, ca.pem().as_bytes()).unwrap();
        Self {
            mode,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_file,
        }
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Replies to the next DATA ends; 250 when empty.
    script: Mutex<VecDeque<String>>,
    refusing: AtomicBool,
    /// Milliseconds to wait before answering the end of DATA.
    delay_ms: std::sync::atomic::AtomicU64,
    /// Messages whose DATA has started.
    data_started: std::sync::atomic::AtomicUsize,
    /// How many of the next DATA ends get no answer at all.
    stalls: std::sync::atomic::AtomicUsize,
    /// How many of the next DATA ends close the connection instead of answering.
    drops: std::sync::atomic::AtomicUsize,
    /// The login (user, password) a client must give before sending, if any.
    login: Mutex<Option<(String, String)>>,
    /// Users who logged in, in order.
    logins: Mutex<Vec<String>>,
    /// Whether EHLO offers SMTPUTF8 (RFC 6531), so a `MAIL FROM` may ask for it.
    smtputf8: AtomicBool,
    tls: Option<Tls>,
}

pub struct SmtpServer {
    pub port: u16,
    held: HeldPort,
    shared: Arc<Shared>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that speaks TLS as `mode` says.
    pub async fn start_tls(mode: TlsMode) -> Self {
        herald::install_tls_provider();
        Self::start_with(Some(Tls::new(mode))).await
    }

    async fn start_with(tls: Option<Tls>) -> Self {
        let (held, listener) = HeldPort::listen_new();
        let port = held.port;
        let shared = Arc::new(Shared {
            tls,
            ..Shared::default()
        });
        let handle = tokio::spawn(accept(listener, shared.clone()));
        Self {
            port,
            held,
            shared,
            listener: Mutex::new(Some(handle)),
        }
    }

    /// Configuration that sends herald's email here (trusting the server's CA if it speaks
    /// TLS), polling the outbox every 50 ms.
    pub fn configure(&self, vars: &mut std::collections::HashMap<String, String>) {
        let tls = match self.shared.tls.as_ref().map(|tls| tls.mode) {
            None => "none",
            Some(TlsMode::StartTls) => "starttls",
            Some(TlsMode::Implicit) => "tls",
        };
        for (k, v) in [
            ("EMAIL_PROVIDER", "smtp".to_owned()),
            ("SMTP_HOST", "127.0.0.1".to_owned()),
            ("SMTP_PORT", self.port.to_string()),
            ("SMTP_TLS", tls.to_owned()),
            ("EMAIL_POLL_INTERVAL_MS", "50".to_owned()),
        ] {
            vars.insert(k.to_owned(), v);
        }
        if let Some(tls) = &self.shared.tls {
            let ca_file = tls.ca_file.path().display().to_string();
            vars.insert("SMTP_TLS_CA_FILE".to_owned(), ca_file);
        }
    }

    /// The replies the next DATA commands get, in order (e.g. `[451, 250]`).
    pub fn script(&self, codes: &[u16]) {
        self.script_replies(
            &codes
                .iter()
                .map(|&code| match code {
                    250 => "250 2.0.0 queued".to_owned(),
                    // A bare refusal: no enhanced status code.
                    500.. => format!("{code} mailbox unavailable"),
                    _ => format!("{code} 4.3.0 try again later"),
                })
                .collect::<Vec<_>>(),
        );
    }

    /// The exact replies the next DATA commands get (e.g. `"550 5.1.1 no such user"`); a
    /// `250` reply accepts the message.
    pub fn script_replies(&self, replies: &[String]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .extend(replies.iter().cloned());
    }

    /// From now on EHLO offers SMTPUTF8, and a message whose `MAIL FROM` asks for it may have
    /// addresses that are not ASCII; without it such a message is refused (RFC 6531 §3.4).
    pub fn offer_smtputf8(&self) {
        self.shared.smtputf8.store(true, Ordering::SeqCst);
    }

    /// Makes the server take `ms` to accept each message.
    pub fn slow(&self, ms: u64) {
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` messages get no answer after their DATA: the server reads on and says
    /// nothing until the client closes the connection, and keeps none of them.
    pub fn stall(&self, n: usize) {
        self.shared.stalls.store(n, Ordering::SeqCst);
    }

    /// The next `n` messages have their connection closed at the end of their DATA, with
    /// no answer, as a server or a filter in front of it that fails on a message does; none
    /// of them is kept.
    pub fn drop_at_end_of_data(&self, n: usize) {
        self.shared.drops.store(n, Ordering::SeqCst);
    }

    /// From now on a client must log in (AUTH PLAIN or LOGIN) as `user` with `password`
    /// before sending.
    pub fn require_login(&self, user: &str, password: &str) {
        *self.shared.login.lock().unwrap() = Some((user.to_owned(), password.to_owned()));
    }

    /// Users who logged in successfully, in order.
    pub fn logins(&self) -> Vec<String> {
        self.shared.logins.lock().unwrap().clone()
    }

    pub fn data_started(&self) -> usize {
        self.shared.data_started.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection: the server is down.
    pub fn go_down(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.held.hold();
        if let Some(handle) = self.listener.lock().unwrap().take() {
            handle.abort();
        }
    }

    pub async fn come_back(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
        let listener = self.held.listen();
        *self.listener.lock().unwrap() = Some(tokio::spawn(accept(listener, self.shared.clone())));
    }

    /// How many messages arrived, without copying them.
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived (10 s at most).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} messages, got {}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(handle) = self.listener.lock().unwrap().take() {
            handle.abort();
        }
    }
}

/// The user and password of an `AUTH PLAIN` (initial response) or `AUTH LOGIN` exchange.
async fn read_login(
    line: &str,
    lines: &mut (impl tokio::io::AsyncBufRead + Unpin),
    write: &mut (impl AsyncWrite + Unpin),
) -> Option<(String, String)> {
    use base64::Engine;
    let decode = |text: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let mut words = line.split_whitespace().skip(1);
    let mechanism = words.next()?.to_ascii_uppercase();
    if mechanism == "PLAIN" {
        let plain = decode(words.next()?);
        let mut parts = plain.split('\0').skip(1);
        return Some((parts.next()?.to_owned(), parts.next()?.to_owned()));
    }
    let mut answers = Vec::new();
    for prompt in ["VXNlcm5hbWU6", "UGFzc3dvcmQ6"] {
        write
            .write_all(format!("334 {prompt}\r\n").as_bytes())
            .await
            .ok()?;
        let mut answer = String::new();
        lines.read_line(&mut answer).await.ok()?;
        answers.push(decode(&answer));
    }
    let password = answers.pop()?;
    Some((answers.pop()?, password))
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream, shared.clone()));
    }
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let Some(tls) = &shared.tls else {
        converse(stream, &shared, false).await;
        return;
    };
    let plain = match tls.mode {
        TlsMode::Implicit => Some(stream),
        TlsMode::StartTls => converse(stream, &shared, false).await,
    };
    let Some(plain) = plain else {
        return;
    };
    // The client asked for TLS (or starts with it): the conversation goes on encrypted.
    if let Ok(stream) = tls.acceptor.accept(plain).await {
        converse(stream, &shared, true).await;
    }
}

/// One SMTP conversation over `stream`, greeted unless it continues after `STARTTLS`;
/// returns the stream when the client asks for `STARTTLS`.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    shared: &Shared,
    secure: bool,
) -> Option<S> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    let starttls = shared.tls.as_ref().map(|tls| tls.mode) == Some(TlsMode::StartTls);
    // A conversation that goes on after STARTTLS is not greeted again.
    let continued = secure && starttls;
    if !continued && write.write_all(b"220 herald-test ESMTP\r\n").await.is_err() {
        return None;
    }
    let offers_starttls = starttls && !secure;
    let mut rcpt_to = Vec::new();
    let mut smtputf8_asked = false;
    let mut logged_in = false;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0
            || shared.refusing.load(Ordering::SeqCst)
        {
            return None;
        }
        let command = line.trim_end().to_ascii_uppercase();
        let login = shared.login.lock().unwrap().clone();
        let answer = if command.starts_with("EHLO") {
            let auth = if login.is_some() {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            let starttls = if offers_starttls {
                "250-STARTTLS\r\n"
            } else {
                ""
            };
            let smtputf8 = if shared.smtputf8.load(Ordering::SeqCst) {
                "250-SMTPUTF8\r\n"
            } else {
                ""
            };
            format!(
                "250-herald-test\r\n250-8BITMIME\r\n{smtputf8}{starttls}{auth}250 SIZE 20000000"
            )
        } else if command.starts_with("STARTTLS") && offers_starttls {
            write
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await
                .ok()?;
            return Some(lines.into_inner().unsplit(write));
        } else if command.starts_with("AUTH") {
            let (user, given) = read_login(&line, &mut lines, &mut write).await?;
            if login.as_ref() == Some(&(user.clone(), given)) {
                logged_in = true;
                shared.logins.lock().unwrap().push(user);
                "235 2.7.0 Authentication successful".to_owned()
            } else {
                "535 5.7.8 Authentication credentials invalid".to_owned()
            }
        } else if command.starts_with("MAIL FROM") && login.is_some() && !logged_in {
            "530 5.7.0 Authentication required".to_owned()
        } else if command.starts_with("HELO")
            || command.starts_with("MAIL FROM")
            || command.starts_with("RSET")
            || command.starts_with("NOOP")
        {
            if command.starts_with("MAIL FROM") || command.starts_with("RSET") {
                rcpt_to.clear();
                smtputf8_asked = command.starts_with("MAIL FROM") && command.contains(" SMTPUTF8");
            }
            "250 OK".to_owned()
        } else if command.starts_with("RCPT TO")
            && !line.is_ascii()
            && !(smtputf8_asked && shared.smtputf8.load(Ordering::SeqCst))
        {
            "553 5.6.7 an address that is not ASCII needs SMTPUTF8".to_owned()
        } else if command.starts_with("RCPT TO") {
            rcpt_to.push(
                line.trim_end()[8..]
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            );
            "250 OK".to_owned()
        } else if command.starts_with("DATA") {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return None;
            }
            shared.data_started.fetch_add(1, Ordering::SeqCst);
            let mut data = Vec::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return None;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line
                    .strip_prefix('.')
                    .filter(|_| line.starts_with(".."))
                    .unwrap_or(&line);
                data.extend_from_slice(unstuffed.as_bytes());
            }
            let stalled = shared
                .stalls
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if stalled {
                while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
                    line.clear();
                }
                return None;
            }
            let dropped = shared
                .drops
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if dropped {
                return None;
            }
            let delay = shared.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let reply = shared
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| "250 2.0.0 queued".to_owned());
            if reply.starts_with("250") {
                shared.received.lock().unwrap().push(Received {
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data,
                    secure,
                });
            }
            reply
        } else if command.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return None;
        } else {
            "502 command not implemented".to_owned()
        };
        if write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .is_err()
        {
            return None;
        }
    }
}
