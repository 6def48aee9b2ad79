//! Telemetry: Sentry, logs and the `/metrics` token.

use super::reader::Reader;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub sentry_dsn: Option<Secret>,
    /// Share of requests and job runs sent to Sentry as transactions.
    pub traces_sample_rate: f32,
    /// A level or an `EnvFilter` directive, checked at start.
    pub log_level: String,
    pub log_format: LogFormat,
    /// Bearer token `/metrics` asks for, when set.
    pub metrics_token: Option<Secret>,
}

impl TelemetryConfig {
    pub(super) fn read(r: &mut Reader<'_>, production: bool) -> Self {
        let traces_sample_rate = r.parse(
            "SENTRY_TRACES_SAMPLE_RATE",
            if production { 0.1f32 } else { 1.0 },
            "a number between 0 and 1",
        );
        if !(0.0..=1.0).contains(&traces_sample_rate) {
            r.problem("SENTRY_TRACES_SAMPLE_RATE: expected a number between 0 and 1");
        }
        let log_level = r.get_or("LOG_LEVEL", "info");
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            r.problem(format!(
                "LOG_LEVEL: '{log_level}' is not a valid level or filter"
            ));
        }
        let log_format = r.choice(
            "LOG_FORMAT",
            if production {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            },
            &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
        );
        Self {
            sentry_dsn: r.get("SENTRY_DSN").map(Secret::new),
            traces_sample_rate,
            log_level,
            log_format,
            metrics_token: r.get("METRICS_TOKEN").map(Secret::new),
        }
    }
}
