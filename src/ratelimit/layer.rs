//! The axum layer in front of each limited group of endpoints.
//!
//! Every response of a limited group carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers); a refused request gets the 429 of DESIGN.md with
//! a `Retry-After` that is never earlier than the moment a request would be admitted.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_actors::limiter::{Decision, Policy};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::identity::identify;
use super::policies::Group;
use crate::config::FailMode;
use crate::http::AppState;
use crate::http::error::ApiError;

/// The state of one group's layer.
#[derive(Clone)]
pub struct LimitedGroup {
    pub state: AppState,
    pub group: Group,
}

/// Whole seconds, rounded up, so a client that waits exactly that long is admitted.
fn seconds_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// A header value formatted on the stack (these are on every response of a limited group).
fn header_value(args: std::fmt::Arguments) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buffer = [0u8; 96];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    cursor.write_fmt(args).ok()?;
    let written = cursor.position() as usize;
    HeaderValue::from_bytes(&buffer[..written]).ok()
}

fn limit_headers(headers: &mut HeaderMap, group: Group, policy: Policy, decision: &Decision) {
    let name = group.as_str();
    let window = policy.window_ms / 1000;
    let reset = if decision.admitted {
        seconds_ceil(decision.reset_ms)
    } else {
        seconds_ceil(decision.retry_after_ms).max(1)
    };
    let max = policy.max_requests;
    if let Some(value) = header_value(format_args!("\"{name}\";q={max};w={window}")) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    let remaining = decision.remaining;
    if let Some(value) = header_value(format_args!("\"{name}\";r={remaining};t={reset}")) {
        headers.insert(RATELIMIT, value);
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The 429 body and headers.
pub fn too_many_requests(group: Group, policy: Policy, decision: &Decision) -> Response {
    let retry_after = seconds_ceil(decision.retry_after_ms).max(1);
    let body = serde_json::json!({
        "error": "RATE_LIMIT_EXCEEDED",
        "message": format!("Too many requests. Please try again in {retry_after} seconds."),
        "retry_after": retry_after,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    limit_headers(headers, group, policy, decision);
    response
}

pub async fn enforce(
    State(limited): State<LimitedGroup>,
    request: Request,
    next: Next,
) -> Response {
    let LimitedGroup { state, group } = limited;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let client = identify(
        request.headers(),
        peer,
        &state.keys,
        &state.config.trusted_proxies,
    );
    let policy = state.policies.get(group, &client.tier);
    let key = client.id.key(group.index());

    let decision = match state.limiter.check(key, policy) {
        Ok(checked) => {
            if !checked.tracked {
                crate::metrics::rate_limit_untracked(group.as_str());
            }
            checked.decision
        }
        Err(_) => {
            crate::metrics::rate_limit_failure(group.as_str());
            match state.config.rate_limit_fail_mode {
                FailMode::Open => {
                    tracing::warn!(
                        group = group.as_str(),
                        "rate limiter did not answer; failing open"
                    );
                    return next.run(request).await;
                }
                FailMode::Closed => {
                    tracing::warn!(
                        group = group.as_str(),
                        "rate limiter did not answer; failing closed"
                    );
                    return ApiError::Unavailable {
                        message: "Rate limiting is temporarily unavailable.".to_owned(),
                        retry_after_seconds: 1,
                    }
                    .into_response();
                }
            }
        }
    };

    crate::metrics::rate_limit_check(group.as_str(), decision.admitted);
    if !decision.admitted {
        tracing::warn!(
            group = group.as_str(),
            client = %client.masked(),
            retry_after_ms = decision.retry_after_ms,
            "rate_limit_exceeded"
        );
        return too_many_requests(group, policy, &decision);
    }
    let mut response = next.run(request).await;
    limit_headers(response.headers_mut(), group, policy, &decision);
    response
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
