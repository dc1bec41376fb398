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
use control_plane::model::TenantLimits;
use control_plane::watch::ClusterWatch;
use tracing::{Instrument, info_span};

use http_body_util::{BodyExt, Full};

use crate::auth::authenticate;
use crate::cell_client::{CellBody, CellClient, CellError};
use crate::config::Config;
use crate::error::RouterError;
use crate::limits::{Limiter, Refusal, USAGE_HEADER};
use crate::metrics::{CellLabels, RouterMetrics, StatusLabels};
use crate::placement::{Placement, Target};
use crate::replication::{Hint, Hints, ReplayLock};
use crate::upstreams::{InFlight, Upstreams};

/// How often pending hints are looked at, besides every change of the cluster view.
const REPLAY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct ProxyState {
    pub config: Config,
    pub cluster: ClusterWatch,
    pub placement: ArcSwap<Placement>,
    /// The control runtime's client to the cells, for hint replay.
    pub http: CellClient,
    pub metrics: RouterMetrics,
    pub hints: Hints,
    pub limiter: Arc<Limiter>,
    pub upstreams: Upstreams,
    /// Permits for tenant requests in flight in this router.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Which of the control plane's signing keys to sign with.
    pub signing_keys: crate::signing_key::SigningKeys,
}

impl ProxyState {
    /// The key to sign requests to cells with, once the control plane has
    /// issued one.
    fn signing_key(&self, view: &control_plane::watch::ClusterView) -> Option<Arc<[u8]>> {
        let current = view.cell_auth_key.as_ref()?;
        Some(self.signing_keys.choose(
            current,
            view.cell_auth_previous_key.as_ref(),
            std::time::Instant::now,
        ))
    }

    /// The current placement; one atomic load. It is rebuilt off the request
    /// path by `follow_placement`, once per change of the cluster view.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.load_full()
    }
}

/// What a worker thread's handlers see: the router's shared state and the
/// worker's own client to the cells, whose connections live on that worker.
#[derive(Clone)]
pub struct WorkerState {
    pub shared: Arc<ProxyState>,
    pub http: CellClient,
}

/// Rebuilds the placement whenever what it is built from changes, until
/// the process stops, and reports each revision in `presence` once every
/// write begun under an older placement has finished (see `placement`).
/// Requests never build it.
pub async fn follow_placement(
    state: Arc<ProxyState>,
    mut retired: tokio::sync::oneshot::Receiver<()>,
    presence: tokio::sync::watch::Sender<Vec<u8>>,
) {
    // Reports go out in order, each after the placements before it retired,
    // without holding up the next rebuild.
    let (acks, mut queue) =
        tokio::sync::mpsc::unbounded_channel::<(i64, tokio::sync::oneshot::Receiver<()>)>();
    let reporter = tokio::spawn(async move {
        while let Some((revision, older)) = queue.recv().await {
            let _ = older.await;
            presence.send_replace(control_plane::store::encode(
                &control_plane::model::RouterPresence {
                    placement_revision: revision,
                    at_ms: control_plane::model::now_ms(),
                },
            ));
        }
    });
    let mut revisions = state.cluster.revisions();
    loop {
        let view = state.cluster.snapshot();
        if state.placement.load().revision != view.placement_revision {
            let (placement, next_retired) = Placement::build(&view);
            let revision = placement.revision;
            state.placement.store(Arc::new(placement));
            let older = std::mem::replace(&mut retired, next_retired);
            if acks.send((revision, older)).is_err() {
                return;
            }
        }
        if revisions.changed().await.is_err() {
            reporter.abort();
            return;
        }
    }
}

/// Request headers passed on to cells; everything else (cookies, the
/// tenant's API key) stays at the router.
/// The trace context is among them so that a cell joins the client's trace
/// even when the router exports no spans; when it does, the router's own
/// span replaces it.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "accept-encoding",
    common::telemetry::propagation::TRACEPARENT,
    common::telemetry::propagation::TRACESTATE,
];
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
    ) || (*method == Method::POST && READ_ONLY_POSTS.contains(&path))
}

