//! Logs, error reports and the supervision hooks that feed them.
//!
//! Log lines and Sentry events never carry a secret or a raw email address: headers that
//! hold credentials are dropped, query values that look like credentials are filtered and
//! addresses are masked, and a test proves it.

use std::io::IsTerminal;

use herald_supervision::{Observer, RestartEvent};
use sentry::protocol::Event;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::redact::mask_emails_in;

/// Request headers that carry credentials; never sent to Sentry.
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-session-access-token",
    "proxy-authorization",
];
/// Query parameters whose values are credentials.
const SENSITIVE_PARAMS: &[&str] = &[
    "token",
    "key",
    "api_key",
    "apikey",
    "access_token",
    "secret",
    "password",
    "signature",
    "email",
];

/// Set once Sentry runs with a non-zero `SENTRY_TRACES_SAMPLE_RATE`: without it no
/// transaction is even built, so requests pay nothing for tracing.
static TRACING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A Sentry transaction for one request or job run, sampled by the client at
/// `SENTRY_TRACES_SAMPLE_RATE`; `None` while performance monitoring is off. Named by the
/// route's template or the job, never by a raw URL (which could hold an address).
pub fn transaction(name: &str, op: &str) -> Option<sentry::Transaction> {
    if !TRACING.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    Some(sentry::start_transaction(sentry::TransactionContext::new(
        name, op,
    )))
}

/// Ends a transaction with whether its work succeeded.
pub fn finish_transaction(transaction: Option<sentry::Transaction>, ok: bool) {
    if let Some(transaction) = transaction {
        transaction.set_status(if ok {
            sentry::protocol::SpanStatus::Ok
        } else {
            sentry::protocol::SpanStatus::InternalError
        });
        transaction.finish();
    }
}

/// Starts Sentry when a DSN is configured. Keep the guard alive until exit: dropping it
/// flushes pending events.
pub fn init_sentry(config: &Config) -> Option<sentry::ClientInitGuard> {
    let dsn = config.telemetry.sentry_dsn.as_ref()?;
    TRACING.store(
        config.telemetry.traces_sample_rate > 0.0,
        std::sync::atomic::Ordering::Relaxed,
    );
    let options = sentry::ClientOptions::new()
        .dsn(dsn.expose())
        .maybe_release(sentry::release_name!())
        .environment(config.environment.as_str())
        .traces_sample_rate(config.telemetry.traces_sample_rate)
        .send_default_pii(false)
        .before_send(|event| Some(scrub_event(event)));
    Some(sentry::init(options))
}

/// Where the log's lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// The service's: standard output, which its log collector reads.
    Stdout,
    /// A shell command's: standard error, so that its standard output holds its answer
    /// alone (a file `herald suppressions list --addresses` writes, JSON a script reads).
    Stderr,
}

/// Installs the global subscriber: JSON lines or human-readable text, filtered by
/// `LOG_LEVEL`, written where `to` says. Reports to Sentry are sent explicitly where a
/// failure is handled (5xx, actor restarts), so nothing is reported twice.
pub fn init_tracing(config: &Config, to: LogTo) {
    let filter =
        EnvFilter::try_new(&config.telemetry.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, terminal) = match to {
        LogTo::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        LogTo::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let fmt_layer = match config.telemetry.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        // Colours only for a person at a terminal: a pipe, a file or a log collector gets
        // plain text, not escape codes.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_writer(writer)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .try_init();
}

/// Sends a panic's report through the log, as one event at `error` with the address in its
/// message masked, in place of Rust's own print of it to stderr (raw, and outside the JSON
/// lines a log collector reads). The panic itself goes on as before: the request, send or
/// actor it stopped is failed by whatever catches it. On a thread with no log (before
/// [`init_tracing`], or a test's), Rust's own print stays.
pub fn init_panic_log() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let logging = tracing::dispatcher::get_default(|dispatch| {
            !dispatch.is::<tracing::subscriber::NoSubscriber>()
        });
        if !logging {
            return previous(info);
        }
        let message = herald_actors::panic_text(info.payload());
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        // Captured only when RUST_BACKTRACE asks for it, as Rust's own print does.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| mask_emails_in(&backtrace.to_string()));
        tracing::error!(
            panic = %mask_emails_in(message),
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
            backtrace = backtrace.as_deref(),
            "a thread panicked"
        );
    }));
}

