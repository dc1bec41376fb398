//! The cell's HTTP surface. Tenant routes sit behind `tenant_context`, which
//! takes the tenant the router authenticated; health and metrics are the only
//! routes without it.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use control_plane::watch::ClusterWatch;
use serde_json::json;
use tracing::Instrument;

use crate::error::CellError;
use crate::ingest::jobs::JobQueue;
use crate::ingest::{IngestRequest, Ingestor};
use crate::pipeline::{Orchestrator, QueryRequest, RequestContext};

#[derive(Clone)]
pub struct AppState {
    pub cell_id: String,
    pub orchestrator: Arc<Orchestrator>,
    pub ingestor: Arc<Ingestor>,
    pub jobs: Arc<JobQueue>,
    pub cluster: ClusterWatch,
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub max_body_bytes: usize,
    /// Tenant requests served at once; beyond it requests are shed (503).
    pub in_flight: Arc<tokio::sync::Semaphore>,
}

/// The router, layers from outside in: body-size limit (413), then, on tenant
/// routes, load shedding (503) and the tenant context (401 without one).
/// Every response names the cell.
pub fn routes(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/v1/documents", post(ingest))
        .route("/v1/documents", delete(delete_all_documents))
        .route("/v1/documents/{id}", delete(delete_document))
        .route("/v1/jobs/{id}", get(job_status))
        .route("/v1/points", get(export_points).post(import_points))
        .route("/v1/points/count", get(count_points))
        .route("/v1/query", post(query))
        .route("/v1/cache", delete(purge_cache))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/embeddings", post(crate::openai::embeddings))
        .route("/v1/models", get(crate::openai::list_models))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            tenant_context,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            shed_load,
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

/// Refuses at once, rather than queueing, what the cell cannot start now:
/// the router then tries another replica.
async fn shed_load(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => CellError::Overloaded.into_response(),
    }
}

async fn tenant_context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (tenant, request_id, signature, timestamp) = {
        let header = |name: &str| common::headers::text(request.headers(), name).map(str::to_owned);
        (
            header(common::headers::TENANT),
            header(common::headers::REQUEST_ID).unwrap_or_default(),
            header(common::signing::SIGNATURE_HEADER),
            header(common::signing::TIMESTAMP_HEADER).and_then(|t| t.parse::<u64>().ok()),
        )
    };
    let Some(tenant) = tenant else {
        return CellError::Unauthenticated("requests reach a cell only through the router".into())
            .into_response();
    };
    let snapshot = state.cluster.snapshot();
    let Some(key) = snapshot.cell_auth_key.clone() else {
        return CellError::NotReady("the control plane has not issued the signing key yet".into())
            .into_response();
    };
    // The body is part of what the router signed: read it (bounded) first.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return CellError::PayloadTooLarge {
                limit: state.max_body_bytes,
            }
            .into_response();
        }
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let signed = common::signing::SignedParts {
        method: parts.method.as_str(),
        path_and_query,
        tenant: &tenant,
        request_id: &request_id,
        timestamp: timestamp.unwrap_or(0),
        body: &body,
    };
    // A router that has not yet switched to the key of the last rotation
    // still signs with the one before it.
    let keys = [
        Some(key.as_ref()),
        snapshot.cell_auth_previous_key.as_deref(),
    ];
    if let Err(e) = common::signing::verify(
        keys.into_iter().flatten(),
        &signed,
        signature.as_deref(),
        common::signing::now_secs(),
    ) {
        tracing::warn!(%tenant, error = %e, "refused a request without a valid router signature");
        return CellError::Unauthenticated(format!(
            "{e}: requests reach a cell only through the router"
        ))
        .into_response();
    }
    let (cache_threshold, fallbacks, hybrid_retrieval) = match snapshot.tenants.get(&tenant) {
        Some(record) => (
            record.cache_threshold,
            record.effective_fallbacks(),
            record.hybrid_retrieval,
        ),
        // A deleted tenant's points are deleted by the control plane after
        // its record has gone: its placement, emptied of members, says so.
        None if parts.method == axum::http::Method::DELETE
            && snapshot
                .placement(&tenant)
                .is_some_and(|p| p.members.is_empty() && p.moving.is_none()) =>
        {
            (None, control_plane::model::Fallbacks::ALL, false)
        }
        None => {
            return CellError::Unauthenticated(format!("unknown tenant {tenant:?}"))
                .into_response();
        }
    };
    // The server span of the request: a child of the router's call when the
    // router sent its trace context; every stage's span is under it.
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let span = common::telemetry::server_span(&parts.method, &route, &parts.headers);
    let request_id = if request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        request_id
    };
    span.record("request_id", request_id.as_str());
    span.record("cellnet.tenant", tenant.as_str());
    span.record("cellnet.cell", state.cell_id.as_str());
    let mut request = Request::from_parts(parts, axum::body::Body::from(body));
    request.extensions_mut().insert(RequestContext {
        tenant,
        request_id,
        cache_threshold,
        fallbacks,
        hybrid_retrieval,
    });
    let response = next.run(request).instrument(span.clone()).await;
    common::telemetry::record_status(&span, response.status());
    state.orchestrator.metrics.observe_request(route, started);
    response
}

