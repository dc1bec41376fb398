//! Forwarding a tenant's request to its cells. The request body is read once
//! (bounded), then sent to the tenant's cells in placement order: a cell that
//! cannot be connected to is skipped for any request (nothing reached it);
//! a timeout or 5xx is retried on the next cell only for idempotent requests.
//! The winning cell's response streams back unbuffered.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use control_plane::watch::{ClusterView, ClusterWatch};
use tracing::{Instrument, info_span};

use crate::auth::authenticate;
use crate::config::Config;
use crate::error::RouterError;
use crate::metrics::{CellLabels, RouterMetrics, StatusLabels};
use crate::placement::Placement;

pub struct ProxyState {
    pub config: Config,
    pub cluster: ClusterWatch,
    pub placement: ArcSwap<Placement>,
    pub http: reqwest::Client,
    pub metrics: RouterMetrics,
}

impl ProxyState {
    /// The placement for `view`, rebuilt only when the revision moved.
    pub fn placement_for(&self, view: &ClusterView) -> Arc<Placement> {
        let current = self.placement.load_full();
        if current.revision == view.revision {
            return current;
        }
        let fresh = Arc::new(Placement::build(view, self.config.placement));
        self.placement.store(fresh.clone());
        fresh
    }
}

/// Request headers passed on to cells; everything else (cookies, the
/// tenant's API key) stays at the router.
const FORWARDED: &[&str] = &["content-type", "accept", "accept-encoding"];
/// Hop-by-hop headers never copied from a cell's response.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
];

/// Requests that may be sent twice without changing the outcome.
fn is_idempotent(method: &Method, path: &str) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    ) || (*method == Method::POST && path == "/v1/query")
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(common::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, RouterError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RouterError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            RouterError::PayloadTooLarge { limit }
        } else {
            RouterError::BadBody(e.to_string())
        }
    })
}

/// The handler for every tenant route.
pub async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let id = request_id(request.headers());
    let span = info_span!("route", request_id = %id, tenant = tracing::field::Empty, cell = tracing::field::Empty);
    let mut response = match route(&state, request, &id).instrument(span).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(common::headers::REQUEST_ID, v);
    }
    state
        .metrics
        .responses
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn route(
    state: &ProxyState,
    request: Request,
    request_id: &str,
) -> Result<Response, RouterError> {
    let view = state.cluster.snapshot();
    let tenant = authenticate(&view, request.headers())?;
    tracing::Span::current().record("tenant", tenant.id.as_str());
    let targets = state
        .placement_for(&view)
        .cells_for(&tenant.id, tenant.pin.as_deref());
    if targets.is_empty() {
        return Err(RouterError::NoCell);
    }
    let Some(signing_key) = view.cell_auth_key.clone() else {
        return Err(RouterError::NotReady(
            "the control plane has not issued the cell signing key yet",
        ));
    };
    let (parts, body) = request.into_parts();
    let body = read_body(body, &parts.headers, state.config.max_body_bytes).await?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let timestamp = common::signing::now_secs();
    let signature = common::signing::sign(
        &signing_key,
        &common::signing::SignedParts {
            method: parts.method.as_str(),
            path_and_query,
            tenant: &tenant.id,
            request_id,
            timestamp,
            body: &body,
        },
    );
    let idempotent = is_idempotent(&parts.method, parts.uri.path());
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let mut failures: Vec<String> = Vec::new();

    for (attempt, target) in targets.iter().enumerate() {
        if attempt > 0 {
            state.metrics.failovers.inc();
        }
        let mut outgoing = state
            .http
            .request(
                parts.method.clone(),
                format!("{}{}", target.endpoint, path_and_query),
            )
            .header(common::headers::REQUEST_ID, request_id)
            .header(common::headers::TENANT, tenant.id.as_str())
            .header(common::signing::TIMESTAMP_HEADER, timestamp)
            .header(common::signing::SIGNATURE_HEADER, signature.as_str())
            .body(body.clone());
        for name in FORWARDED {
            if let Some(v) = parts.headers.get(*name) {
                outgoing = outgoing.header(*name, v.clone());
            }
        }
        let started = Instant::now();
        let result = tokio::time::timeout_at(deadline, outgoing.send()).await;
        let outcome = |o: &'static str| CellLabels {
            cell: target.cell.to_string(),
            outcome: o,
        };
        match result {
            Err(_) => {
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("timeout"))
                    .inc();
                return Err(RouterError::DeadlineExceeded);
            }
            Ok(Err(e)) if e.is_connect() => {
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("connect_error"))
                    .inc();
                tracing::warn!(cell = %target.cell, error = %e, "cell unreachable, trying the next one");
                failures.push(format!("{}: cannot connect", target.cell));
            }
            Ok(Err(e)) => {
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("error"))
                    .inc();
                tracing::warn!(cell = %target.cell, error = %e, "cell request failed");
                failures.push(format!("{}: {e}", target.cell));
                if !idempotent {
                    break;
                }
            }
            Ok(Ok(resp))
                if resp.status().is_server_error() && idempotent && attempt + 1 < targets.len() =>
            {
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("server_error"))
                    .inc();
                tracing::warn!(cell = %target.cell, status = %resp.status(), "cell failed, trying the next one");
                failures.push(format!("{}: HTTP {}", target.cell, resp.status()));
            }
            Ok(Ok(resp)) => {
                state
                    .metrics
                    .upstream_seconds
                    .observe(started.elapsed().as_secs_f64());
                state.metrics.upstream.get_or_create(&outcome("ok")).inc();
                tracing::Span::current().record("cell", &*target.cell);
                return Ok(relay(resp));
            }
        }
    }
    Err(RouterError::AllCellsFailed(failures.join("; ")))
}

/// Streams a cell's response back to the client.
fn relay(resp: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::with_capacity(resp.headers().len());
    for (name, value) in resp.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_ref()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.insert(n, v);
        }
    }
    let mut response = Response::new(Body::from_stream(resp.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
