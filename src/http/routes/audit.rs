//! The audit log without SQL: who changed which operational setting (a rate-limit policy, a
//! throttle or limiter reset, a suppression lifted, a failed email sent again, a job run by
//! hand), when, and from what to what.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::audit::{self, AuditFilter, AuditRow};
use crate::store::instant;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only the changes made at or after this instant (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only this kind of change.
    #[param(
        pattern = "^(email\\.retry|email_throttle\\.reset|job\\.run|rate_limit\\.reset|rate_limit_policy\\.update|recipient\\.erase|recipient\\.unsubscribe|suppression\\.add|suppression\\.lift)$"
    )]
    pub action: Option<String>,
    /// Rows per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub offset: Option<i64>,
}

/// One change.
#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// Who made it: the admin key's fingerprint (the first 12 hex digits of its SHA-256, as
    /// the logs' `by` names it), or `cli@` and the `HERALD_INSTANCE` of the shell that ran
    /// the command.
    pub actor: String,
    /// `email.retry`, `email_throttle.reset`, `job.run` (a job run by hand),
    /// `rate_limit.reset`, `rate_limit_policy.update`, `recipient.erase` or
    /// `suppression.lift`.
    pub action: String,
    /// What it changed (an address masked, a policy's group and tier, an email's id…).
    pub target: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            at: instant(row.at_ms),
            actor: row.actor,
            action: row.action,
            target: row.target,
            old_value: row.old_value,
            new_value: row.new_value,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
    /// How many match, on every page.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "The changes operators made, newest first (kept `RETENTION_AUDIT_LOG_DAYS`)", body = AuditLog),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "A malformed instant, an unknown action, or a limit or offset out of range", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let (limit, offset) = validate::page(query.limit, query.offset)?;
    let filter = AuditFilter::parse(
        query.since.as_deref(),
        query.action.as_deref(),
        limit,
        offset,
    )
    .map_err(|(field, reason)| validate::invalid(field, reason))?;
    let (rows, total) = audit::list(&state.store, &filter).await?;
    Ok(Json(AuditLog {
        entries: rows.into_iter().map(AuditEntry::from).collect(),
        total,
        limit,
        offset,
    }))
}
