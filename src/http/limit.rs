//! The tower layer in front of each limited group of endpoints.
//!
//! Every response of a limited group carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a refused request gets the 429 of DESIGN.md with
//! a `Retry-After` that is never earlier than the moment a request would be admitted.
//!
//! In memory the check never waits (see the limiter shards), so it runs inside `call`: a
//! refused request is answered without reaching the route, an admitted one is passed on as
//! is and its response gets the headers. With the windows in Redis the check is awaited
//! (bounded by the backend timeout, or answered at once while the breaker is open), and the
//! route is called after it.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use herald_actors::limiter::{Check, Checked, Decision, LimiterError, Policy};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::config::FailMode;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};
use crate::ratelimit::Group;
use crate::ratelimit::identity::{Client, identify};

/// Limits the routes it wraps as `group`.
#[derive(Clone)]
pub struct RateLimitLayer {
    state: AppState,
    group: Group,
}

impl RateLimitLayer {
    pub fn new(state: AppState, group: Group) -> Self {
        Self { state, group }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            state: self.state.clone(),
            group: self.group,
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: AppState,
    group: Group,
}

impl<S> tower::Service<Request> for RateLimit<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Limited<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (client, policy, key) = subject(&self.state, self.group, &request);
        let verdict = match self.state.limiter.check(key, policy) {
            Check::Ready(result) => decide(&self.state, self.group, policy, &client, key, result),
            Check::Pending(pending) => {
                // The route is called after the check: take the service that is ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let (state, group) = (self.state.clone(), self.group);
                return Limited::Awaiting {
                    future: Box::pin(async move {
                        let started = std::time::Instant::now();
                        let result = pending.await;
                        crate::metrics::rate_limit_backend_check(started.elapsed(), result.is_ok());
                        match decide(&state, group, policy, &client, key, result) {
                            Verdict::Answer(response) => Ok(response),
                            Verdict::Pass(headers) => {
                                let Ok(mut response) = inner.call(request).await;
                                if let Some((group, policy, decision)) = headers {
                                    limit_headers(response.headers_mut(), group, policy, &decision);
                                }
                                Ok(response)
                            }
                        }
                    }),
                };
            }
        };
        match verdict {
            Verdict::Answer(response) => Limited::Answered {
                response: Some(response),
            },
            Verdict::Pass(headers) => Limited::Passed {
                future: self.inner.call(request),
                headers,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of a limited route: answered by the limiter, or the route's own.
    #[project = LimitedProj]
    pub enum Limited<F> {
        Answered { response: Option<Response> },
        Passed {
            #[pin]
            future: F,
            headers: Option<(Group, Policy, Decision)>,
        },
        /// The check goes to Redis; the route is called once it answered.
        Awaiting {
            future: Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Limited<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LimitedProj::Answered { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            LimitedProj::Passed { future, headers } => {
                let Ok(mut response) = std::task::ready!(future.poll(cx));
                if let Some((group, policy, decision)) = headers.take() {
                    limit_headers(response.headers_mut(), group, policy, &decision);
                }
                Poll::Ready(Ok(response))
            }
            LimitedProj::Awaiting { future } => future.as_mut().poll(cx),
        }
    }
}

enum Verdict {
    /// Answered here (429, or 503 when failing closed).
    Answer(Response),
    /// Passed to the route; the decision's headers go on its response (none when the
    /// limiter could not answer and the fail mode is open).
    Pass(Option<(Group, Policy, Decision)>),
}

/// Whole seconds, rounded up, so a client that waits exactly that long is admitted.
fn seconds_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `"<group>";<a>=<x>;<b>=<y>`, the shape of both headers, written without the
/// formatting machinery: they are on every response of a limited group.
fn header_value(group: Group, a: &str, x: u64, b: &str, y: u64) -> Option<HeaderValue> {
    let mut numbers = (itoa::Buffer::new(), itoa::Buffer::new());
    let parts = [
        "\"",
        group.as_str(),
        "\";",
        a,
        "=",
        numbers.0.format(x),
        ";",
        b,
        "=",
        numbers.1.format(y),
    ];
    let mut value = [0u8; 96];
    let mut len = 0;
    for part in parts {
        value
            .get_mut(len..len + part.len())?
            .copy_from_slice(part.as_bytes());
        len += part.len();
    }
    HeaderValue::from_bytes(&value[..len]).ok()
}

fn limit_headers(headers: &mut HeaderMap, group: Group, policy: Policy, decision: &Decision) {
    let window = policy.window_ms / 1000;
    let reset = if decision.admitted {
        seconds_ceil(decision.reset_ms)
    } else {
        seconds_ceil(decision.retry_after_ms).max(1)
    };
    let max = u64::from(policy.max_requests);
    if let Some(value) = header_value(group, "q", max, "w", window) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    let remaining = u64::from(decision.remaining);
    if let Some(value) = header_value(group, "r", remaining, "t", reset) {
        headers.insert(RATELIMIT, value);
    }
}

pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Marks a response as a rate-limit refusal, which the access log leaves out (it is counted
/// in `/metrics` and logged once per client and window here).
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// The 429 body and headers.
pub fn too_many_requests(group: Group, policy: Policy, decision: &Decision) -> Response {
    let retry_after = seconds_ceil(decision.retry_after_ms).max(1);
    let body = ErrorBody {
        error: "RATE_LIMIT_EXCEEDED".to_owned(),
        message: format!("Too many requests. Please try again in {retry_after} seconds."),
        field: None,
        retry_after: Some(retry_after),
        limit: None,
        window: None,
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    limit_headers(headers, group, policy, decision);
    response
}

/// Who is asking, the policy that applies to them and their limiter key.
fn subject(state: &AppState, group: Group, request: &Request) -> (Client, Policy, u64) {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = identify(
        request.headers(),
        peer,
        &state.keys,
        &state.config.server.trusted_proxies,
    );
    let policy = state.policies.get(group, &client.tier);
    let key = client.id.key(group.index());
    (client, policy, key)
}

fn decide(
    state: &AppState,
    group: Group,
    policy: Policy,
    client: &Client,
    key: u64,
    checked: Result<Checked, LimiterError>,
) -> Verdict {
    let decision = match checked {
        Ok(checked) => {
            if !checked.tracked {
                crate::metrics::rate_limit_untracked(group.as_str());
            }
            checked.decision
        }
        Err(error) => {
            crate::metrics::rate_limit_failure(group.as_str());
            if error == LimiterError::Backend {
                crate::metrics::rate_limit_backend_error();
            }
            match state.config.rate_limit.fail_mode {
                // At debug level: while a backend is down this runs for every request; the
                // breaker and the metrics say it once.
                FailMode::Open => {
                    tracing::debug!(
                        group = group.as_str(),
                        "rate limiter did not answer; failing open"
                    );
                    return Verdict::Pass(None);
                }
                FailMode::Closed => {
                    tracing::debug!(
                        group = group.as_str(),
                        "rate limiter did not answer; failing closed"
                    );
                    return Verdict::Answer(
                        ApiError::Unavailable {
                            message: "Rate limiting is temporarily unavailable.".to_owned(),
                            retry_after_seconds: 1,
                        }
                        .into_response(),
                    );
                }
            }
        }
    };

    crate::metrics::rate_limit_check(group.as_str(), decision.admitted);
    if !decision.admitted {
        // A refused client is logged once per window, not once per request: a flood must
        // not become a flood of log lines. Every refusal is counted in `/metrics` and in the
        // periodic summary.
        let now = state.now_ms();
        let window = i64::try_from(policy.window_ms).unwrap_or(i64::MAX);
        if state.refusals.first_in_window(key, now, window) {
            tracing::warn!(
                group = group.as_str(),
                client = %client.masked(),
                retry_after_ms = decision.retry_after_ms,
                "rate_limit_exceeded (further refusals of this client in this window are counted, not logged)"
            );
        }
        let mut response = too_many_requests(group, policy, &decision);
        response.extensions_mut().insert(Refused);
        return Verdict::Answer(response);
    }
    Verdict::Pass(Some((group, policy, decision)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_so_waiting_that_long_is_enough() {
        assert_eq!(seconds_ceil(44_001), 45);
        assert_eq!(seconds_ceil(45_000), 45);
        let decision = Decision {
            admitted: false,
            limit: 20,
            remaining: 0,
            retry_after_ms: 44_200,
            reset_ms: 59_000,
        };
        let response = too_many_requests(Group::Stats, Policy::per_seconds(20, 60), &decision);
        assert_eq!(response.headers()[header::RETRY_AFTER], "45");
        assert_eq!(
            response.headers()["ratelimit-policy"],
            "\"stats\";q=20;w=60"
        );
        assert_eq!(response.headers()["ratelimit"], "\"stats\";r=0;t=45");
    }
}