/// POST routes that only read: answering and embedding change no data.
const READ_ONLY_POSTS: &[&str] = &["/v1/query", "/v1/chat/completions", "/v1/embeddings"];

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(common::headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        // From the thread's generator, seeded once: `new_v4` asks the kernel
        // for every id, a system call per request.
        .unwrap_or_else(|| {
            uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string()
        })
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
pub async fn forward(State(worker): State<WorkerState>, request: Request) -> Response {
    let state = &worker.shared;
    let id = request_id(request.headers());
    let span = common::telemetry::server_span(
        request.method(),
        route_template(request.uri().path()),
        request.headers(),
    );
    span.record("request_id", id.as_str());
    let mut response = match state.in_flight.clone().try_acquire_owned() {
        Ok(_permit) => match route(state, &worker.http, request, &id)
            .instrument(span.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        Err(_) => RouterError::RouterBusy {
            limit: state.config.max_in_flight,
        }
        .into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(common::headers::REQUEST_ID, v);
    }
    common::telemetry::record_status(&span, response.status());
    state
        .metrics
        .responses
        .get_or_create(&StatusLabels {
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Tells the client its daily token quota and what is left of it, in the
/// headers OpenAI uses for its token limits (here per UTC day).
fn quota_headers(response: &mut Response, limits: &TenantLimits, used_today: u64) {
    if let Some(quota) = limits.tokens_per_day {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit-tokens", HeaderValue::from(quota));
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from(quota.saturating_sub(used_today)),
        );
    }
}

async fn route(
    state: &ProxyState,
    http: &CellClient,
    request: Request,
    request_id: &str,
) -> Result<Response, RouterError> {
    let view = state.cluster.snapshot();
    let tenant = authenticate(&view, request.headers())?;
    tracing::Span::current().record("cellnet.tenant", tenant.id.as_str());
    let limits = tenant.effective_limits();
    let used_today = state
        .limiter
        .admit(&tenant.id, &limits)
        .await
        .map_err(|refusal| {
            state.metrics.refused(&refusal);
            match refusal {
                Refusal::RateLimited { retry_after } => RouterError::RateLimited { retry_after },
                Refusal::QuotaExceeded { retry_after } => {
                    RouterError::QuotaExceeded { retry_after }
                }
            }
        })?;
    let placement = state.placement();
    if !placement.is_placed(&tenant.id) {
        return Err(RouterError::NotPlaced);
    }
    let targets = state
        .upstreams
        .order(placement.cells_for(&tenant.id), tokio::time::Instant::now());
    drop(placement);
    let write = is_replicated_write(request.method(), request.uri().path());
    if targets.is_empty() && !write {
        return Err(RouterError::NoCell);
    }
    let Some(signing_key) = state.signing_key(&view) else {
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
    let forwarded = forwarded_headers(&parts.headers);
    // What each cell is sent, signed afresh per attempt.
    let hint = Hint {
        tenant: tenant.id.clone(),
        method: parts.method.as_str().to_owned(),
        path_and_query: path_and_query.to_owned(),
        request_id: request_id.to_owned(),
        body,
    };
    if write {
        // Held until the write is done: the router reports a newer
        // placement only once no write routed by an older one is in flight.
        let placement = state.placement();
        let members = placement.write_targets(&tenant.id);
        let mut response =
            replicate(state, http, &signing_key, &members, &hint, &forwarded).await?;
        drop(placement);
        quota_headers(&mut response, &limits, used_today);
        return Ok(response);
    }
    let idempotent = is_idempotent(&parts.method, parts.uri.path());
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let mut failures: Vec<String> = Vec::new();
    let mut busy = 0;
    let mut job_not_found = None;

    for (attempt, target) in targets.iter().enumerate() {
        if attempt > 0 {
            state.metrics.failovers.inc();
        }
        let Some(slot) = state.upstreams.try_acquire(&target.cell) else {
            state
                .metrics
                .upstream
                .get_or_create(&CellLabels {
                    cell: target.cell.to_string(),
                    outcome: "at_limit",
                })
                .inc();
            busy += 1;
            continue;
        };
        let call = cell_span(&target.cell, attempt);
        let mut outgoing = signed_request(&signing_key, &hint, &forwarded);
        common::telemetry::inject(&call, outgoing.headers_mut());
        let started = Instant::now();
        let result = tokio::time::timeout_at(deadline, http.send(&target.endpoint, outgoing))
            .instrument(call.clone())
            .await;
        record_cell_outcome(&call, &result);
        let outcome = |o: &'static str| CellLabels {
            cell: target.cell.to_string(),
            outcome: o,
        };
        let failed = |state: &ProxyState| {
            if state
                .upstreams
                .record_failure(&target.cell, tokio::time::Instant::now())
            {
                state.metrics.ejections.inc();
            }
        };
        match result {
            Err(_) => {
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("timeout"))
                    .inc();
                failed(state);
                return Err(RouterError::DeadlineExceeded);
            }
            Ok(Err(e)) if e.is_connect() => {
                failed(state);
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
                failed(state);
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
                failed(state);
                tracing::warn!(cell = %target.cell, status = %resp.status(), "cell failed, trying the next one");
                failures.push(format!("{}: HTTP {}", target.cell, resp.status()));
            }
            Ok(Ok(resp))
                if resp.status() == StatusCode::NOT_FOUND
                    && is_job_read(&parts.method, parts.uri.path())
                    && attempt + 1 < targets.len() =>
            {
                // A job is known to the replicas its write reached; one that
                // was down learns of it only when its hint is replayed.
                state.upstreams.record_success(&target.cell);
                state
                    .metrics
                    .upstream
                    .get_or_create(&outcome("job_not_here"))
                    .inc();
                // The answer if no other replica can be asked.
                job_not_found.get_or_insert((resp, slot));
            }
            Ok(Ok(resp)) => {
                state
                    .metrics
                    .upstream_seconds
                    .observe(started.elapsed().as_secs_f64());
                state.metrics.upstream.get_or_create(&outcome("ok")).inc();
                if resp.status().is_server_error() {
                    failed(state);
                } else {
                    state.upstreams.record_success(&target.cell);
                }
                tracing::Span::current().record("cellnet.cell", &*target.cell);
                let streamed = resp
                    .headers()
                    .get(axum::http::header::CONTENT_TYPE)
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                let usage_header = resp
                    .headers()
                    .get(USAGE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                // A stream generated live reports its tokens at its end.
                let on_usage: Option<Box<dyn FnOnce(u64) + Send>> =
                    if streamed && usage_header.is_none() {
                        let limiter = state.limiter.clone();
                        let tenant = tenant.id.clone();
                        Some(Box::new(move |tokens| {
                            tokio::spawn(async move {
                                limiter.record_usage(&tenant, &limits, tokens).await;
                            });
                        }))
                    } else {
                        None
                    };
                if let Some(tokens) = usage_header.filter(|t| *t > 0) {
                    // Counted off the response path; the next lease reads the total.
                    let limiter = state.limiter.clone();
                    let tenant = tenant.id.clone();
                    tokio::spawn(async move {
                        limiter.record_usage(&tenant, &limits, tokens).await;
                    });
                }
                let mut response = relay(resp, slot, on_usage);
                quota_headers(&mut response, &limits, used_today);
                return Ok(response);
            }
        }
    }
    if let Some((resp, slot)) = job_not_found {
        let mut response = relay(resp, slot, None);
        quota_headers(&mut response, &limits, used_today);
        return Ok(response);
    }
    if busy == targets.len() {
        return Err(RouterError::Overloaded);
    }
    Err(RouterError::AllCellsFailed(failures.join("; ")))
}

/// The route a path belongs to, for span names: ids left out, so that names
/// stay few.
fn route_template(path: &str) -> &'static str {
    const EXACT: &[&str] = &[
        "/v1/query",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/documents",
        "/v1/points",
        "/v1/points/count",
        "/v1/cache",
    ];
    if let Some(known) = EXACT.iter().find(|p| **p == path) {
        return known;
    }
    if path.starts_with("/v1/documents/") {
        "/v1/documents/{id}"
    } else if path.starts_with("/v1/jobs/") {
        "/v1/jobs/{id}"
    } else {
        "other"
    }
}

/// The span of one request to one cell; its context goes to the cell in
/// `traceparent`, so the cell's spans are its children.
fn cell_span(cell: &str, attempt: usize) -> tracing::Span {
    info_span!(
        "cell_call",
        otel.name = %format_args!("cell {cell}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        cellnet.cell = cell,
        cellnet.attempt = attempt,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

fn record_cell_outcome<B, E: std::fmt::Display>(
    span: &tracing::Span,
    result: &Result<Result<axum::http::Response<B>, E>, tokio::time::error::Elapsed>,
) {
    match result {
        Ok(Ok(resp)) => {
            span.record("http.response.status_code", resp.status().as_u16());
            if resp.status().is_server_error() {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", resp.status().as_str());
            }
        }
        Ok(Err(e)) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", tracing::field::display(e));
        }
        Err(_) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", "timeout");
        }
    }
}

/// A read of an asynchronous ingestion job's status.
fn is_job_read(method: &Method, path: &str) -> bool {
    *method == Method::GET && path.starts_with("/v1/jobs/")
}

/// Writes that every replica must receive.
fn is_replicated_write(method: &Method, path: &str) -> bool {
    (*method == Method::POST && (path == "/v1/documents" || path == "/v1/points"))
        || (*method == Method::DELETE
            && (path == "/v1/documents" || path.starts_with("/v1/documents/")))
}

fn forwarded_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    FORWARDED
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .map(|v| (HeaderName::from_static(name), v.clone()))
        })
        .collect()
}

/// A request for a cell, carrying the tenant context and the router's
/// signature over it (made now, so a replayed hint is signed afresh).
pub(crate) fn signed_request(
    key: &[u8],
    hint: &Hint,
    headers: &[(HeaderName, HeaderValue)],
) -> axum::http::Request<Full<Bytes>> {
    let timestamp = common::signing::now_secs();
    let signature = common::signing::sign(
        key,
        &common::signing::SignedParts {
            method: &hint.method,
            path_and_query: &hint.path_and_query,
            tenant: &hint.tenant,
            request_id: &hint.request_id,
            timestamp,
            body: &hint.body,
        },
    );
    let method = Method::from_bytes(hint.method.as_bytes()).unwrap_or(Method::POST);
    let mut request = axum::http::Request::new(Full::new(hint.body.clone()));
    *request.method_mut() = method;
    *request.uri_mut() = hint
        .path_and_query
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/"));
    let signed = request.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            signed.insert(name, v);
        }
    };
    set(common::headers::REQUEST_ID, &hint.request_id);
    set(common::headers::TENANT, &hint.tenant);
    set(common::signing::TIMESTAMP_HEADER, &timestamp.to_string());
    set(common::signing::SIGNATURE_HEADER, &signature);
    for (name, value) in headers {
        signed.insert(name.clone(), value.clone());
    }
    request
}

