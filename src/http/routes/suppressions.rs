//! The suppression list without SQL: who herald no longer mails after a hard bounce or a
//! complaint (why, since when, from which source), and lifting one (audited).

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use herald_actors::email::Email;

use crate::http::error::ApiError;
use crate::http::extract::AdminKey;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::http::validate;
use crate::store::suppressions::{self, Suppression};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this address, under any spelling (the same address but for capitals).
    #[param(format = Email)]
    pub email: Option<String>,
    /// Only those suppressed for this reason: `bounced` or `complained`.
    #[param(pattern = "^(bounced|complained)$")]
    pub reason: Option<String>,
    /// Only those from this source: `smtp` (a refusal during the SMTP conversation),
    /// `webhook`, `sendgrid` (the events webhooks) or `operator` (added by hand).
    #[param(pattern = "^(smtp|webhook|sendgrid|operator)$")]
    pub source: Option<String>,
    /// Rows per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub offset: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct SuppressionList {
    pub suppressions: Vec<Suppression>,
    /// How many match, on every page.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/admin/suppressions", tag = "admin", security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Suppressed addresses, newest first", body = SuppressionList),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "An invalid email, reason, source, limit or offset", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<SuppressionList>, ApiError> {
    let address = query
        .email
        .as_deref()
        .map(|raw| validate::address("email", raw))
        .transpose()?;
    let reason = query
        .reason
        .as_deref()
        .map(|raw| {
            suppressions::Reason::parse(raw)
                .ok_or_else(|| validate::invalid("reason", "reason is bounced or complained"))
        })
        .transpose()?;
    let source = query
        .source
        .as_deref()
        .map(|raw| {
            suppressions::SOURCES
                .into_iter()
                .find(|source| *source == raw)
                .ok_or_else(|| {
                    validate::invalid(
                        "source",
                        format!("source is one of {}", suppressions::SOURCES.join(", ")),
                    )
                })
        })
        .transpose()?;
    let (limit, offset) = validate::page(query.limit, query.offset)?;
    let filter = suppressions::Filter {
        email: address.as_ref().map(Email::as_str),
        reason,
        source,
    };
    let (suppressions, total) = suppressions::list(&state.store, filter, limit, offset).await?;
    Ok(Json(SuppressionList {
        suppressions,
        total,
        limit,
        offset,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct AddSuppressions {
    /// The addresses to suppress, at least one; as many as `MAX_BODY_BYTES` holds (about a
    /// thousand by default). A longer list goes in parts, or through `herald suppressions add
    /// --file`.
    #[schema(min_items = 1)]
    pub suppressions: Vec<NewSuppression>,
    /// Count what would be added, and add nothing (nor audit).
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Deserialize, ToSchema)]
pub struct NewSuppression {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// `bounced` (the mailbox does not take mail) or `complained` (its owner reported
    /// herald's mail, or asked never to be mailed).
    #[schema(pattern = "^(bounced|complained)$")]
    pub reason: String,
    /// Why, in the operator's words: shown with the suppression (at most 200 characters).
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub detail: Option<String>,
}

impl NewSuppression {
    /// The addition this entry, the `i`th of the list, asks for; a 422 naming its field
    /// otherwise.
    fn addition(self, i: usize) -> Result<suppressions::Addition, ApiError> {
        let field = |name: &str| format!("suppressions[{i}].{name}");
        let email = validate::address(&field("email"), &self.email)?;
        let reason = suppressions::Reason::parse(&self.reason)
            .ok_or_else(|| validate::invalid(field("reason"), "reason is bounced or complained"))?;
        let detail = validate::text(
            &field("detail"),
            self.detail,
            suppressions::DETAIL_MAX,
            false,
        )?;
        Ok(suppressions::Addition {
            email: email.as_str().to_owned(),
            reason,
            detail,
        })
    }
}

#[utoipa::path(post, path = "/admin/suppressions", tag = "admin", security(("api_key" = [])),
    request_body(content = AddSuppressions, description = "The addresses herald must no longer mail, with why"),
    responses(
        (status = 200, description = "Suppressed, all in one transaction (audited); an address suppressed already, under any spelling, keeps its first reason, and one named twice, in any capitals, counts once. With `dry_run`, the counts alone", body = suppressions::Added),
        (status = 400, description = "Malformed JSON", body = crate::http::error::ErrorBody),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: a body over MAX_BODY_BYTES; send the list in parts", body = crate::http::error::ErrorBody),
        (status = 422, description = "An empty list, or an entry's invalid address, reason or detail (its field named, e.g. `suppressions[3].email`); nothing is added", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn add(
    State(state): State<AppState>,
    key: AdminKey,
    crate::http::extract::Json(request): crate::http::extract::Json<AddSuppressions>,
) -> Result<Json<suppressions::Added>, ApiError> {
    if request.suppressions.is_empty() {
        return Err(validate::invalid(
            "suppressions",
            "suppressions holds at least one address",
        ));
    }
    let additions = request
        .suppressions
        .into_iter()
        .enumerate()
        .map(|(i, entry)| entry.addition(i))
        .collect::<Result<Vec<_>, _>>()?;
    let added = suppressions::add(
        &state.store,
        &additions,
        &key.fingerprint,
        state.now_ms(),
        request.dry_run,
    )
    .await?;
    if added.dry_run {
        return Ok(Json(added));
    }
    tracing::info!(
        added = added.added,
        already_suppressed = added.already_suppressed,
        by = %key.fingerprint,
        "suppressions added"
    );
    Ok(Json(added))
}

#[utoipa::path(delete, path = "/admin/suppressions/{email}", tag = "admin", security(("api_key" = [])),
    params(("email" = String, Path, format = Email, description = "The suppressed address")),
    responses(
        (status = 200, description = "Lifted under every spelling of the address (each audited): the suppression removed, that of the spelling given when it had one", body = Suppression),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 404, description = "NOT_SUPPRESSED: the address is not on the list", body = crate::http::error::ErrorBody),
        (status = 422, description = "Not an email address", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn lift(
    State(state): State<AppState>,
    key: AdminKey,
    Path(raw): Path<String>,
) -> Result<Json<Suppression>, ApiError> {
    let address = validate::address("email", &raw)?;
    let lifted = suppressions::lift(&state.store, address.as_str(), &key.fingerprint)
        .await?
        .ok_or_else(|| ApiError::not_found("NOT_SUPPRESSED", "That address is not suppressed."))?;
    tracing::info!(recipient = %address.masked(), by = %key.fingerprint, "suppression lifted");
    Ok(Json(lifted))
}
