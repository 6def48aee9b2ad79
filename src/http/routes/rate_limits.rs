//! Operating the rate limiter: see and change policies at runtime, clear windows.
//! Every change is persisted and audited before it takes effect.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_actors::limiter::ResetScope;
use serde::Serialize;
use serde_json::Value;

use crate::http::error::ApiError;
use crate::http::extract::{AdminKey, OptionalJson};
use crate::http::state::AppState;
use crate::http::validate::invalid;
use crate::ratelimit::identity::{ClientId, address_identity};
use crate::ratelimit::policies::DEFAULT_TIER;
use crate::ratelimit::{GROUPS, Group};
use crate::store::policies::{self, PolicyRow};

/// Longest window a policy may have.
const MAX_WINDOW_SECONDS: u64 = 86_400;
const MAX_REQUESTS: u64 = 1_000_000;

#[derive(Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub group: String,
    pub tier: String,
    pub max_requests: i64,
    pub window_seconds: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PoliciesView {
    pub policies: Vec<PolicyView>,
    /// `open` or `closed`: what happens when the limiter cannot answer in time.
    pub fail_mode: &'static str,
    /// Tiers a policy names that no key in `API_KEYS` has: a policy set before the keys
    /// that carry its tier, or a tier misspelt. Such a policy limits no one.
    pub tiers_without_keys: Vec<String>,
}

fn view(state: &AppState) -> PoliciesView {
    let policies: Vec<PolicyView> = state
        .policies
        .rows()
        .into_iter()
        .map(|r| PolicyView {
            group: r.group,
            tier: r.tier,
            max_requests: r.max_requests,
            window_seconds: r.window_seconds,
        })
        .collect();
    let keyed = |tier: &str| state.config.keys.api_keys.iter().any(|k| k.tier == tier);
    let mut tiers_without_keys: Vec<String> = policies
        .iter()
        .map(|p| p.tier.clone())
        .filter(|tier| tier != DEFAULT_TIER && !keyed(tier))
        .collect();
    tiers_without_keys.sort();
    tiers_without_keys.dedup();
    PoliciesView {
        policies,
        fail_mode: state.config.rate_limit.fail_mode.as_str(),
        tiers_without_keys,
    }
}

#[utoipa::path(get, path = "/api/v1/ops/rate_limits", tag = "ops", security(("api_key" = [])),
    responses(
        (status = 200, description = "The policies in force", body = PoliciesView),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>) -> Json<PoliciesView> {
    Json(view(&state))
}

fn bounded(
    spec: &serde_json::Map<String, Value>,
    group: &str,
    name: &str,
    max: u64,
) -> Result<Option<i64>, ApiError> {
    match spec.get(name) {
        None => Ok(None),
        // JSON has one number type: 30 and 30.0 are the same whole number.
        Some(value) => value
            .as_u64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= max as f64)
                    .map(|f| f as u64)
            })
            .filter(|v| (1..=max).contains(v))
            .map(|v| Some(v as i64))
            .ok_or_else(|| {
                invalid(
                    format!("{group}.{name}"),
                    format!("{group}.{name} must be a whole number from 1 to {max}"),
                )
            }),
    }
}

/// Validates the whole request before anything is written.
fn parse_changes(
    state: &AppState,
    body: &Value,
) -> Result<Vec<(Option<PolicyRow>, PolicyRow)>, ApiError> {
    let groups = body
        .as_object()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| invalid("body", "expected an object such as {\"stats\": {\"max_requests\": 30, \"window_seconds\": 60}}"))?;
    let mut changes = Vec::new();
    for (name, spec) in groups {
        let group = Group::parse(name).ok_or_else(|| {
            let known: Vec<_> = GROUPS.iter().map(|g| g.as_str()).collect();
            invalid(
                name.clone(),
                format!(
                    "unknown group '{name}'; expected one of {}",
                    known.join(", ")
                ),
            )
        })?;
        let spec = spec.as_object().ok_or_else(|| {
            invalid(
                name.clone(),
                format!("{name} must be an object with max_requests and/or window_seconds"),
            )
        })?;
        if let Some(unknown) = spec
            .keys()
            .find(|k| !["max_requests", "window_seconds", "tier"].contains(&k.as_str()))
        {
            return Err(invalid(
                format!("{name}.{unknown}"),
                format!("unknown field '{unknown}'"),
            ));
        }
        let tier = match spec.get("tier") {
            None => DEFAULT_TIER.to_owned(),
            Some(Value::String(t))
                if !t.is_empty()
                    && t.len() <= 32
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                t.to_ascii_lowercase()
            }
            Some(_) => {
                return Err(invalid(
                    format!("{name}.tier"),
                    "tier must be 1-32 letters, digits, '-' or '_'",
                ));
            }
        };
        let max_requests = bounded(spec, name, "max_requests", MAX_REQUESTS)?;
        let window_seconds = bounded(spec, name, "window_seconds", MAX_WINDOW_SECONDS)?;
        if max_requests.is_none() && window_seconds.is_none() {
            return Err(invalid(
                name.clone(),
                format!("{name} must set max_requests and/or window_seconds"),
            ));
        }
        let old = state.policies.exact(group, &tier);
        let current = state.policies.get(group, &tier);
        let new = PolicyRow {
            group: group.as_str().to_owned(),
            tier,
            max_requests: max_requests.unwrap_or(i64::from(current.max_requests)),
            window_seconds: window_seconds.unwrap_or((current.window_ms / 1000) as i64),
        };
        changes.push((old, new));
    }
    Ok(changes)
}

