//! The operator API under `/admin/…`, authenticated with the operator token.
//! `cellctl` is a thin client of it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::{
    ApiKeyRecord, DEFAULT_PLAN, Fallbacks, KeyKind, Keys, PLANS, ProviderDrain, ProviderHealth,
    TenantLimits, TenantRecord, generate_api_key, hash_api_key, now_ms, plan_limits,
    validate_provider_id, validate_tenant_id,
};
use crate::service::Secret;
use crate::store::{Store, StoreError, decode, encode};

mod cells;
mod tenants;

pub use cells::{CellSummary, PlacementSummary, TenantPlacement};

#[derive(Clone)]
pub struct AdminState {
    pub store: Store,
    pub keys: Keys,
    pub token: Secret,
    pub registry: Arc<prometheus_client::registry::Registry>,
    /// The control plane's snapshot, for what spans many keys (placement).
    pub cluster: crate::watch::ClusterWatch,
    pub placement: crate::placement::MoveSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing or wrong operator token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Store(StoreError::Rejected(_) | StoreError::Corrupt { .. }) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin request failed in etcd");
                "the control-plane store is unavailable".to_owned()
            }
            other => other.to_string(),
        };
        (status, Json(json!({"error": {"message": message}}))).into_response()
    }
}

/// `/admin/…` routes, all behind the operator token.
pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/admin/tenants", post(create_tenant).get(list_tenants))
        .merge(tenants::routes())
        .merge(cells::routes())
        .route("/admin/providers", get(list_providers))
        .route(
            "/admin/providers/{id}/drain",
            post(drain_provider).delete(undrain_provider),
        )
        .route("/admin/leader", get(leader))
        .route("/admin/signing-key/rotate", post(rotate_signing_key))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_operator,
        ))
        .with_state(state)
}

async fn require_operator(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("other", axum::extract::MatchedPath::as_str);
    let span = common::telemetry::server_span(request.method(), route, request.headers());
    let presented = common::headers::bearer(request.headers());
    let response = match presented {
        Some(token) if state.token.matches(token) => {
            tracing::Instrument::instrument(next.run(request), span.clone()).await
        }
        _ => AdminError::Unauthorized.into_response(),
    };
    common::telemetry::record_status(&span, response.status());
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub id: String,
    #[serde(default)]
    pub plan: Option<String>,
}

/// A tenant as operators see it: never the key hashes.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantSummary {
    pub id: String,
    pub plan: String,
    pub key_hints: Vec<String>,
    pub pin: Option<Vec<String>>,
    #[serde(default)]
    pub cache_threshold: Option<f32>,
    /// The limits in force: the tenant's own or its plan's.
    pub limits: TenantLimits,
    /// Whether `limits` are the tenant's own rather than its plan's.
    #[serde(default)]
    pub custom_limits: bool,
    /// The fallbacks in force: the tenant's own or its plan's.
    pub fallbacks: Fallbacks,
    /// BM25 fused with vector retrieval.
    #[serde(default)]
    pub hybrid_retrieval: bool,
    pub created_at_ms: u64,
}

/// `PATCH /admin/tenants/{id}`: fields present are set; `null` clears.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub pin: Option<Option<Vec<String>>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_threshold: Option<Option<f32>>,
    /// The tenant's own limits; `null` goes back to the plan's.
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<Option<TenantLimits>>,
    /// The tenant's own fallbacks; `null` goes back to the plan's.
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub fallbacks: Option<Option<Fallbacks>>,
    /// Turns BM25 fused with vector retrieval on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hybrid_retrieval: Option<bool>,
}

fn validate_plan(plan: &str) -> Result<(), AdminError> {
    if plan_limits(plan).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = PLANS.iter().map(|(n, _)| *n).collect();
    Err(AdminError::BadRequest(format!(
        "unknown plan {plan:?}; plans are {}",
        known.join(", ")
    )))
}

