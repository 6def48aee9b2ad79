//! Email: the provider and its connection, the sender, the per-recipient throttles and how
//! the dispatcher retries.

use std::path::PathBuf;
use std::time::Duration;

use herald_actors::throttle::ThrottleRule;
use lettre::message::Mailbox;

use super::reader::Reader;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailProvider {
    Console,
    Smtp,
    File,
    SendGrid,
}

impl EmailProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Console => "console",
            Self::Smtp => "smtp",
            Self::File => "file",
            Self::SendGrid => "sendgrid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    StartTls,
    Tls,
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: SmtpTls,
    /// PEM certificates trusted for the server's TLS besides the usual public roots (a
    /// relay with a private CA).
    pub tls_ca_file: Option<PathBuf>,
}

/// SendGrid's v3 Mail Send API.
#[derive(Debug, Clone)]
pub struct SendGridConfig {
    pub api_key: Secret,
    /// `https://api.sendgrid.com`, `https://api.eu.sendgrid.com` for the EU region, or a
    /// stand-in in tests; without a trailing slash.
    pub api_url: String,
}

/// Throttles and delivery behaviour of the email pipeline.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub session_reports: ThrottleRule,
    pub weekly_digest: ThrottleRule,
    /// Sends in flight at once.
    pub concurrency: usize,
    pub max_attempts: u32,
    pub max_lifetime: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to the dispatcher's longest.
    pub retry_base: Duration,
    /// How often the dispatcher looks for due retries and expired leases.
    pub poll_interval: Duration,
    /// How long sends pause after the mail server is found unreachable.
    pub breaker_cooldown: Duration,
    /// The longest one SMTP attempt may take, connecting included; at most half of
    /// `outbox_lease`.
    pub smtp_timeout: Duration,
    /// How long a claimed outbox row is the claimer's (default [`OUTBOX_LEASE`]): after a
    /// replica dies, the emails it had claimed wait this long before another sends them.
    pub outbox_lease: Duration,
}

/// How long a claimed outbox row is the claimer's. A row starts sending only while more than
/// half its lease is left, so an attempt that ends within half a lease ends before anyone
/// else may claim the row.
pub const OUTBOX_LEASE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub delivery: DeliveryConfig,
    pub provider: EmailProvider,
    /// The sender, parsed once (`EMAIL_FROM`, optionally with a display name).
    pub from: Mailbox,
    /// Where a parent's reply goes (`EMAIL_REPLY_TO`), when not to the sender.
    pub reply_to: Option<Mailbox>,
    /// The sender's identifier in Gmail's feedback loop (`EMAIL_FEEDBACK_ID`): each email
    /// carries `Feedback-ID: {type}:{this}`, so complaints are counted per email type.
    pub feedback_id: Option<String>,
    /// Base of the links in emails, without a trailing slash.
    pub api_base_url: String,
    /// `API_BASE_URL` was not set (development): the links point at this process, on the
    /// port it binds ([`EmailConfig::listening_on`]).
    pub api_base_url_is_local: bool,
    pub smtp: SmtpConfig,
    pub file_dir: PathBuf,
    /// SendGrid's v3 Mail Send API, for `EMAIL_PROVIDER=sendgrid`.
    pub sendgrid: Option<SendGridConfig>,
    /// Signs what the `smtp` and `file` providers send, when configured.
    pub dkim: Option<super::Dkim>,
    /// The subject, text and HTML of each email (`EMAIL_TEMPLATES_DIR` overrides), checked
    /// at start, with the brand name and footer address they show.
    pub templates: std::sync::Arc<crate::templates::Templates>,
}

const DEFAULT_FROM: &str = "noreply@herald.localhost";

/// `EMAIL_FEEDBACK_ID`: one field of a `Feedback-ID` header, so no `:` and nothing a header
/// could not carry.
fn feedback_id(r: &mut Reader<'_>) -> Option<String> {
    let raw = r.get("EMAIL_FEEDBACK_ID")?;
    let fits = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if fits {
        Some(raw)
    } else {
        r.problem(format!(
            "EMAIL_FEEDBACK_ID: the sender's identifier in a Feedback-ID header is 1-64 \
             letters, digits, '.', '_' or '-', got '{}'",
            raw.escape_debug()
        ));
        None
    }
}

/// The address, optionally with a display name, that the variable `name` holds; a problem
/// named after the variable otherwise.
fn mailbox(r: &mut Reader<'_>, name: &str, raw: &str) -> Option<Mailbox> {
    match raw.parse::<Mailbox>() {
        Ok(mailbox) if !raw.contains(['\r', '\n']) => Some(mailbox),
        _ => {
            r.problem(format!("{name}: expected an email address, got '{raw}'"));
            None
        }
    }
}

