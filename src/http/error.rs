//! Error policy for the HTTP edge.
//!
//! Every error a client sees is an [`ApiError`] rendered as
//! `{"error": "CODE", "message": "…"}` plus the fields its variant names. Each variant fixes
//! its status and code. Database and unexpected errors become a generic 500 `INTERNAL`
//! whose details never reach the client: they travel in the response's extensions to the
//! request middleware, which logs them once, inside the request's span, and reports them.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Malformed input: bad JSON, wrong types. `field` names the offending field.
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// Well-formed input that breaks a rule (range, length, format).
    #[error("{message}")]
    Unprocessable { message: String, field: String },
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("a valid X-API-Key header is required")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A dependency (an actor restarting, the database) cannot answer right now.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_seconds: u64,
    },
    #[error("the request took too long")]
    Timeout,
    /// The recipient's throttle for this email type is spent (the seed's 429).
    #[error("Too many {kind} sent. Please try again later.")]
    EmailThrottled {
        kind: &'static str,
        retry_after_seconds: u64,
        limit: u32,
        window: String,
    },
    /// Too many failed authentications from one client in the last minute.
    #[error("Too many failed authentications. Please try again in {retry_after_seconds} seconds.")]
    AuthFailures { retry_after_seconds: u64 },
    /// Anything unexpected; the detail is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The detail of a 500, carried to the request middleware for logging and reporting.
#[derive(Clone, Debug)]
pub struct InternalDetail(pub String);

impl ApiError {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::EmailThrottled { .. } | Self::AuthFailures { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. } => code,
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::BadRequest { .. } | Self::Unprocessable { .. } => "VALIDATION_ERROR",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
            Self::EmailThrottled { .. } | Self::AuthFailures { .. } => "RATE_LIMIT_EXCEEDED",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

/// The body of every error response, as the OpenAPI document describes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable code such as `UNAUTHORIZED` or `VALIDATION_ERROR`.
    pub error: String,
    pub message: String,
    /// The offending field, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait, for 429 and 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// For a spent email throttle: how many emails the window allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// For a spent email throttle: the window, e.g. `24 hours`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(_) => "An internal error occurred.".to_owned(),
            other => other.to_string(),
        };
        let mut body = ErrorBody {
            error: self.code().to_owned(),
            message,
            field: None,
            retry_after: None,
            limit: None,
            window: None,
        };
        match &self {
            Self::BadRequest { field, .. } => body.field = field.clone(),
            Self::Unprocessable { field, .. } => body.field = Some(field.clone()),
            Self::Unavailable {
                retry_after_seconds,
                ..
            }
            | Self::AuthFailures {
                retry_after_seconds,
            } => body.retry_after = Some(*retry_after_seconds),
            Self::EmailThrottled {
                retry_after_seconds,
                limit,
                window,
                ..
            } => {
                body.retry_after = Some(*retry_after_seconds);
                body.limit = Some(*limit);
                body.window = Some(window.clone());
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        match self {
            Self::Unavailable {
                retry_after_seconds,
                ..
            }
            | Self::EmailThrottled {
                retry_after_seconds,
                ..
            }
            | Self::AuthFailures {
                retry_after_seconds,
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            }
            Self::Internal(detail) => {
                response.extensions_mut().insert(InternalDetail(detail));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Self::Conflict {
                    code: "CONFLICT",
                    message: "The resource already exists.".to_owned(),
                }
            }
            StoreError::Timeout(_) => Self::Unavailable {
                message: "The database did not answer in time.".to_owned(),
                retry_after_seconds: 1,
            },
            _ if err.is_unavailable() => Self::Unavailable {
                message: "The database is unavailable; please retry.".to_owned(),
                retry_after_seconds: 5,
            },
            _ => Self::Internal(err.to_string()),
        }
    }
}

impl From<herald_actors::throttle::ThrottleError> for ApiError {
    fn from(err: herald_actors::throttle::ThrottleError) -> Self {
        match err {
            herald_actors::throttle::ThrottleError::Unavailable => Self::Unavailable {
                message: "The email throttle is restarting; please retry.".to_owned(),
                retry_after_seconds: 1,
            },
            herald_actors::throttle::ThrottleError::Port(detail) => Self::Internal(detail),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::from(err).into()
    }
}
