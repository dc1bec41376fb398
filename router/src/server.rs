//! Builds the router's HTTP service and runs it.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use control_plane::store::Store;
use control_plane::watch::ClusterWatch;

use crate::cell_client::CellClient;
use crate::config::Config;
use crate::limits::Limiter;
use crate::metrics::RouterMetrics;
use crate::placement::Placement;
use crate::proxy::{ProxyState, WorkerState, forward};
use crate::replication::Hints;
use crate::upstreams::Upstreams;
use common::workers::Workers;

/// A rate-limit lease that takes longer than this is given up on and the
/// router limits on its own for a while: Redis must not slow every request.
const RATE_LIMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);

/// Routes without authentication: health, readiness and metrics. Everything
/// else is a tenant route and requires an API key.
pub const UNAUTHENTICATED: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// One worker's service. Every tenant route goes through `forward`, which
/// authenticates, places and proxies; the body limit is enforced there so that
/// an over-long body is a 413 before any cell sees it.
pub fn app(state: WorkerState, registry: Arc<prometheus_client::registry::Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(common::metrics::route(registry))
        .route("/v1/{*rest}", any(forward))
        .with_state(state)
}

/// Ready when at least one cell takes traffic.
async fn readyz(State(state): State<WorkerState>) -> impl IntoResponse {
    let cells = state.shared.placement().cell_count();
    if cells > 0 {
        (StatusCode::OK, format!("ok: {cells} cells\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no cell is serving\n".to_owned(),
        )
    }
}

pub async fn run(config: Config, telemetry: &common::telemetry::Telemetry) -> anyhow::Result<()> {
    let store = Store::connect(config.etcd.clone()).await?;
    let (cluster, watch_task) = ClusterWatch::start(store.clone(), config.keys.clone())
        .await
        .context("cannot read the cluster state from etcd")?;
    let http = CellClient::new(config.connect_timeout);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = RouterMetrics::register(&mut registry);
    let (initial, retired) = Placement::build(&cluster.snapshot());
    let initial_revision = initial.revision;
    let redis = config
        .redis_url
        .as_deref()
        .map(crate::redis_conn::LazyRedis::open)
        .transpose()?;
    let hints = Hints::new(redis.clone(), std::time::Duration::from_millis(500));
    let limiter = Arc::new(Limiter::with_redis(redis, RATE_LIMIT_TIMEOUT));
    if config.redis_url.is_none() {
        tracing::warn!("no redis configured: tenant rate limits are enforced per router");
    }
    let state = Arc::new(ProxyState {
        config: config.clone(),
        cluster,
        placement: ArcSwap::from_pointee(initial),
        http,
        metrics,
        hints,
        limiter,
        upstreams: Upstreams::new(config.outliers, config.max_in_flight_per_cell),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        signing_keys: Default::default(),
    });
    let replayer = tokio::spawn(crate::proxy::replay_hints(state.clone()));
    // The router's presence: the placement revision it routes by, on a lease.
    let (presence, presence_value) = tokio::sync::watch::channel(control_plane::store::encode(
        &control_plane::model::RouterPresence {
            placement_revision: initial_revision,
            at_ms: control_plane::model::now_ms(),
        },
    ));
    let placer = tokio::spawn(crate::proxy::follow_placement(
        state.clone(),
        retired,
        presence,
    ));
    let registry = Arc::new(registry);
    telemetry.export_metrics(registry.clone());
    let apps = (0..config.workers)
        .map(|_| {
            let worker = WorkerState {
                shared: state.clone(),
                http: CellClient::new(config.connect_timeout),
            };
            app(worker, registry.clone())
        })
        .collect();
    let mut workers = Workers::start("router", apps, config.header_read_timeout)?;
    let listener = common::workers::listen(config.listen)?;
    let addr = listener.local_addr()?;
    // Unique among routers: replicas in containers share the address they
    // bind and, often, their pid, so the host name is part of it.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let router_id = format!("router-{host}-{addr}-{}", std::process::id());
    let mut presence_task = control_plane::registration::keep_alive(
        store.clone(),
        config.keys.router(&router_id),
        presence_value,
        control_plane::registration::LeaseSettings::default(),
    );
    tracing::info!(%addr, workers = config.workers, "router listening");
    common::process::announce_ready("router", addr);
    tokio::select! {
        e = workers.accept_from(&listener) => return Err(e.into()),
        () = common::process::shutdown_signal() => {}
        r = watch_task => anyhow::bail!("cluster watch stopped: {r:?}"),
        r = replayer => anyhow::bail!("hint replay stopped: {r:?}"),
        r = placer => anyhow::bail!("placement stopped: {r:?}"),
        r = &mut presence_task => anyhow::bail!("router presence stopped: {r:?}"),
    }
    // New connections are refused from here on; those open finish what they took.
    drop(listener);
    workers.drain().await;
    // Only now, with no write of this router in flight, may moves stop
    // waiting for it.
    presence_task.abort();
    let presence_key = config.keys.router(&router_id);
    if let Err(e) = store
        .retrying("deregister router", |mut c| {
            let key = presence_key.clone();
            async move { c.delete(key, None).await }
        })
        .await
    {
        tracing::warn!(error = %e, "cannot deregister the router; its lease will expire instead");
    }
    Ok(())
}
