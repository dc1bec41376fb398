//! The cell's HTTP surface. Tenant routes sit behind `tenant_context`, which
//! takes the tenant the router authenticated; health and metrics are the only
//! routes without it.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use control_plane::watch::ClusterWatch;
use serde_json::json;

use crate::error::CellError;
use crate::ingest::{IngestRequest, Ingestor};
use crate::pipeline::{Orchestrator, QueryRequest, RequestContext};

#[derive(Clone)]
pub struct AppState {
    pub cell_id: String,
    pub orchestrator: Arc<Orchestrator>,
    pub ingestor: Arc<Ingestor>,
    pub cluster: ClusterWatch,
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub max_body_bytes: usize,
}

/// The router, layers from outside in: body-size limit (413), then, on tenant
/// routes, the tenant context (401 without one). Every response names the cell.
pub fn routes(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/v1/documents", post(ingest))
        .route("/v1/documents/{id}", delete(delete_document))
        .route("/v1/query", post(query))
        .route("/v1/cache", delete(purge_cache))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tenant_context,
        ));
    let cell_id = HeaderValue::from_str(&state.cell_id).unwrap_or(HeaderValue::from_static("cell"));
    Router::new()
        .merge(tenant_routes)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let cell_id = cell_id.clone();
            async move {
                r.headers_mut().insert(common::headers::SERVED_BY, cell_id);
                r
            }
        }))
        .with_state(state)
}

async fn tenant_context(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tenant = request
        .headers()
        .get(common::headers::TENANT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(tenant) = tenant else {
        return CellError::Unauthenticated("requests reach a cell only through the router".into())
            .into_response();
    };
    let cache_threshold = match state.cluster.snapshot().tenants.get(&tenant) {
        Some(record) => record.cache_threshold,
        None => {
            return CellError::Unauthenticated(format!("unknown tenant {tenant:?}"))
                .into_response();
        }
    };
    let request_id = request
        .headers()
        .get(common::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestContext {
        tenant,
        request_id,
        cache_threshold,
    });
    next.run(request).await
}

fn body_error(e: axum::extract::rejection::JsonRejection, limit: usize) -> CellError {
    match CellError::from(e) {
        CellError::PayloadTooLarge { .. } => CellError::PayloadTooLarge { limit },
        other => other,
    }
}

async fn ingest(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    body: Result<Json<IngestRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CellError> {
    let Json(req) = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let out = state.ingestor.ingest(&ctx.tenant, req).await?;
    Ok((StatusCode::OK, Json(out)).into_response())
}

async fn delete_document(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
) -> Result<Response, CellError> {
    let removed = state.ingestor.delete(&ctx.tenant, &id).await?;
    Ok(Json(json!({"id": id, "deleted_chunks": removed})).into_response())
}

async fn query(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CellError> {
    let Json(req) = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let answer = state.orchestrator.query(&ctx, req).await?;
    Ok(Json(answer).into_response())
}

async fn purge_cache(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
) -> Result<Response, CellError> {
    match state.orchestrator.cache.purge(&ctx.tenant).await {
        Ok(n) => Ok(Json(json!({"purged": n})).into_response()),
        Err(e) => {
            tracing::warn!(error = %e, "cache purge failed");
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"type": "cache_unavailable", "message": "the cache is unavailable; try again"}})),
            )
                .into_response())
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    common::metrics::render(&state.registry)
}