impl EmailConfig {
    pub(super) fn read(r: &mut Reader<'_>, production: bool, port: u16) -> Self {
        // The default, `console`, sends nothing while the ledger says sent.
        r.required_in_production("EMAIL_PROVIDER", production);
        let provider = r.choice(
            "EMAIL_PROVIDER",
            EmailProvider::Console,
            &[
                ("console", EmailProvider::Console),
                ("smtp", EmailProvider::Smtp),
                ("file", EmailProvider::File),
                ("sendgrid", EmailProvider::SendGrid),
            ],
        );
        let smtp = read_smtp(r, production);
        if provider == EmailProvider::Smtp && smtp.host.is_none() {
            r.problem("SMTP_HOST: required when EMAIL_PROVIDER=smtp");
        }
        let from = r
            .required_in_production("EMAIL_FROM", production)
            .unwrap_or_else(|| DEFAULT_FROM.to_owned());
        let from = mailbox(r, "EMAIL_FROM", &from).unwrap_or_else(|| {
            DEFAULT_FROM
                .parse()
                .expect("the default sender is an address")
        });
        let reply_to = r
            .get("EMAIL_REPLY_TO")
            .and_then(|raw| mailbox(r, "EMAIL_REPLY_TO", &raw));
        let feedback_id = feedback_id(r);
        let api_base_url = read_base_url(r, production);
        let dkim = super::dkim::read(r, &from);
        let sendgrid = read_sendgrid(r, provider);
        if provider == EmailProvider::SendGrid && dkim.is_some() {
            r.problem(
                "DKIM_DOMAIN: the sendgrid provider sends with SendGrid's own DKIM signature \
                 (its domain authentication), so herald's key would go unused; unset \
                 DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE, or send with smtp",
            );
        }
        let brand = r.get_or("EMAIL_BRAND_NAME", "herald");
        let footer_address = r.get_or("EMAIL_FOOTER_ADDRESS", "");
        let templates_dir = r.get("EMAIL_TEMPLATES_DIR").map(PathBuf::from);
        if let Some(dir) = &templates_dir
            && !dir.is_dir()
        {
            r.problem(format!(
                "EMAIL_TEMPLATES_DIR: {} is not a directory",
                dir.display()
            ));
        }
        let templates = match crate::templates::Templates::load(
            templates_dir.as_deref().filter(|d| d.is_dir()),
            &brand,
            &footer_address,
        ) {
            Ok(templates) => templates,
            Err(problems) => {
                for problem in problems {
                    r.problem(problem);
                }
                crate::templates::Templates::shipped(&brand, &footer_address)
            }
        };
        Self {
            delivery: read_delivery(r),
            provider,
            dkim,
            sendgrid,
            from,
            reply_to,
            feedback_id,
            api_base_url_is_local: api_base_url.is_none(),
            api_base_url: api_base_url.unwrap_or_else(|| local_base_url(port)),
            smtp,
            file_dir: PathBuf::from(r.get_or("EMAIL_FILE_DIR", "./outbox")),
            templates: std::sync::Arc::new(templates),
        }
    }

    /// The port this process listens on, once bound: a local base of links follows it (with
    /// `PORT=0` it is known only then).
    pub fn listening_on(&mut self, port: u16) {
        if self.api_base_url_is_local {
            self.api_base_url = local_base_url(port);
        }
    }

    /// The domain of the sender, which Message-IDs carry.
    pub fn sender_domain(&self) -> &str {
        self.from.email.domain()
    }
}

fn local_base_url(port: u16) -> String {
    format!("http://localhost:{port}")
}

/// `API_BASE_URL`: where a parent's mail client reaches herald (the unsubscribe and
/// preference links of every email). Unset, the links point at this process, which only a
/// developer can open: production requires it, and refuses this machine's own address.
fn read_base_url(r: &mut Reader<'_>, production: bool) -> Option<String> {
    let raw = r.required_in_production("API_BASE_URL", production)?;
    let base = raw.trim_end_matches('/').to_owned();
    match url::Url::parse(&base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            if url.query().is_some() || url.fragment().is_some() {
                r.problem(format!(
                    "API_BASE_URL: {base} has a query or fragment; links are made by appending paths to it"
                ));
            }
            if production && is_this_machine(&url) {
                r.problem(format!(
                    "API_BASE_URL: {base} is this machine's own address; links in emails must reach herald from a parent's mail client"
                ));
            }
        }
        _ => r.problem(format!(
            "API_BASE_URL: expected an http:// or https:// URL, got '{base}'"
        )),
    }
    Some(base)
}

fn is_this_machine(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => is_local_host(name),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => false,
    }
}

