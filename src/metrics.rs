//! Every service-level metric is declared here, with its help text, and recorded only
//! through these functions: no metric name appears anywhere else.
//!
//! Recording goes through the `metrics` facade into one Prometheus recorder; process
//! metrics (CPU, memory, file descriptors, start time) are recorded into it by
//! `metrics-process` at each scrape. `/metrics` renders that one registry.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    Counter, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    handle: PrometheusHandle,
    /// CPU, memory, file descriptors, threads of this process, recorded into the same
    /// registry at each scrape.
    process: metrics_process::Collector,
}

/// Running totals for the JSON snapshot (`/api/v1/ops/metrics`), kept beside the
/// Prometheus series because a recorder cannot be read back.
static RATE_LIMIT_HITS: AtomicU64 = AtomicU64::new(0);
static SQL_MICROS: AtomicU64 = AtomicU64::new(0);
static SQL_QUERIES: AtomicU64 = AtomicU64::new(0);

/// Requests refused by the rate limiter since start.
pub fn rate_limit_hits() -> u64 {
    RATE_LIMIT_HITS.load(Ordering::Relaxed)
}

/// Mean latency of the timed database round trips since start, in milliseconds.
pub fn avg_sql_latency_ms() -> f64 {
    let queries = SQL_QUERIES.load(Ordering::Relaxed);
    if queries == 0 {
        return 0.0;
    }
    SQL_MICROS.load(Ordering::Relaxed) as f64 / queries as f64 / 1000.0
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same one.
pub fn install() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, which nothing here does.
        let _ = metrics::set_global_recorder(recorder);
        describe();

        let process = metrics_process::Collector::default();
        process.describe();
        process.collect();
        Metrics { handle, process }
    })
}