/// Sends a write to every live member of the replica set at once; members
/// that are down or fail get a durable hint. Acknowledged once every live
/// member has it or holds a hint for it.
async fn replicate(
    state: &ProxyState,
    http: &CellClient,
    key: &[u8],
    members: &[Target],
    hint: &Hint,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Response, RouterError> {
    let live: Vec<&Target> = members.iter().filter(|t| t.alive).collect();
    if live.is_empty() {
        return Err(RouterError::NoCell);
    }
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let sends = live.iter().map(|t| async move {
        let call = cell_span(&t.cell, 0);
        let mut request = signed_request(key, hint, headers);
        common::telemetry::inject(&call, request.headers_mut());
        let sent = tokio::time::timeout_at(deadline, http.send(&t.endpoint, request))
            .instrument(call.clone())
            .await;
        record_cell_outcome(&call, &sent);
        match sent {
            Ok(Ok(resp)) => {
                let (parts, body) = resp.into_parts();
                match body.collect().await {
                    Ok(b) => Ok((parts.status, parts.headers, b.to_bytes())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    });
    let results = futures::future::join_all(sends).await;
    let mut hinted: Vec<&Target> = members.iter().filter(|t| !t.alive).collect();
    let mut written: Vec<&Target> = Vec::new();
    let mut answer = None;
    let mut absent = None;
    let mut absent_on = 0;
    let deletes_one = hint.method == "DELETE" && hint.path_and_query.starts_with("/v1/documents/");
    for (target, result) in live.iter().zip(results) {
        match result {
            Ok((status, h, b)) if status.is_success() => {
                written.push(target);
                answer.get_or_insert((status, h, b));
            }
            // A member may lack the document while others hold it: a move's
            // destination the copy has not reached yet, or a replica whose
            // hinted write is not replayed yet. The delete is hinted all the
            // same, so that it applies after any such write.
            Ok((status, h, b)) if status == StatusCode::NOT_FOUND && deletes_one => {
                hinted.push(target);
                absent_on += 1;
                absent.get_or_insert((status, h, b));
            }
            // The request itself is wrong: every member would say so, nothing was written.
            Ok((status, h, b)) if status.is_client_error() => return Ok(buffered(status, &h, b)),
            Ok((status, _, _)) => {
                tracing::warn!(cell = %target.cell, %status, "replica failed the write, leaving a hint");
                hinted.push(target);
            }
            Err(e) => {
                tracing::warn!(cell = %target.cell, error = %e, "replica unreachable, leaving a hint");
                hinted.push(target);
            }
        }
    }
    let Some((status, h, b)) = answer else {
        // Every member says it has no such document: nothing to delete. (With
        // one that failed or is down, which may hold it, the client retries.)
        if let Some((status, h, b)) = absent.filter(|_| absent_on == members.len()) {
            return Ok(buffered(status, &h, b));
        }
        return Err(RouterError::AllCellsFailed(
            "no replica accepted the write".into(),
        ));
    };
    for target in &hinted {
        if let Err(e) = state.hints.record(&target.cell, hint).await {
            tracing::error!(cell = %target.cell, error = %e, "cannot record a hint");
            return Err(RouterError::HintUnavailable);
        }
        state.metrics.hints_recorded.inc();
    }
    let mut response = buffered(status, &h, b);
    let list = |ts: &[&Target]| ts.iter().map(|t| &*t.cell).collect::<Vec<_>>().join(",");
    if let Ok(v) = HeaderValue::from_str(&list(&written)) {
        response.headers_mut().insert(REPLICAS_HEADER, v);
    }
    if !hinted.is_empty()
        && let Ok(v) = HeaderValue::from_str(&list(&hinted))
    {
        response.headers_mut().insert(HINTED_HEADER, v);
    }
    Ok(response)
}

/// Cells that have a write, and cells that hold a hint for it.
pub const REPLICAS_HEADER: &str = "x-cellnet-replicas";
pub const HINTED_HEADER: &str = "x-cellnet-hinted";

fn buffered(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || name == axum::http::header::CONTENT_LENGTH {
            continue;
        }
        response.headers_mut().append(name, value.clone());
    }
    response
}

/// Replays pending hints to cells that are alive, oldest first, until the
/// process stops. Looks again at every change of the cluster view and at
/// least every second.
pub async fn replay_hints(state: Arc<ProxyState>) {
    let mut revisions = state.cluster.revisions();
    loop {
        let view = state.cluster.snapshot();
        if let Some(key) = state.signing_key(&view) {
            for target in state.placement().live_targets() {
                replay_to(&state, &key, target).await;
            }
        }
        let _ = tokio::time::timeout(REPLAY_EVERY, revisions.changed()).await;
    }
}

/// Replays `target`'s hints if no other router is doing so.
async fn replay_to(state: &ProxyState, key: &[u8], target: &Target) {
    match state.hints.pending(&target.cell).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    let Ok(Some(lock)) = state.hints.lock_replay(&target.cell).await else {
        return;
    };
    replay_under(state, key, target, &lock).await;
    if let Err(e) = state.hints.unlock_replay(lock).await {
        tracing::warn!(cell = %target.cell, error = %e, "cannot release the replay lock; it lapses by itself");
    }
}

async fn replay_under(state: &ProxyState, key: &[u8], target: &Target, lock: &ReplayLock) {
    let Ok(pending) = state.hints.oldest(&target.cell).await else {
        return;
    };
    for (id, hint) in pending {
        if !lock.has_time() {
            return;
        }
        let request = signed_request(
            key,
            &hint,
            &[(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            )],
        );
        let send = async {
            let resp = state.http.send(&target.endpoint, request).await?;
            let status = resp.status();
            // Read to the end, so that the connection can be used again.
            resp.into_body().collect().await?;
            Ok::<_, CellError>(status)
        };
        // Bounded, so that the round ends while this router still holds the lock.
        let sent = tokio::time::timeout(lock.time_left(), send).await;
        match sent {
            Ok(Ok(status)) if status.is_success() || status.is_client_error() => {
                if !status.is_success() {
                    tracing::warn!(cell = %target.cell, %status, "hint refused, dropping it");
                }
                if state.hints.delivered(&target.cell, &id).await.is_err() {
                    return;
                }
                state.metrics.hints_replayed.inc();
                tracing::info!(cell = %target.cell, tenant = %hint.tenant, "hint replayed");
            }
            // Still failing: keep the order, try again next round.
            _ => return,
        }
    }
}

/// Streams a cell's response back to the client, holding the cell's
/// in-flight slot until the last byte is through.
fn relay(
    resp: axum::http::Response<CellBody>,
    slot: InFlight,
    on_usage: Option<Box<dyn FnOnce(u64) + Send>>,
) -> Response {
    let (mut parts, body) = resp.into_parts();
    // The cell's headers are passed on as they are, less the hop-by-hop ones.
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    let mut scanner = on_usage.map(|f| (crate::limits::StreamUsage::default(), Some(f)));
    let body = body.map_frame(move |frame| {
        let _held = &slot;
        if let (Some(bytes), Some((usage, callback))) = (frame.data_ref(), scanner.as_mut())
            && let Some(tokens) = usage.feed(bytes)
            && let Some(f) = callback.take()
        {
            f(tokens);
        }
        frame
    });
    Response::from_parts(parts, Body::new(body))
}