/// The body of `PUT /api/v1/ops/rate_limits`, as the document gives it: at least one group,
/// each setting `max_requests` and/or `window_seconds` within their bounds, for an optional
/// tier. [`parse_changes`] reads the body itself, field by field, so its errors can name the
/// field; this is the same rule written as a schema.
pub struct PolicyChanges;

impl utoipa::PartialSchema for PolicyChanges {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, AllOfBuilder, AnyOfBuilder, ObjectBuilder, Type,
        };
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let whole = |max: u64| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(max))
        };
        let fields = || {
            ObjectBuilder::new()
                .property("max_requests", whole(MAX_REQUESTS))
                .property("window_seconds", whole(MAX_WINDOW_SECONDS))
                .property(
                    "tier",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[A-Za-z0-9_-]{1,32}$"))
                        .description(Some("The tier the policy is for; `default` when absent")),
                )
                .additional_properties(closed())
        };
        let sets = |field: &str| ObjectBuilder::new().required(field);
        let change = || {
            AllOfBuilder::new().item(fields()).item(
                AnyOfBuilder::new()
                    .item(sets("max_requests"))
                    .item(sets("window_seconds")),
            )
        };
        let mut groups = ObjectBuilder::new()
            .min_properties(Some(1))
            .additional_properties(closed())
            .description(Some(
                "Groups to change, e.g. {\"stats\": {\"max_requests\": 30, \"window_seconds\": 60, \"tier\": \"pro\"}}",
            ));
        for group in GROUPS {
            groups = groups.property(group.as_str(), change());
        }
        groups.into()
    }
}

impl utoipa::ToSchema for PolicyChanges {}

#[utoipa::path(put, path = "/api/v1/ops/rate_limits", tag = "ops", security(("api_key" = [])),
    request_body(content = inline(PolicyChanges), description = "Groups to change"),
    responses(
        (status = 200, description = "The policies now in force", body = PoliciesView),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Invalid value; `field` names it; nothing changed", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn update(
    State(state): State<AppState>,
    key: AdminKey,
    body: axum::body::Bytes,
) -> Result<Json<PoliciesView>, ApiError> {
    let body: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
        message: format!("malformed JSON: {e}"),
        field: None,
    })?;
    let changes = parse_changes(&state, &body)?;
    policies::apply(&state.store, &key.fingerprint, &changes).await?;
    let rows: Vec<PolicyRow> = changes.into_iter().map(|(_, new)| new).collect();
    state.policies.replace(&rows);
    tracing::info!(changes = rows.len(), by = %key.fingerprint, "rate-limit policies changed");
    Ok(Json(view(&state)))
}

#[derive(serde::Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// `stats`, `reports` or `sessions`; all groups when absent.
    #[schema(pattern = "^(stats|reports|sessions)$")]
    pub group: Option<String>,
    /// An address (IPv6 counts per /64) or `key:<fingerprint>`; all clients when absent.
    #[schema(schema_with = client_schema)]
    pub client: Option<String>,
}

fn client_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let address = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    AnyOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^key:[\\x21-\\x7e]{0,60}$")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ResetResult {
    pub cleared: usize,
}

#[utoipa::path(post, path = "/admin/rate_limits/reset", tag = "admin", security(("api_key" = [])),
    request_body(content = Option<ResetRequest>, description = "Optional: which group and/or client to clear"),
    responses(
        (status = 200, description = "Windows cleared", body = ResetResult),
        (status = 401, description = "Missing or wrong X-API-Key", body = crate::http::error::ErrorBody),
        (status = 422, description = "Unknown group or malformed client", body = crate::http::error::ErrorBody),
        (status = 503, description = "A limiter shard did not answer", body = crate::http::error::ErrorBody)))]
#[tracing::instrument(skip_all)]
pub async fn reset(
    State(state): State<AppState>,
    key: AdminKey,
    OptionalJson(request): OptionalJson<ResetRequest>,
) -> Result<(StatusCode, Json<ResetResult>), ApiError> {
    let group = match request.group.as_deref() {
        None => None,
        Some(name) => Some(
            Group::parse(name)
                .ok_or_else(|| invalid("group", format!("unknown group '{name}'")))?,
        ),
    };
    let client = match request.client.as_deref() {
        None => None,
        Some(c) if c.starts_with("key:") && c.len() <= 64 => {
            Some(ClientId::Key(c["key:".len()..].to_owned()))
        }
        Some(c) => Some(address_identity(c.parse().map_err(|_| {
            invalid(
                "client",
                "client must be an IP address or key:<fingerprint>",
            )
        })?)),
    };
    let scope = match (group, &client) {
        (None, None) => ResetScope::All,
        (Some(group), None) => ResetScope::Group(group.index()),
        (group, Some(client)) => ResetScope::Keys(
            group
                .map_or_else(|| GROUPS.to_vec(), |g| vec![g])
                .into_iter()
                .map(|g| client.key(g.index()))
                .collect(),
        ),
    };
    let target = format!(
        "{}/{}",
        group.map_or("*", Group::as_str),
        client
            .as_ref()
            .map_or_else(|| "*".to_owned(), ToString::to_string)
    );
    crate::store::audit::record_alone(&state.store, &key.fingerprint, "rate_limit.reset", &target)
        .await?;
    let cleared = state
        .limiter
        .reset(scope)
        .await
        .map_err(|_| ApiError::Unavailable {
            message: "a limiter shard did not answer; try again".to_owned(),
            retry_after_seconds: 1,
        })?;
    Ok((StatusCode::OK, Json(ResetResult { cleared })))
}
