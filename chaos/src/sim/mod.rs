//! The provider simulator: any number of named regions served at once, each
//! under its own path prefix (`/<region>/openai/deployments/…`), so a region's
//! base URL is a drop-in for an Azure OpenAI resource endpoint.

pub mod azure;
pub mod config;
pub mod extractive;
pub mod faults;

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
}

impl Simulator {
    pub fn new(config: Config) -> Arc<Self> {
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
        Arc::new(Self {
            regions,
            api_key: config.api_key,
        })
    }
}

/// All simulator routes.
pub fn routes(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route(
            "/{region}/openai/deployments/{deployment}/chat/completions",
            post(azure::chat_completions),
        )
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