fn body_error(e: axum::extract::rejection::JsonRejection, limit: usize) -> CellError {
    match CellError::from(e) {
        CellError::PayloadTooLarge { .. } => CellError::PayloadTooLarge { limit },
        other => other,
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestParams {
    /// Queue the batch and answer 202 with a job id instead of waiting.
    #[serde(default, rename = "async")]
    queued: bool,
}

async fn ingest(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<IngestRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CellError> {
    let Query(params) = params.map_err(|e| {
        CellError::BadRequest(format!(
            "{}; the only query parameter is async=true|false",
            e.body_text()
        ))
    })?;
    let Json(req) = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    if params.queued {
        let job = state
            .jobs
            .enqueue(&ctx.tenant, &ctx.request_id, &req)
            .await?;
        let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.job_id))
            .unwrap_or(HeaderValue::from_static("/v1/jobs"));
        return Ok((
            StatusCode::ACCEPTED,
            [(axum::http::header::LOCATION, location)],
            Json(job),
        )
            .into_response());
    }
    let out = state.ingestor.ingest(&ctx.tenant, req).await?;
    Ok((StatusCode::OK, Json(out)).into_response())
}

async fn job_status(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
) -> Result<Response, CellError> {
    match state.jobs.status(&ctx.tenant, &id).await? {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(CellError::NotFound(format!("no ingestion job {id:?}"))),
    }
}

async fn delete_document(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    Path(id): Path<String>,
) -> Result<Response, CellError> {
    let removed = state.ingestor.delete(&ctx.tenant, &id).await?;
    Ok(Json(json!({"id": id, "deleted_chunks": removed})).into_response())
}

async fn delete_all_documents(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
) -> Result<Response, CellError> {
    let removed = state.ingestor.delete_all(&ctx.tenant).await?;
    Ok(Json(json!({"deleted_chunks": removed})).into_response())
}

async fn count_points(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
) -> Result<Response, CellError> {
    let n = state.ingestor.shard.count(ctx.tenant.clone()).await?;
    Ok(Json(json!({"points": n})).into_response())
}

/// Points exported a page at a time.
const EXPORT_PAGE: usize = 256;

/// `GET /v1/points`: the tenant's points, vectors and payload, as JSON
/// lines, streamed page by page.
async fn export_points(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(4);
    let shard = state.ingestor.shard.clone();
    tokio::spawn(async move {
        let mut after = None;
        loop {
            let page = shard
                .export_page(ctx.tenant.clone(), after.take(), EXPORT_PAGE)
                .await;
            let (points, next) = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut lines = Vec::new();
            for p in points {
                if serde_json::to_writer(&mut lines, &p).is_err() {
                    return;
                }
                lines.push(b'\n');
            }
            if tx.send(Ok(axum::body::Bytes::from(lines))).await.is_err() {
                return;
            }
            match next {
                Some(n) => after = Some(n),
                None => return,
            }
        }
    });
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut response = Response::new(axum::body::Body::from_stream(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `POST /v1/points`: JSON lines as `GET /v1/points` writes them. The whole
/// body is checked before anything is written.
async fn import_points(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    body: axum::body::Bytes,
) -> Result<Response, CellError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| CellError::BadRequest("the body is not UTF-8".into()))?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let point: crate::vector::ExportedPoint = serde_json::from_str(line)
            .map_err(|e| CellError::BadRequest(format!("line {}: {e}", i + 1)))?;
        crate::ingest::validate_document_id(&point.document_id)
            .map_err(|e| CellError::BadRequest(format!("line {}: {e}", i + 1)))?;
        points.push(point);
    }
    let imported = state.ingestor.import(&ctx.tenant, points).await?;
    Ok(Json(json!({"imported": imported})).into_response())
}

async fn query(
    State(state): State<AppState>,
    Extension(ctx): Extension<RequestContext>,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, CellError> {
    let Json(req) = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let answer = state.orchestrator.query(&ctx, req).await?;
    let tokens = answer.tokens_spent();
    let mut response = Json(answer).into_response();
    response.headers_mut().insert(
        common::headers::USAGE_TOKENS,
        HeaderValue::from(u64::from(tokens)),
    );
    Ok(response)
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
