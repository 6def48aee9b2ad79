//! Erasing a recipient on request (a parent who asks that their data be deleted): every row
//! that names the address, and the sessions reported to it with their learners' names and
//! events. Audited, the address masked.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use herald_actors::email::Email;

use crate::http::error::ApiError;
use crate::http::extract::{AdminKey, Query};
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::erasure::{self, Erased};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EraseQuery {
    /// Count what would go; delete nothing.
    pub dry_run: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct Erasure {
    pub dry_run: bool,
    /// Rows deleted per table (with `dry_run`, that would be).
    pub erased: Erased,
}

#[utoipa::path(delete, path = "/admin/recipients/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The parent's address"), EraseQuery),
    responses(
        (status = 200, description = "Everything herald kept about the address is deleted, in one transaction (audited, the address masked): its sessions with their learners' names and events, its send ledger, throttle, preferences and their history, suppression and bounce events. An address herald does not know answers zeros. Backups taken before keep it until they are rotated", body = Erasure),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn erase(
    State(state): State<AppState>,
    key: AdminKey,
    Path(raw): Path<String>,
    Query(query): Query<EraseQuery>,
) -> Result<Json<Erasure>, ApiError> {
    let email = Email::parse(&raw).map_err(|e| validate::invalid("email", e.to_string()))?;
    let dry_run = query.dry_run.unwrap_or(false);
    let erased = erasure::erase(&state.store, email.as_str(), &key.fingerprint, dry_run).await?;
    if !dry_run {
        // The throttle's memory of the address's recent sends goes too.
        if let Err(err) = state.throttle.reset(email.clone(), None).await {
            tracing::warn!(error = %err, "the throttle did not forget an erased recipient");
        }
        tracing::info!(recipient = %email.masked(), by = %key.fingerprint, "recipient erased");
    }
    Ok(Json(Erasure { dry_run, erased }))
}
