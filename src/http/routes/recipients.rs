//! A recipient as herald knows them, for a parent who asks what is kept about them (their
//! sessions, the emails sent, their preferences and every change to them), and erasing it
//! all on request: every row that names the address, and the sessions reported to it with
//! their learners' names and events. The erasure is audited, the address masked.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::extract::{AdminKey, Query};
use crate::http::routes::preferences::{self, PreferencesView};
use crate::http::state::AppState;
use crate::http::validate;
use crate::reports::SessionSummary;
use crate::store::erased::OptOuts;
use crate::store::instant;
use crate::store::ledger::LedgerRow;
use crate::store::recipients::{self, Erased};

/// One change of the recipient's preferences, and where it came from.
#[derive(Serialize, ToSchema)]
pub struct PreferenceChange {
    pub at: DateTime<Utc>,
    /// `api`, `unsubscribe_link`, `preference_page`, `operator` (`herald recipients
    /// unsubscribe`), or `erasure` (another spelling's, whose
    /// opt-out this address now carries).
    pub source: String,
    pub field: String,
    pub old_value: String,
    pub new_value: String,
}

/// Everything herald keeps about one address.
#[derive(Serialize, ToSchema)]
pub struct RecipientRecord {
    /// What the address receives now (everything, when herald has never mailed it), and its
    /// suppression if any.
    pub preferences: PreferencesView,
    /// Every change to them, oldest first.
    pub preference_changes: Vec<PreferenceChange>,
    /// The sessions reported to the address, oldest first, each with its learner's name.
    pub sessions: Vec<SessionSummary>,
    /// Its send ledger, newest first.
    pub emails: Vec<LedgerRow>,
    /// Addresses herald keeps that differ from this one only in capitals (a recipient
    /// mailed or suppressed): herald keeps them apart, since the part before the `@` may be
    /// case-sensitive, but they are most likely the same parent's.
    pub other_spellings: Vec<String>,
    /// What the address had turned off when it (or another spelling of it) was erased, kept
    /// under a one-way hash of the address so that it is not mailed those types again;
    /// `preferences` counts it. A type turned back on lifts it.
    pub kept_from_erasure: Option<KeptFromErasure>,
}

/// An erased address's opt-outs, kept.
#[derive(Serialize, ToSchema)]
pub struct KeptFromErasure {
    /// The types whose mail it stops.
    pub opt_outs: OptOuts,
    pub erased_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/admin/recipients/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The parent's address")),
    responses(
        (status = 200, description = "Everything herald keeps about the address: preferences and their history, suppression, the sessions reported to it, its send ledger", body = RecipientRecord),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn show(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<RecipientRecord>, ApiError> {
    let email = validate::address("email", &raw)?;
    let record = recipients::record(&state.store, email.as_str(), state.now_ms()).await?;
    Ok(Json(RecipientRecord {
        preferences: preferences::view(&email, record.preferences),
        preference_changes: record
            .changes
            .into_iter()
            .map(|c| PreferenceChange {
                at: instant(c.at_ms),
                source: c.source,
                field: c.field,
                old_value: c.old_value,
                new_value: c.new_value,
            })
            .collect(),
        sessions: record.sessions,
        emails: record.emails,
        other_spellings: record.other_spellings,
        kept_from_erasure: record
            .kept_from_erasure
            .map(|(opt_outs, at_ms)| KeptFromErasure {
                opt_outs,
                erased_at: instant(at_ms),
            }),
    }))
}

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
    /// The types of email the address had stopped (a switch turned off, or both for a
    /// suppression), kept under a one-way hash of the address in lower case and nothing
    /// else, so that it is not mailed them again when a backend names it once more; a type
    /// turned back on for the address lifts it.
    pub opt_outs_kept: OptOuts,
    /// Addresses herald keeps that differ from this one only in capitals, erased only when
    /// named themselves: most likely the same parent's.
    pub other_spellings: Vec<String>,
}

#[utoipa::path(delete, path = "/admin/recipients/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The parent's address"), EraseQuery),
    responses(
        (status = 200, description = "Everything herald kept about the address is deleted, in one transaction (audited, the address masked): its sessions with their learners' names and events, its send ledger, throttle, preferences and their history, suppression and bounce events; what it had turned off is kept under a one-way hash of the address (`opt_outs_kept`). An address herald does not know answers zeros. Backups taken before keep it until they are rotated", body = Erasure),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn erase(
    State(state): State<AppState>,
    key: AdminKey,
    Path(raw): Path<String>,
    Query(query): Query<EraseQuery>,
) -> Result<Json<Erasure>, ApiError> {
    let email = validate::address("email", &raw)?;
    let dry_run = query.dry_run.unwrap_or(false);
    let (erased, opt_outs_kept) = recipients::erase(
        &state.store,
        email.as_str(),
        &key.fingerprint,
        dry_run,
        state.now_ms(),
    )
    .await?;
    if !dry_run {
        // The throttle's memory of the address's recent sends goes too.
        if let Err(err) = state.throttle.reset(email.clone(), None).await {
            tracing::warn!(error = %err, "the throttle did not forget an erased recipient");
        }
        tracing::info!(recipient = %email.masked(), by = %key.fingerprint, "recipient erased");
    }
    let other_spellings = recipients::other_spellings(&state.store, email.as_str()).await?;
    Ok(Json(Erasure {
        dry_run,
        erased,
        opt_outs_kept,
        other_spellings,
    }))
}