/// Removes credentials and masks email addresses in an event before it leaves.
pub fn scrub_event(mut event: Event<'static>) -> Event<'static> {
    if let Some(request) = event.request.as_mut() {
        request
            .headers
            .retain(|name, _| !SENSITIVE_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        for value in request.headers.values_mut() {
            *value = mask_emails_in(value);
        }
        request.cookies = None;
        request.data = None;
        if let Some(query) = request.query_string.take() {
            request.query_string = Some(scrub_query(&query));
        }
        if let Some(url) = request.url.as_mut()
            && url.query().is_some()
        {
            let scrubbed = scrub_query(url.query().unwrap_or_default());
            url.set_query(Some(&scrubbed));
        }
    }
    if let Some(message) = event.message.take() {
        event.message = Some(mask_emails_in(&message));
    }
    if let Some(entry) = event.logentry.as_mut() {
        entry.message = mask_emails_in(&entry.message);
    }
    for exception in event.exception.values.iter_mut() {
        if let Some(value) = exception.value.take() {
            exception.value = Some(mask_emails_in(&value));
        }
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        if let Some(message) = crumb.message.take() {
            crumb.message = Some(mask_emails_in(&message));
        }
        crumb.data.clear();
    }
    for value in event.tags.values_mut() {
        *value = mask_emails_in(value);
    }
    for value in event.extra.values_mut() {
        if let Some(text) = value.as_str() {
            *value = mask_emails_in(text).into();
        }
    }
    event.user = None;
    event
}

fn scrub_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SENSITIVE_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=[Filtered]")
            }
            _ => mask_emails_in(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Counts supervision restarts and reports them to Sentry from the supervisor's task,
/// never from the panicking thread.
pub struct SupervisionReporter;

impl Observer for SupervisionReporter {
    fn on_restart(&self, event: &RestartEvent) {
        crate::metrics::actor_restart(&event.child);
        sentry::with_scope(
            |scope| {
                scope.set_tag("actor", &event.child);
                scope.set_tag("supervisor", &event.supervisor);
            },
            || {
                sentry::capture_message(
                    &format!(
                        "actor {} restarted: {}",
                        event.child,
                        mask_emails_in(&event.reason)
                    ),
                    sentry::Level::Error,
                )
            },
        );
    }

    fn on_meltdown(&self, supervisor: &str, recent: &[RestartEvent]) {
        crate::metrics::actor_meltdown(supervisor);
        let last = recent
            .last()
            .map(|e| format!("{}: {}", e.child, mask_emails_in(&e.reason)))
            .unwrap_or_default();
        sentry::with_scope(
            |scope| scope.set_tag("supervisor", supervisor),
            || {
                sentry::capture_message(
                    &format!(
                        "supervisor {supervisor} exceeded its restart intensity; last failure {last}"
                    ),
                    sentry::Level::Fatal,
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentry::protocol::{Exception, Request};

    /// A writer the test reads back: what the log printed.
    #[derive(Clone, Default)]
    struct Printed(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Printed {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_goes_to_the_log_as_one_json_line_with_its_address_masked() {
        init_panic_log();
        let printed = Printed::default();
        let writer = printed.clone();
        let panicked = std::thread::Builder::new()
            .name("sender".into())
            .spawn(move || {
                let log = tracing_subscriber::fmt()
                    .json()
                    .flatten_event(true)
                    .with_writer(move || writer.clone())
                    .finish();
                tracing::subscriber::with_default(log, || {
                    panic!("rendering the report for parent@example.com failed")
                })
            })
            .unwrap()
            .join();
        assert!(panicked.is_err(), "the panic goes on once it is logged");
        let text = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("parent@example.com"), "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["level"], "ERROR");
        assert_eq!(line["message"], "a thread panicked");
        assert_eq!(
            line["panic"],
            "rendering the report for pa***@example.com failed"
        );
        assert_eq!(line["thread"], "sender");
        assert!(
            line["location"]
                .as_str()
                .is_some_and(|at| at.starts_with("src/telemetry.rs:")),
            "{line}"
        );
    }

    #[test]
    fn before_send_strips_credentials_and_masks_addresses() {
        let mut request = Request {
            query_string: Some("token=abc123&type=all&email=parent@example.com".into()),
            cookies: Some("session=s3cr3t".into()),
            ..Default::default()
        };
        for (name, value) in [
            ("Authorization", "Bearer s3cr3t"),
            ("Cookie", "session=s3cr3t"),
            ("X-API-Key", "s3cr3t-key"),
            ("X-Session-Access-Token", "s3cr3t-token"),
            ("X-Request-ID", "req-1"),
            ("X-Correlation-ID", "report-parent@example.com-7"),
        ] {
            request.headers.insert(name.into(), value.into());
        }
        let event = Event {
            request: Some(request),
            tags: [("learner".to_owned(), "parent@example.com".to_owned())].into(),
            message: Some("send to parent@example.com failed".into()),
            exception: vec![Exception {
                ty: "Error".into(),
                value: Some("bounce from parent@example.com".into()),
                ..Default::default()
            }]
            .into(),
            ..Default::default()
        };
        let scrubbed = scrub_event(event);
        let text = serde_json::to_string(&scrubbed).unwrap();
        for leaked in ["s3cr3t", "abc123", "parent@example.com"] {
            assert!(!text.contains(leaked), "{leaked} leaked: {text}");
        }
        assert!(text.contains("pa***@example.com"));
        assert!(text.contains("req-1"), "harmless headers stay");
        assert!(text.contains("type=all"));
    }
}
