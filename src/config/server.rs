//! The HTTP server: where it listens, how long a request may take, how large its body may
//! be, which origins and proxies it trusts.

use std::net::IpAddr;
use std::time::Duration;

use super::IpBlock;
use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    /// The longest one request may take before a 504 (`REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a connection may go without a complete request head before it is closed
    /// (`HTTP_IDLE_TIMEOUT_SECONDS`).
    pub idle_timeout: Duration,
    /// Client connections open at once (`HTTP_MAX_CONNECTIONS`); by default the limit on
    /// open files less what herald keeps for its own.
    pub max_connections: usize,
    /// How long in-flight work may take to finish after a shutdown signal.
    pub shutdown_timeout: Duration,
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpBlock>,
    /// `Strict-Transport-Security` max-age; the header is sent only when set.
    pub hsts_max_age: Option<u64>,
    /// This replica's name in the outbox (`HERALD_INSTANCE`): the rows it claims carry it,
    /// and a process started again under the same name takes back the rows it left
    /// mid-send at once. Unique among live replicas; by default `hostname:port`, which a
    /// restarted container keeps (with `PORT=0`, a name of its own each run).
    pub instance: String,
    /// What `POST /api/v1/sessions/start` asks of its caller (`SESSION_START_AUTH`).
    pub session_start: StartAuth,
}

/// File descriptors kept from client connections for herald's own (mail server, Redis,
/// files), besides one for each database connection its pool may open: together at most
/// half the process's limit.
const RESERVED_DESCRIPTORS: u64 = 256;
/// Connections allowed when the process's limit on open files cannot be read.
const CONNECTIONS_WITHOUT_A_LIMIT: usize = 10_000;

/// The client connections allowed by default: the process's limit on open files less what
/// herald keeps for its own, `database` connections among them.
fn default_connections(database: u32) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(CONNECTIONS_WITHOUT_A_LIMIT, |limit| {
        let kept = (RESERVED_DESCRIPTORS + u64::from(database)).min(limit / 2);
        usize::try_from(limit - kept).unwrap_or(usize::MAX).max(1)
    })
}

/// What `POST /api/v1/sessions/start` asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAuth {
    /// Nothing (the default): a learner's app may start its sessions itself.
    None,
    /// A valid `X-API-Key` (a client's from `API_KEYS`, or the admin key): only backends
    /// start sessions, so no one else can have herald mail an address.
    Key,
}

impl ServerConfig {
    /// Read with the most connections the database pool opens (`DATABASE_MAX_CONNECTIONS`),
    /// whose descriptors the default client connections leave free.
    pub(super) fn read(r: &mut Reader<'_>, database_connections: u32) -> Self {
        let host = r.parse("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address");
        let port = r.parse("PORT", 8000u16, "a port number (0-65535)");
        let request_timeout = Duration::from_secs(r.parse(
            "REQUEST_TIMEOUT_SECONDS",
            30u64,
            "a whole number of seconds",
        ));
        r.nonzero("REQUEST_TIMEOUT_SECONDS", request_timeout.is_zero());
        let shutdown_timeout = Duration::from_secs(r.parse(
            "SHUTDOWN_TIMEOUT_SECONDS",
            30u64,
            "a whole number of seconds",
        ));
        let max_body_bytes = r.parse("MAX_BODY_BYTES", 64 * 1024usize, "a number of bytes");
        // Above the 60 s a load balancer commonly keeps an idle connection, so that it, not
        // herald, closes one: a request it sends as herald closes would fail.
        let idle_timeout = Duration::from_secs(r.parse(
            "HTTP_IDLE_TIMEOUT_SECONDS",
            75u64,
            "a whole number of seconds",
        ));
        r.nonzero("HTTP_IDLE_TIMEOUT_SECONDS", idle_timeout.is_zero());
        let max_connections = r.parse(
            "HTTP_MAX_CONNECTIONS",
            default_connections(database_connections),
            "a whole number",
        );
        r.nonzero("HTTP_MAX_CONNECTIONS", max_connections == 0);
        let cors_origins = r.list("CORS_ORIGINS");
        for origin in &cors_origins {
            if http::HeaderValue::from_str(origin).is_err() || !origin.contains("://") {
                r.problem(format!(
                    "CORS_ORIGINS: '{origin}' is not an origin like https://app.example.com"
                ));
            }
        }
        let mut trusted_proxies = Vec::new();
        for entry in r.list("TRUSTED_PROXIES") {
            match entry.parse() {
                Ok(block) => trusted_proxies.push(block),
                Err(problem) => r.problem(format!("TRUSTED_PROXIES: {problem}")),
            }
        }
        let hsts_max_age = r.get("HSTS_MAX_AGE").and_then(|raw| match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                r.problem(format!("HSTS_MAX_AGE: expected seconds, got '{raw}'"));
                None
            }
        });
        let instance = r.get("HERALD_INSTANCE").unwrap_or_else(|| {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "herald".to_owned());
            if port == 0 {
                format!(
                    "{host}:{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                )
            } else {
                format!("{host}:{port}")
            }
        });
        let session_start = r.choice(
            "SESSION_START_AUTH",
            StartAuth::None,
            &[("none", StartAuth::None), ("key", StartAuth::Key)],
        );
        Self {
            instance,
            session_start,
            host,
            port,
            request_timeout,
            max_body_bytes,
            idle_timeout,
            max_connections,
            shutdown_timeout,
            cors_origins,
            trusted_proxies,
            hsts_max_age,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_descriptors_for_herald_itself() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .expect("a limit on open files");
        let allowed = u64::try_from(default_connections(10)).unwrap();
        assert!(allowed < limit, "{allowed} of {limit}");
        assert!(
            limit - allowed <= RESERVED_DESCRIPTORS + 10,
            "{allowed} of {limit}"
        );
        // A larger database pool keeps more of them (up to half the limit).
        let larger = default_connections(200);
        assert_eq!(
            larger,
            usize::try_from(limit - (RESERVED_DESCRIPTORS + 200).min(limit / 2)).unwrap()
        );
        assert!(larger < default_connections(10), "{larger}");
    }
}
