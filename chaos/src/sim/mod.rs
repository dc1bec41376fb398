//! The provider simulator: any number of named regions served at once, each
//! under its own path prefix, so a region's base URL is a drop-in for an
//! Azure OpenAI resource endpoint (`/<region>/openai/deployments/…`), a
//! Vertex AI location endpoint (`/<region>/v1/projects/…:generateContent`)
//! or an OpenAI-compatible server (`/<region>/v1/chat/completions`). Every
//! region speaks all three; its name is only a name. `/oauth2/token` plays
//! Google's token endpoint for service-account keys.

pub mod azure;
pub mod config;
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
}

impl Simulator {
    /// Whether `headers` carry the configured key (`api-key` or bearer) or
    /// a token this simulator issued.
    pub fn authorised(&self, headers: &axum::http::HeaderMap) -> bool {
        let presented = headers
            .get("api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
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
        faults::Verdict::Hang => std::future::pending().await,
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
        .route("/oauth2/token", post(google_oauth::token))
        .route("/sim/stats", get(azure::stats))
        .route(
            "/sim/regions/{region}/faults",
            put(set_faults).get(get_faults),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sim)
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
