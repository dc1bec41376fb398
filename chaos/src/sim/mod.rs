//! The provider simulator: any number of named regions served at once, each
//! under its own path prefix (`/<region>/openai/deployments/…`), so a region's
//! base URL is a drop-in for an Azure OpenAI resource endpoint.

pub mod azure;
pub mod config;
pub mod extractive;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::{get, post};

pub use config::{Config, RegionConfig};

/// One simulated region and its counters.
#[derive(Debug)]
pub struct Region {
    pub config: RegionConfig,
    pub requests: AtomicU64,
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
                        config: r,
                        requests: AtomicU64::new(0),
                    },
                )
            })
            .collect();
        Arc::new(Self {
            regions,
            api_key: config.api_key,
        })
    }

    /// Requests served by `region` so far.
    pub fn requests(&self, region: &str) -> u64 {
        self.regions
            .get(region)
            .map(|r| r.requests.load(Ordering::Relaxed))
            .unwrap_or(0)
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
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sim)
}
