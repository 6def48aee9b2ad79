//! Extractors that reject in herald's error format: a JSON body that names the bad field,
//! the session token; the key extractors live with the key checks in `auth.rs`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::header;
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::state::AppState;

/// A JSON object as the request body. Too large → 413 (whatever its type, as for every
/// body), wrong content type → 415, malformed, mistyped or not an object → 400
/// `VALIDATION_ERROR` with the path of the offending field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Unparsed::from_request(req, state).await?.json().map(Json)
    }
}

/// A JSON object as the body, or no body: an empty body, or JSON `null`, gives
/// `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        Unparsed::from_request(req, state)
            .await?
            .optional_json()
            .map(Self)
    }
}

/// A body read but not yet parsed, for a handler that checks its caller first: a caller
/// without the right credentials is answered as such, whatever the body, and costs no parse.
/// Too large is still 413 before anything else.
pub struct Unparsed {
    bytes: Bytes,
    is_json: bool,
}

impl FromRequest<AppState> for Unparsed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = is_json(&req);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(rejection, state.config.server.max_body_bytes))?;
        Ok(Self { bytes, is_json })
    }
}

impl Unparsed {
    /// The body as [`Json`] reads it.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self.is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_object(&self.bytes)
    }

    /// The body as [`OptionalJson`] reads it.
    pub fn optional_json<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        if !self.is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        if self.bytes.trim_ascii() == b"null" {
            return Ok(T::default());
        }
        parse_object(&self.bytes)
    }
}

/// Query parameters, rejected in herald's error format, naming the parameter at fault (axum's
/// own rejection is plain text, and names it only in its message).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// `query` read as axum's `Query` reads it, a failure naming its parameter.
fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let text = err.into_inner().to_string();
        let field = field_at(path, &text);
        if field == "." {
            return ApiError::BadRequest {
                message: format!("the query string is not valid: {text}"),
                field: None,
            };
        }
        ApiError::BadRequest {
            message: format!("invalid value for '{field}': {text}"),
            field: Some(field),
        }
    })
}

/// A body that must be a JSON object: serde would also build a struct from an array of its
/// fields' values, which no client means.
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.trim_ascii_start().first() {
        Some(b'{') | None => parse_json(bytes),
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => {
            parse_json(bytes)
        }
        Some(_) => Err(ApiError::BadRequest {
            message: "expected a JSON object".to_owned(),
            field: None,
        }),
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn body_rejection(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::BadRequest {
            message: "could not read the request body".to_owned(),
            field: None,
        }
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::BadRequest {
                message: format!("malformed JSON: {inner}"),
                field: None,
            }
        } else {
            let text = inner.to_string();
            let field = field_at(path, &text);
            ApiError::BadRequest {
                message: format!("invalid value for '{field}': {}", strip_position(&text)),
                field: Some(field),
            }
        }
    })
}

/// The field a deserializer's error at `path` is about: the path itself, or, for "missing
/// field `x`" (which sits at the parent's path), the field named; `.` for the whole value.
fn field_at(path: String, message: &str) -> String {
    match (path.as_str(), named_field(message)) {
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (_, None) => path,
    }
}

/// The field a "missing field `x`" message names (the error's path stops at the parent;
/// for an unknown field the path already ends at the field).
fn named_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// The `Idempotency-Key` header, if sent: a request sent again with the same key (after a
/// timeout or a lost answer) is answered as the first one was, and changes nothing. 1-255
/// visible ASCII characters, else 422 naming the header. Checked when the handler asks
/// ([`IdempotencyHeader::key`]), so one that checks its caller first tells a caller without
/// the right nothing about the header either.
pub struct IdempotencyHeader(Option<http::HeaderValue>);

/// The longest `Idempotency-Key` taken.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

impl IdempotencyHeader {
    /// The key, or 422 for a malformed one.
    pub fn key(self) -> Result<Option<String>, ApiError> {
        let Some(value) = self.0 else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > IDEMPOTENCY_KEY_MAX
            || !bytes.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(ApiError::Unprocessable {
                field: "Idempotency-Key".to_owned(),
                message: format!(
                    "Idempotency-Key is 1-{IDEMPOTENCY_KEY_MAX} visible ASCII characters, \
                     no spaces"
                ),
            });
        }
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get("idempotency-key").cloned()))
    }
}

pub use super::auth::AdminKey;
pub use crate::keys::ClientKey;

/// The `X-Session-Access-Token` header, if sent. Checking it is the handler's business,
/// because the answer depends on the session.
pub struct SessionToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for SessionToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("x-session-access-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .filter(|v| !v.is_empty()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field_of(json: &str) -> Option<String> {
        match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        assert_eq!(
            field_of(r#"{"name": 5, "inner": {"count": 1}}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            field_of(r#"{"name": "a", "inner": {"count": "x"}}"#).as_deref(),
            Some("inner.count")
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(
            field_of(r#"{"inner": {"count": 1}}"#).as_deref(),
            Some("name")
        );
        assert_eq!(
            field_of(r#"{"name": "a", "inner": {}}"#).as_deref(),
            Some("inner.count")
        );
    }

    #[test]
    fn malformed_json_has_no_field() {
        assert_eq!(field_of(r#"{"name": "#), None);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Listing {
        email: String,
        limit: Option<i64>,
    }

    #[test]
    fn a_query_parameter_at_fault_is_named() {
        let refused = |query: &str| match parse_query::<Listing>(query) {
            Err(ApiError::BadRequest { message, field }) => (field, message),
            other => panic!("expected a 400, got {other:?}"),
        };
        let (field, message) = refused("email=a%40b.co&limit=99999999999999999999");
        assert_eq!(field.as_deref(), Some("limit"));
        assert!(
            message.starts_with("invalid value for 'limit': "),
            "{message}"
        );
        assert_eq!(
            refused("email=a%40b.co&limit=ten").0.as_deref(),
            Some("limit")
        );
        assert_eq!(refused("limit=5").0.as_deref(), Some("email"));
        let listing = parse_query::<Listing>("email=a%40b.co&limit=5").unwrap();
        assert_eq!((listing.email.as_str(), listing.limit), ("a@b.co", Some(5)));
    }
}