fn read_sendgrid(r: &mut Reader<'_>, provider: EmailProvider) -> Option<SendGridConfig> {
    let api_url = r
        .get_or("SENDGRID_API_URL", "https://api.sendgrid.com")
        .trim_end_matches('/')
        .to_owned();
    r.keep("SENDGRID_API_URL", &api_url);
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        r.problem("SENDGRID_API_URL: expected an https:// URL");
    }
    let api_key = r.get("SENDGRID_API_KEY");
    if provider != EmailProvider::SendGrid {
        return None;
    }
    match api_key {
        Some(key) => Some(SendGridConfig {
            api_key: Secret::new(key),
            api_url,
        }),
        None => {
            r.problem("SENDGRID_API_KEY: required when EMAIL_PROVIDER=sendgrid");
            None
        }
    }
}

fn read_smtp(r: &mut Reader<'_>, production: bool) -> SmtpConfig {
    let smtp = SmtpConfig {
        host: r.get("SMTP_HOST"),
        port: r.parse("SMTP_PORT", 587u16, "a port number (0-65535)"),
        user: r.get("SMTP_USER"),
        password: r.get("SMTP_PASS").map(Secret::new),
        tls: r.choice(
            "SMTP_TLS",
            SmtpTls::StartTls,
            &[
                ("starttls", SmtpTls::StartTls),
                ("tls", SmtpTls::Tls),
                ("none", SmtpTls::None),
            ],
        ),
        tls_ca_file: r.get("SMTP_TLS_CA_FILE").map(PathBuf::from),
    };
    if smtp.user.is_some() != smtp.password.is_some() {
        r.problem("SMTP_USER, SMTP_PASS: set both to log in to the mail server, or neither");
    }
    let remote = smtp
        .host
        .as_deref()
        .is_some_and(|host| !is_local_host(host));
    if production && smtp.user.is_some() && smtp.tls == SmtpTls::None && remote {
        r.problem(
            "SMTP_TLS: none would send SMTP_PASS in clear text to a mail server on another \
             machine; use starttls or tls when HERALD_ENV=production",
        );
    }
    smtp
}

/// `localhost`, a name under it, or a loopback address: this machine.
fn is_local_host(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_delivery(r: &mut Reader<'_>) -> DeliveryConfig {
    let session_reports = ThrottleRule::new(
        r.parse("SESSION_REPORT_LIMIT", 5u32, "a whole number"),
        r.hours("SESSION_REPORT_WINDOW_HOURS", 24),
    );
    let weekly_digest = ThrottleRule::new(
        r.parse("WEEKLY_DIGEST_LIMIT", 1u32, "a whole number"),
        r.days("WEEKLY_DIGEST_WINDOW_DAYS", 7),
    );
    let delivery = DeliveryConfig {
        session_reports,
        weekly_digest,
        concurrency: r.parse("EMAIL_SEND_CONCURRENCY", 16usize, "a whole number"),
        max_attempts: r.parse("EMAIL_MAX_ATTEMPTS", 6u32, "a whole number"),
        max_lifetime: r.hours("EMAIL_MAX_LIFETIME_HOURS", 24),
        retry_base: r.millis("EMAIL_RETRY_BASE_MS", 30_000),
        poll_interval: r.millis("EMAIL_POLL_INTERVAL_MS", 1_000),
        breaker_cooldown: r.millis("EMAIL_BREAKER_COOLDOWN_MS", 5_000),
        smtp_timeout: r.seconds("SMTP_TIMEOUT_SECONDS", 10),
        outbox_lease: r.seconds("EMAIL_OUTBOX_LEASE_SECONDS", OUTBOX_LEASE.as_secs()),
    };
    for (name, zero) in [
        ("SESSION_REPORT_LIMIT", session_reports.limit == 0),
        (
            "SESSION_REPORT_WINDOW_HOURS",
            session_reports.window_ms == 0,
        ),
        ("WEEKLY_DIGEST_LIMIT", weekly_digest.limit == 0),
        ("WEEKLY_DIGEST_WINDOW_DAYS", weekly_digest.window_ms == 0),
        ("EMAIL_SEND_CONCURRENCY", delivery.concurrency == 0),
        ("EMAIL_MAX_ATTEMPTS", delivery.max_attempts == 0),
        ("EMAIL_POLL_INTERVAL_MS", delivery.poll_interval.is_zero()),
        ("SMTP_TIMEOUT_SECONDS", delivery.smtp_timeout.is_zero()),
    ] {
        r.nonzero(name, zero);
    }
    if delivery.outbox_lease < Duration::from_secs(2) {
        r.problem("EMAIL_OUTBOX_LEASE_SECONDS: must be at least 2");
    } else if delivery.smtp_timeout > delivery.outbox_lease / 2 {
        r.problem(format!(
            "SMTP_TIMEOUT_SECONDS: at most {} (an attempt must end while its outbox lease holds)",
            (delivery.outbox_lease / 2).as_secs()
        ));
    }
    delivery
}
