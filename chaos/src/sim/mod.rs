//! The provider simulator: any number of named regions served at once, each
//! under its own path prefix, so a region's base URL is a drop-in for an
//! Azure OpenAI resource endpoint (`/<region>/openai/deployments/…`), a
//! Vertex AI location endpoint (`/<region>/v1/projects/…:generateContent`)
//! or an OpenAI-compatible server (`/<region>/v1/chat/completions`). Every
//! region speaks all three; its name is only a name. `/oauth2/token` plays
//! Google's token endpoint for service-account keys.

pub mod azure;
pub mod config;
pub mod embeddings;
pub mod extractive;
pub mod faults;
pub mod google_oauth;
pub mod openai;
pub mod vertex;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

pub use config::{Config, RegionConfig};
pub use faults::FaultProfile;

/// One simulated region, its fault profile and its counters.
#[derive(Debug)]
pub struct Region {
    pub config: RegionConfig,
    pub faults: std::sync::RwLock<FaultProfile>,
    /// Requests answered successfully.
    pub requests: AtomicU64,
    /// Requests failed by injected faults.
    pub failed: AtomicU64,
    /// Requests being worked on (waiting out injected latency included).
    pub in_flight: AtomicU64,
}

impl Region {
    pub fn faults(&self) -> FaultProfile {
        self.faults.read().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Shared state of the simulator.
#[derive(Debug)]
pub struct Simulator {
    pub regions: HashMap<String, Region>,
    pub api_key: Option<String>,
    /// Service accounts whose signed token requests `/oauth2/token` accepts.
    pub service_accounts: Vec<google_oauth::KnownAccount>,
    /// Access tokens issued by `/oauth2/token`.
    pub issued_tokens: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The last requests to provider routes, newest last, for tests that
    /// check what a caller sent (`GET /sim/requests`).
    pub seen: std::sync::Mutex<std::collections::VecDeque<SeenRequest>>,
}

/// What the simulator keeps of one provider request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeenRequest {
    pub path: String,
    pub request_id: Option<String>,
    pub traceparent: Option<String>,
}

/// How many requests `GET /sim/requests` remembers.
const SEEN_REQUESTS: usize = 256;

impl Simulator {
    /// Whether `headers` carry the configured key (`api-key` or bearer) or
    /// a token this simulator issued.
    pub fn authorised(&self, headers: &axum::http::HeaderMap) -> bool {
        let presented =
            common::headers::text(headers, "api-key").or_else(|| common::headers::bearer(headers));
        let Some(presented) = presented.filter(|k| !k.is_empty()) else {
            return false;
        };
        let issued = self
            .issued_tokens
            .lock()
            .is_ok_and(|t| t.contains(presented));
        match &self.api_key {
            None => true,
            Some(expected) => expected == presented || issued,
        }
    }
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Applies the region's fault profile to one request: waits out the drawn
/// latency, never returns on a hang, and counts injected failures.
pub async fn face_faults(region: &Region) -> faults::Verdict {
    let (verdict, delay) = region.faults().draw();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match verdict {
        faults::Verdict::Hang => {
            // Counted as failed at once: the caller will give up on it.
            region
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::future::pending().await
        }
        faults::Verdict::Serve => {
            region
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        _ => {
            region
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    verdict
}

impl Simulator {
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let regions = config
            .regions
            .into_iter()
            .map(|r| {
                (
                    r.name.clone(),
                    Region {
                        faults: std::sync::RwLock::new(r.faults.clone()),
                        config: r,
                        requests: AtomicU64::new(0),
                        failed: AtomicU64::new(0),
                        in_flight: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        let service_accounts = config
            .service_account_key_files
            .iter()
            .map(|path| google_oauth::KnownAccount::from_key_file(path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Arc::new(Self {
            regions,
            api_key: config.api_key,
            service_accounts,
            issued_tokens: Default::default(),
            seen: Default::default(),
        }))
    }
}

/// All simulator routes.
pub fn routes(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route(
            "/{region}/openai/deployments/{deployment}/chat/completions",
            post(azure::chat_completions),
        )
        .route(
            "/{region}/v1/projects/{project}/locations/{location}/publishers/google/models/{model_action}",
            post(vertex::generate_content),
        )
        .route("/{region}/v1/chat/completions", post(openai::chat_completions))
        .route(
            "/{region}/openai/deployments/{deployment}/embeddings",
            post(embeddings::azure_embeddings),
        )
        .route("/{region}/v1/embeddings", post(embeddings::openai_embeddings))
        .route("/oauth2/token", post(google_oauth::token))
        .route("/sim/stats", get(azure::stats))
        .route("/sim/requests", get(seen_requests))
        .route(
            "/sim/regions/{region}/faults",
            put(set_faults).get(get_faults),
        )
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(sim.clone(), remember))
        .with_state(sim)
}

/// Keeps the identity and trace context of every provider request.
async fn remember(
    State(sim): State<Arc<Simulator>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/sim/") && path != "/healthz" {
        let header = |name: &str| common::headers::text(request.headers(), name).map(str::to_owned);
        let seen = SeenRequest {
            path: path.to_owned(),
            request_id: header("x-request-id"),
            traceparent: header("traceparent"),
        };
        if let Ok(mut log) = sim.seen.lock() {
            if log.len() == SEEN_REQUESTS {
                log.pop_front();
            }
            log.push_back(seen);
        }
    }
    next.run(request).await
}

/// `GET /sim/requests`: the last provider requests, oldest first.
async fn seen_requests(State(sim): State<Arc<Simulator>>) -> Response {
    let log: Vec<SeenRequest> = sim
        .seen
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    Json(log).into_response()
}

/// `PUT /sim/regions/{region}/faults`: replaces the region's fault profile.
async fn set_faults(
    State(sim): State<Arc<Simulator>>,
    Path(region): Path<String>,
    body: Result<Json<FaultProfile>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(r) = sim.regions.get(&region) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no region {region:?}")})),
        )
            .into_response();
    };
    let profile = match body {
        Ok(Json(p)) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    let problems = profile.problems("faults");
    if !problems.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": problems.join("; ")})),
        )
            .into_response();
    }
    tracing::info!(%region, ?profile, "fault profile set");
    if let Ok(mut f) = r.faults.write() {
        *f = profile.clone();
    }
    Json(profile).into_response()
}

async fn get_faults(State(sim): State<Arc<Simulator>>, Path(region): Path<String>) -> Response {
    match sim.regions.get(&region) {
        Some(r) => Json(r.faults()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no region {region:?}")})),
        )
            .into_response(),
    }
}

/// Words per streamed chunk.
const WORDS_PER_CHUNK: usize = 3;

/// `text` in pieces of a few words, keeping every character.
pub fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words
        .chunks(WORDS_PER_CHUNK)
        .map(|chunk| chunk.concat())
        .collect()
}

/// Server-sent events, one `data:` frame each, a moment apart. With
/// `cut_after` the connection breaks after that many frames, as a failing
/// upstream would.
pub fn sse_response(frames: Vec<String>, cut_after: Option<u32>) -> Response {
    use futures::StreamExt;
    let keep = cut_after.map_or(usize::MAX, |n| n as usize);
    let cut = frames.len() > keep;
    let sent = futures::stream::iter(frames.into_iter().take(keep)).then(|frame| async move {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        Ok::<_, std::io::Error>(axum::body::Bytes::from(format!("data: {frame}\n\n")))
    });
    // The break comes a moment after the last frame, so that what was sent
    // is on the wire first, as with a connection that dies mid-answer.
    let tail = futures::stream::iter(cut.then_some(())).then(|()| async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Err(std::io::Error::other("upstream cut"))
    });
    let mut response = Response::new(axum::body::Body::from_stream(sent.chain(tail)));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// OpenAI-format chunks (Azure OpenAI and OpenAI-compatible) of `content`.
pub fn openai_chunks(model: &str, content: &str, usage: Option<serde_json::Value>) -> Vec<String> {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
        .to_string()
    };
    let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    frames.extend(
        pieces(content)
            .into_iter()
            .map(|p| chunk(json!({"content": p}), None)),
    );
    frames.push(chunk(json!({}), Some("stop")));
    if let Some(usage) = usage {
        frames.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [], "usage": usage})
            .to_string(),
        );
    }
    frames.push("[DONE]".to_owned());
    frames
}