/// Tells a field set to `null` (clear it) from a field left out (keep it).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl From<&TenantRecord> for TenantSummary {
    fn from(t: &TenantRecord) -> Self {
        Self {
            id: t.id.clone(),
            plan: t.plan.clone(),
            key_hints: t.api_keys.iter().map(|k| k.hint.clone()).collect(),
            pin: t.pin.clone(),
            cache_threshold: t.cache_threshold,
            limits: t.effective_limits(),
            custom_limits: t.limits.is_some(),
            fallbacks: t.effective_fallbacks(),
            hybrid_retrieval: t.hybrid_retrieval,
            created_at_ms: t.created_at_ms,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreatedTenant {
    pub tenant: TenantSummary,
    /// Shown once; only its hash is stored.
    pub api_key: String,
}

async fn create_tenant(
    State(state): State<AdminState>,
    body: Result<Json<CreateTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedTenant>), AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    validate_tenant_id(&body.id).map_err(AdminError::BadRequest)?;
    let plan = body.plan.unwrap_or_else(|| DEFAULT_PLAN.to_owned());
    validate_plan(&plan)?;
    let api_key = generate_api_key();
    let now = now_ms();
    let record = TenantRecord {
        id: body.id.clone(),
        api_keys: vec![ApiKeyRecord {
            sha256: hash_api_key(&api_key),
            hint: api_key.chars().take(8).collect(),
            created_at_ms: now,
        }],
        plan,
        pin: None,
        cache_threshold: None,
        limits: None,
        fallbacks: None,
        hybrid_retrieval: false,
        created_at_ms: now,
    };
    // A placement record without a tenant is a deleted tenant whose points
    // are still being removed: the id is taken until they are.
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let (tenant_key, placement_key) = (state.keys.tenant(&body.id), state.keys.placement(&body.id));
    let value = encode(&record);
    let resp = state
        .store
        .retrying("create tenant", |mut c| {
            let txn = Txn::new()
                .when([
                    Compare::create_revision(tenant_key.as_str(), CompareOp::Equal, 0),
                    Compare::create_revision(placement_key.as_str(), CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put(tenant_key.as_str(), value.clone(), None)]);
            async move { c.txn(txn).await }
        })
        .await?;
    if !resp.succeeded() {
        let exists = state
            .store
            .retrying("read tenant", |mut c| {
                let key = tenant_key.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?
            .count()
            > 0;
        return Err(AdminError::Conflict(if exists {
            format!("tenant {:?} already exists", body.id)
        } else {
            format!(
                "tenant {:?} was deleted and its points are still being removed from its cells; try again shortly",
                body.id
            )
        }));
    }
    tracing::info!(tenant = %body.id, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedTenant {
            tenant: TenantSummary::from(&record),
            api_key,
        }),
    ))
}

async fn update_tenant(
    State(state): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<Json<UpdateTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TenantSummary>, AdminError> {
    let Json(update) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    apply_tenant_update(&state, &id, update).await.map(Json)
}

/// Validates and applies a change to a tenant record (compare-and-swap).
async fn apply_tenant_update(
    state: &AdminState,
    id: &str,
    update: UpdateTenant,
) -> Result<TenantSummary, AdminError> {
    if let Some(Some(t)) = update.cache_threshold
        && !(t > 0.0 && t <= 1.0)
    {
        return Err(AdminError::BadRequest(format!(
            "cache_threshold must be in (0, 1], got {t}"
        )));
    }
    if let Some(plan) = &update.plan {
        validate_plan(plan)?;
    }
    if let Some(Some(limits)) = &update.limits {
        limits.validate().map_err(AdminError::BadRequest)?;
    }
    if let Some(Some(pin)) = &update.pin
        && pin.is_empty()
    {
        return Err(AdminError::BadRequest(
            "pin must name at least one cell (or be null to clear it)".into(),
        ));
    }
    let key = state.keys.tenant(id);
    // Read, change, write if unchanged since the read; retry on a race.
    for _ in 0..5 {
        let current = state
            .store
            .retrying("read tenant", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = current.kvs().first() else {
            return Err(AdminError::NotFound(format!("no tenant {id:?}")));
        };
        let revision = kv.mod_revision();
        let mut record: TenantRecord = decode(&key, kv.value())?;
        if let Some(plan) = &update.plan {
            record.plan = plan.clone();
        }
        if let Some(pin) = &update.pin {
            record.pin = pin.clone();
        }
        if let Some(threshold) = update.cache_threshold {
            record.cache_threshold = threshold;
        }
        if let Some(limits) = update.limits {
            record.limits = limits;
        }
        if let Some(fallbacks) = update.fallbacks {
            record.fallbacks = fallbacks;
        }
        if let Some(hybrid) = update.hybrid_retrieval {
            record.hybrid_retrieval = hybrid;
        }
        let written = state
            .store
            .put_if_revision("update tenant", &key, &encode(&record), revision)
            .await?
            .is_some();
        if written {
            tracing::info!(tenant = %id, "tenant updated");
            return Ok(TenantSummary::from(&record));
        }
    }
    Err(AdminError::Conflict(format!(
        "tenant {id:?} kept changing; try again"
    )))
}

async fn list_tenants(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let prefix = state.keys.tenants();
    let resp = state
        .store
        .retrying("list tenants", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut tenants = Vec::new();
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        if let KeyKind::Tenant(_) = state.keys.parse(key) {
            let record: TenantRecord = decode(key, kv.value())?;
            tenants.push(TenantSummary::from(&record));
        }
    }
    Ok(Json(json!({ "tenants": tenants })))
}

/// A provider-region as operators see it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProviderSummary {
    pub id: String,
    pub health: Option<ProviderHealth>,
    pub drained: bool,
    /// Cells that reported on it in their last interval.
    pub reporting_cells: Vec<String>,
    /// Cells configured to use it (registered when each starts).
    #[serde(default)]
    pub configured_cells: Vec<String>,
}

async fn list_providers(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let prefix = state.keys.providers();
    let resp = state
        .store
        .retrying("list providers", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut providers: std::collections::BTreeMap<String, ProviderSummary> = Default::default();
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let kind = state.keys.parse(key);
        let id = match kind {
            KeyKind::ProviderHealth(id) | KeyKind::ProviderDrain(id) => id,
            KeyKind::ProviderReport { provider, .. }
            | KeyKind::ProviderConfigured { provider, .. } => provider,
            _ => continue,
        };
        let summary = providers
            .entry(id.to_owned())
            .or_insert_with(|| ProviderSummary {
                id: id.to_owned(),
                ..Default::default()
            });
        match kind {
            KeyKind::ProviderHealth(_) => summary.health = Some(decode(key, kv.value())?),
            KeyKind::ProviderDrain(_) => summary.drained = true,
            KeyKind::ProviderReport { cell, .. } => summary.reporting_cells.push(cell.to_owned()),
            KeyKind::ProviderConfigured { cell, .. } => {
                summary.configured_cells.push(cell.to_owned());
            }
            _ => {}
        }
    }
    let providers: Vec<_> = providers.into_values().collect();
    Ok(Json(json!({ "providers": providers })))
}

async fn drain_provider(
    State(state): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    validate_provider_id(&id).map_err(AdminError::BadRequest)?;
    let key = state.keys.provider_drain(&id);
    let value = encode(&ProviderDrain { at_ms: now_ms() });
    state
        .store
        .retrying("drain provider", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
    tracing::info!(provider = %id, "provider drained by an operator");
    Ok(Json(json!({"id": id, "drained": true})))
}

async fn undrain_provider(
    State(state): State<AdminState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    validate_provider_id(&id).map_err(AdminError::BadRequest)?;
    let key = state.keys.provider_drain(&id);
    state
        .store
        .retrying("undrain provider", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
    tracing::info!(provider = %id, "provider back in service");
    Ok(Json(json!({"id": id, "drained": false})))
}

/// `POST /admin/signing-key/rotate`: a new router↔cell signing key; the one
/// it replaces stays accepted until the next rotation.
async fn rotate_signing_key(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let fingerprint = crate::service::rotate_cell_auth_key(&state.store, &state.keys).await?;
    Ok(Json(serde_json::json!({ "fingerprint": fingerprint })))
}

/// `GET /admin/leader`: the control-plane replica leading now, if any.
async fn leader(State(state): State<AdminState>) -> Result<Json<serde_json::Value>, AdminError> {
    let name = format!("{}/", state.keys.election());
    let leader = state
        .store
        .retrying("read leader", |mut c| {
            let name = name.clone();
            async move {
                c.get(
                    name,
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_sort(
                                etcd_client::SortTarget::Create,
                                etcd_client::SortOrder::Ascend,
                            )
                            .with_limit(1),
                    ),
                )
                .await
            }
        })
        .await?;
    let id = leader
        .kvs()
        .first()
        .and_then(|kv| kv.value_str().ok())
        .map(str::to_owned);
    Ok(Json(json!({ "leader": id })))
}