fn describe() {
    describe_counter!(
        "http_requests_total",
        "HTTP requests served, by method, matched route and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency, by method and matched route."
    );
    describe_counter!(
        "actor_restarts_total",
        "Restarts of supervised actors, by actor."
    );
    describe_counter!(
        "email_bounces_total",
        "Bounces, by kind: hard (the address is suppressed) or soft."
    );
    describe_counter!(
        "email_complaints_total",
        "Complaints (marked as spam): the address is suppressed."
    );
    describe_counter!(
        "email_policy_refusals_total",
        "Emails a mail server refused by policy or reputation (5.7.x): about the sender."
    );
    describe_counter!(
        "actor_meltdowns_total",
        "Supervisors that exceeded their restart intensity, by supervisor."
    );
    describe_histogram!(
        "db_query_duration_seconds",
        metrics::Unit::Seconds,
        "Database round-trip latency, by operation."
    );
    describe_gauge!(
        "herald_build_info",
        "Always 1; the labels carry the build's version."
    );
    describe_gauge!(
        "herald_up_since_timestamp_seconds",
        "When this process started serving, as Unix time."
    );
    let counters = [
        (
            "rate_limit_checks_total",
            "Rate-limit checks, by endpoint group and decision (admitted or limited).",
        ),
        (
            "rate_limit_hits_total",
            "Requests refused with 429 by the rate limiter, by endpoint group.",
        ),
        (
            "rate_limit_failures_total",
            "Checks the limiter could not answer in time (fail mode applied), by group.",
        ),
        (
            "rate_limit_backend_errors_total",
            "Checks the shared windows (Redis) failed or did not answer within their timeout.",
        ),
        (
            "rate_limit_untracked_total",
            "Checks for new clients while a shard was at its key cap, by group.",
        ),
        ("sessions_started_total", "Learning sessions started."),
        (
            "sessions_completed_total",
            "Learning sessions completed (each counted once).",
        ),
        (
            "email_sends_total",
            "Email decisions and delivery outcomes, by type and outcome (queued, duplicate, suppressed, throttled, sent, retried, failed).",
        ),
        (
            "job_runs_total",
            "Scheduled job runs, by job and outcome (succeeded, failed).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, help);
    }
    let gauges = [
        (
            "rate_limit_keys",
            "Clients currently tracked by the rate limiter.",
        ),
        (
            "email_outbox_depth",
            "Emails waiting to be sent (pending or sending).",
        ),
        (
            "rate_limit_backend_up",
            "1 while the shared rate-limit windows (Redis) are reachable, 0 while the fail mode applies.",
        ),
        (
            "email_provider_up",
            "1 while the mail provider is reachable, 0 while sends are paused.",
        ),
        (
            "job_last_success_timestamp_seconds",
            "When each job last succeeded, as Unix time; 0 when it never has.",
        ),
        (
            "replica_settings_differ",
            "Other replicas serving now whose settings that every replica must share differ from this one's.",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
    let histograms = [
        (
            "report_pdf_render_duration_seconds",
            "Time to render one session report PDF.",
        ),
        (
            "email_send_duration_seconds",
            "Time to build and hand one email to the provider, by type.",
        ),
        ("job_duration_seconds", "How long job runs take, by job."),
        (
            "rate_limit_backend_check_duration_seconds",
            "Rate-limit checks against the shared windows (Redis), by outcome (answered, failed).",
        ),
    ];
    for (name, help) in histograms {
        describe_histogram!(name, metrics::Unit::Seconds, help);
    }
    gauge!("herald_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.process.collect();
        self.handle.render()
    }

    /// Folds recorded histogram samples into their buckets. Until this runs (or a scrape
    /// renders), samples are kept one by one, so it must run periodically even when
    /// nothing scrapes.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// A request's method as a label: one of HTTP's own, else `other`. A client may send any
/// token as a method, and each label value is a series kept for the life of the process.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ]
    .into_iter()
    .find(|(known, _)| known == method)
    .map_or("other", |(_, label)| label)
}

pub fn http_request(method: &http::Method, route: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    counter!("http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Declares at zero every series whose labels are known at start, so the first scrape says
/// "none yet" where it would otherwise say nothing: a restart counter for each supervised
/// actor and a run counter for each job and outcome.
pub fn declare_known(actors: &[String], jobs: &[&'static str]) {
    for actor in actors {
        counter!("actor_restarts_total", "actor" => actor.clone()).increment(0);
    }
    for kind in BOUNCE_KINDS {
        counter!("email_bounces_total", "kind" => kind).increment(0);
    }
    counter!("email_complaints_total").increment(0);
    counter!("email_policy_refusals_total").increment(0);
    for job in jobs {
        for outcome in ["succeeded", "failed"] {
            counter!("job_runs_total", "job" => *job, "outcome" => outcome).increment(0);
        }
    }
}

/// When `job` last succeeded according to the run ledger (every replica's runs); 0 when it
/// never has, which the alert rules read as "never" rather than "long ago".
pub fn job_last_success(job: &str, at_ms: Option<i64>) {
    gauge!("job_last_success_timestamp_seconds", "job" => job.to_owned())
        .set(at_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
}

/// Kinds of bounce `email_bounces_total` counts.
pub const BOUNCE_KINDS: [&str; 2] = ["hard", "soft"];

pub fn email_bounce(kind: &'static str) {
    counter!("email_bounces_total", "kind" => kind).increment(1);
}

pub fn email_complaint() {
    counter!("email_complaints_total").increment(1);
}

pub fn email_policy_refusal() {
    counter!("email_policy_refusals_total").increment(1);
}

pub fn actor_restart(actor: &str) {
    counter!("actor_restarts_total", "actor" => actor.to_owned()).increment(1);
}

pub fn actor_meltdown(supervisor: &str) {
    counter!("actor_meltdowns_total", "supervisor" => supervisor.to_owned()).increment(1);
}

pub fn db_query(operation: &'static str, elapsed: Duration) {
    SQL_QUERIES.fetch_add(1, Ordering::Relaxed);
    SQL_MICROS.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    histogram!("db_query_duration_seconds", "operation" => operation).record(elapsed.as_secs_f64());
}

pub fn started_serving() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!("herald_up_since_timestamp_seconds").set(now.as_secs_f64());
}

/// One limited group's check counters, registered once: a check is on every request of
/// the group, and looking a labelled series up costs more than the check itself.
struct GroupChecks {
    group: &'static str,
    admitted: Counter,
    limited: Counter,
    hits: Counter,
}

static GROUP_CHECKS: OnceLock<Vec<GroupChecks>> = OnceLock::new();

/// Registers the check counters of each rate-limited group (the limiter's groups, named at
/// start), so every group's series is there from the first scrape and a check finds its
/// counters without a registry lookup. The first call decides; later ones change nothing.
pub fn rate_limit_groups(groups: impl IntoIterator<Item = &'static str>) {
    install();
    let _ = GROUP_CHECKS.set(
        groups
            .into_iter()
            .map(|group| GroupChecks {
                group,
                admitted: counter!("rate_limit_checks_total", "group" => group, "decision" => "admitted"),
                limited: counter!("rate_limit_checks_total", "group" => group, "decision" => "limited"),
                hits: counter!("rate_limit_hits_total", "group" => group),
            })
            .collect(),
    );
}

fn group_checks(group: &'static str) -> Option<&'static GroupChecks> {
    GROUP_CHECKS
        .get()?
        .iter()
        .find(|checks| checks.group == group)
}

pub fn rate_limit_check(group: &'static str, admitted: bool) {
    if !admitted {
        RATE_LIMIT_HITS.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(checks) = group_checks(group) {
        if admitted {
            checks.admitted.increment(1);
        } else {
            checks.limited.increment(1);
            checks.hits.increment(1);
        }
    }
}

pub fn rate_limit_failure(group: &'static str) {
    counter!("rate_limit_failures_total", "group" => group).increment(1);
}

pub fn rate_limit_backend_error() {
    counter!("rate_limit_backend_errors_total").increment(1);
}

/// A check that went to the shared windows: how long it took, answered or not.
pub fn rate_limit_backend_check(elapsed: Duration, answered: bool) {
    let outcome = if answered { "answered" } else { "failed" };
    histogram!("rate_limit_backend_check_duration_seconds", "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

pub fn replica_settings_differ(replicas: usize) {
    gauge!("replica_settings_differ").set(replicas as f64);
}

pub fn rate_limit_backend_up(up: bool) {
    gauge!("rate_limit_backend_up").set(if up { 1.0 } else { 0.0 });
}

pub fn rate_limit_untracked(group: &'static str) {
    counter!("rate_limit_untracked_total", "group" => group).increment(1);
}

pub fn rate_limit_keys(count: usize) {
    gauge!("rate_limit_keys").set(count as f64);
}

pub fn session_started() {
    counter!("sessions_started_total").increment(1);
}

pub fn session_completed() {
    counter!("sessions_completed_total").increment(1);
}

pub fn pdf_rendered(elapsed: Duration) {
    histogram!("report_pdf_render_duration_seconds").record(elapsed.as_secs_f64());
}

pub fn email_decision(email_type: &'static str, outcome: &'static str) {
    counter!("email_sends_total", "type" => email_type, "outcome" => outcome).increment(1);
}

pub fn email_attempt(email_type: &str, outcome: &'static str, elapsed: Duration) {
    counter!("email_sends_total", "type" => email_type.to_owned(), "outcome" => outcome)
        .increment(1);
    histogram!("email_send_duration_seconds", "type" => email_type.to_owned())
        .record(elapsed.as_secs_f64());
}

pub fn email_outbox_depth(depth: u64) {
    gauge!("email_outbox_depth").set(depth as f64);
}

pub fn email_provider_up(up: bool) {
    gauge!("email_provider_up").set(if up { 1.0 } else { 0.0 });
}

pub fn job_finished(job: &str, succeeded: bool, duration: Option<Duration>) {
    let outcome = if succeeded { "succeeded" } else { "failed" };
    counter!("job_runs_total", "job" => job.to_owned(), "outcome" => outcome).increment(1);
    if let Some(duration) = duration {
        histogram!("job_duration_seconds", "job" => job.to_owned()).record(duration.as_secs_f64());
    }
    if succeeded {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        gauge!("job_last_success_timestamp_seconds", "job" => job.to_owned())
            .set(now.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_series_start_at_zero_and_a_job_that_never_succeeded_reads_zero() {
        let metrics = install();
        declare_known(&["known_series_actor".to_owned()], &["known_series_job"]);
        job_last_success("known_series_job", None);
        let text = metrics.render();
        for line in [
            "actor_restarts_total{actor=\"known_series_actor\"} 0",
            "job_runs_total{job=\"known_series_job\",outcome=\"succeeded\"} 0",
            "job_runs_total{job=\"known_series_job\",outcome=\"failed\"} 0",
            "job_last_success_timestamp_seconds{job=\"known_series_job\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        job_last_success("known_series_job", Some(1_700_000_000_500));
        assert!(
            metrics.render().lines().any(|l| l
                == "job_last_success_timestamp_seconds{job=\"known_series_job\"} 1700000000.5"),
        );
    }
}
