//! The control-plane service: configuration and the HTTP server that hosts
//! the admin API and the operator dashboard.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use common::config::{ConfigError, ConfigErrors, read_yaml};
use serde::Deserialize;

use crate::admin::{AdminState, routes};
use crate::model::Keys;
use crate::placement::plan::Throttle;
use crate::placement::ring::PlacementSettings;
use crate::placement::{MoveContext, MoveMetrics, MoveSettings};
use crate::store::{EtcdSettings, RawEtcd, Store};
use crate::watch::ClusterWatch;

pub use common::config::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    etcd: RawEtcd,
    /// Name of the environment variable holding the operator token; the token
    /// itself never sits in a config file.
    #[serde(default = "default_token_env")]
    admin_token_env: String,
    /// The Redis routers keep hints in and cells queue ingestion in: a move
    /// copies only from a member that owes the tenant nothing there.
    #[serde(default)]
    redis: Option<RawRedis>,
    #[serde(default)]
    placement: RawPlacement,
    /// Where spans are exported (OTLP); the `OTEL_*` variables override it.
    #[serde(default)]
    telemetry: common::telemetry::RawTelemetry,
    #[serde(default)]
    dashboard: RawDashboard,
}

/// The operator dashboard at `/dashboard`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    /// How often every live cell's metrics are read.
    #[serde(default = "default_scrape_interval", with = "humantime_serde")]
    scrape_interval: std::time::Duration,
}

impl Default for RawDashboard {
    fn default() -> Self {
        Self {
            scrape_interval: default_scrape_interval(),
        }
    }
}

fn default_scrape_interval() -> std::time::Duration {
    crate::dashboard::DEFAULT_SCRAPE_INTERVAL
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
}

/// How the leader places and moves tenants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    #[serde(default = "default_replicas")]
    replicas: usize,
    #[serde(default = "default_vnodes")]
    vnodes: u32,
    /// A cell may be home to at most ⌈(1 + load_epsilon) · mean⌉ tenants.
    #[serde(default = "default_epsilon")]
    load_epsilon: f64,
    #[serde(default = "default_max_moves_per_cell")]
    max_moves_per_cell: usize,
    #[serde(default = "default_max_moves")]
    max_moves: usize,
    #[serde(default = "default_copy_rate")]
    copy_points_per_second: u64,
    #[serde(default = "default_cleanup_grace", with = "humantime_serde")]
    cleanup_grace: std::time::Duration,
}

impl Default for RawPlacement {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            vnodes: default_vnodes(),
            load_epsilon: default_epsilon(),
            max_moves_per_cell: default_max_moves_per_cell(),
            max_moves: default_max_moves(),
            copy_points_per_second: default_copy_rate(),
            cleanup_grace: default_cleanup_grace(),
        }
    }
}

fn default_replicas() -> usize {
    crate::placement::ring::DEFAULT_REPLICAS
}

fn default_vnodes() -> u32 {
    crate::placement::ring::DEFAULT_VNODES
}

fn default_epsilon() -> f64 {
    crate::placement::ring::DEFAULT_LOAD_EPSILON
}

fn default_max_moves_per_cell() -> usize {
    crate::placement::plan::Throttle::default().max_moves_per_cell
}

fn default_max_moves() -> usize {
    crate::placement::plan::Throttle::default().max_moves
}

fn default_copy_rate() -> u64 {
    crate::placement::DEFAULT_COPY_POINTS_PER_SECOND
}

fn default_cleanup_grace() -> std::time::Duration {
    crate::placement::DEFAULT_CLEANUP_GRACE
}

fn default_token_env() -> String {
    "CELLNET_ADMIN_TOKEN".to_owned()
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub etcd: EtcdSettings,
    pub keys: Keys,
    pub admin_token: Secret,
    pub redis_url: Option<String>,
    pub placement: MoveSettings,
    pub telemetry: common::telemetry::TelemetrySettings,
    /// How often the dashboard reads the cells' metrics.
    pub dashboard_scrape_interval: std::time::Duration,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = read_yaml(path)?;
        let mut errors = ConfigErrors::new();
        let listen = raw.listen.parse().unwrap_or_else(|_| {
            errors.push(
                "listen",
                format!(
                    "must be an address like 127.0.0.1:8090, got {:?}",
                    raw.listen
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let (etcd, keys) = raw.etcd.validate("etcd", &mut errors);
        let token = std::env::var(&raw.admin_token_env).unwrap_or_default();
        errors.check(
            token.len() >= 16,
            "admin_token_env",
            format!(
                "names {}, which must hold an operator token of at least 16 characters",
                raw.admin_token_env
            ),
        );
        let p = &raw.placement;
        errors.check(
            (1..=16).contains(&p.replicas),
            "placement.replicas",
            "must be between 1 and 16",
        );
        errors.check(
            (1..=4096).contains(&p.vnodes),
            "placement.vnodes",
            "must be between 1 and 4096",
        );
        errors.check(
            p.load_epsilon > 0.0 && p.load_epsilon <= 10.0,
            "placement.load_epsilon",
            "must be in (0, 10]",
        );
        errors.check(
            p.max_moves_per_cell >= 1,
            "placement.max_moves_per_cell",
            "must be at least 1",
        );
        errors.check(
            p.max_moves >= 1,
            "placement.max_moves",
            "must be at least 1",
        );
        errors.check(
            p.copy_points_per_second >= 1,
            "placement.copy_points_per_second",
            "must be at least 1",
        );
        if let Some(r) = &raw.redis {
            errors.check(
                r.url.starts_with("redis://") || r.url.starts_with("rediss://"),
                "redis.url",
                "must be a redis:// URL",
            );
        }
        let telemetry = raw.telemetry.validate("telemetry", &mut errors);
        errors.check(
            raw.dashboard.scrape_interval >= std::time::Duration::from_millis(100),
            "dashboard.scrape_interval",
            "must be at least 100ms",
        );
        errors.finish(Config {
            telemetry,
            dashboard_scrape_interval: raw.dashboard.scrape_interval,
            listen,
            etcd,
            keys,
            admin_token: Secret::new(token),
            redis_url: raw.redis.map(|r| r.url),
            placement: MoveSettings {
                ring: PlacementSettings {
                    vnodes: p.vnodes,
                    replicas: p.replicas,
                    epsilon: p.load_epsilon,
                },
                throttle: Throttle {
                    max_moves_per_cell: p.max_moves_per_cell,
                    max_moves: p.max_moves,
                },
                copy_points_per_second: p.copy_points_per_second,
                cleanup_grace: p.cleanup_grace,
            },
        })
    }
}

/// Makes the router↔cell signing key if there is none yet. Every control
/// plane replica may try; the create-if-absent transaction keeps the first.
pub async fn ensure_cell_auth_key(
    store: &Store,
    keys: &Keys,
) -> Result<(), crate::store::StoreError> {
    let secret: [u8; 32] = rand::random();
    let created = store
        .create_if_absent(
            "create cell auth key",
            &keys.cell_auth_key(),
            hex::encode(secret).as_bytes(),
        )
        .await?;
    if created {
        tracing::info!("created the router-cell signing key");
    }
    Ok(())
}

/// Replaces the router↔cell signing key with a new one and keeps the one it
/// replaces as the previous key, which cells still accept: routers that have
/// not seen the rotation yet go on being served. A rotation makes the key
/// from two rotations ago worthless. Returns the new key's fingerprint.
pub async fn rotate_cell_auth_key(
    store: &Store,
    keys: &Keys,
) -> Result<String, crate::store::StoreError> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let current_key = keys.cell_auth_key();
    let previous_key = keys.cell_auth_previous_key();
    // The key this call wrote, if a transaction may have landed unseen (its
    // answer lost and the retry refused): finding it current means done.
    let mut written: Option<[u8; 32]> = None;
    loop {
        let current = store
            .retrying("read cell auth key", |mut c| {
                let key = current_key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = current.kvs().first() else {
            ensure_cell_auth_key(store, keys).await?;
            continue;
        };
        let (value, revision) = (kv.value().to_vec(), kv.mod_revision());
        if let Some(secret) = written
            && value == hex::encode(secret).as_bytes()
        {
            return Ok(crate::model::key_fingerprint(&secret));
        }
        let secret: [u8; 32] = rand::random();
        written = Some(secret);
        let fresh = hex::encode(secret);
        // Only if nobody rotated in between: two rotations racing must not
        // both keep the same previous key.
        let rotated = store
            .retrying("rotate cell auth key", |mut c| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        current_key.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([
                        TxnOp::put(previous_key.as_str(), value.clone(), None),
                        TxnOp::put(current_key.as_str(), fresh.as_bytes(), None),
                    ]);
                async move { c.txn(txn).await }
            })
            .await?;
        if rotated.succeeded() {
            let fingerprint = crate::model::key_fingerprint(&secret);
            tracing::info!(%fingerprint, "rotated the router-cell signing key");
            return Ok(fingerprint);
        }
    }
}

/// Runs the control-plane service until a shutdown signal.
pub async fn run(config: Config, telemetry: &common::telemetry::Telemetry) -> anyhow::Result<()> {
    let store = Store::connect(config.etcd.clone()).await?;
    ensure_cell_auth_key(&store, &config.keys).await?;
    let (cluster, watch_task) = ClusterWatch::start(store.clone(), config.keys.clone()).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    common::telemetry::register_metrics(&mut registry);
    let metrics = MoveMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    telemetry.export_metrics(registry.clone());
    let redis = match &config.redis_url {
        Some(url) => {
            Some(redis::aio::ConnectionManager::new(redis::Client::open(url.as_str())?).await?)
        }
        None => {
            tracing::warn!(
                "no redis configured: moves cannot see the hints and ingestion jobs a source still owes"
            );
            None
        }
    };
    let moves = MoveContext {
        store: store.clone(),
        keys: config.keys.clone(),
        cluster: cluster.clone(),
        cells: Default::default(),
        redis,
        settings: config.placement,
        metrics,
    };
    let leader_store = store.clone();
    let (dashboard, scraper) = crate::dashboard::DashboardState::start(
        config.admin_token.clone(),
        cluster.clone(),
        config.dashboard_scrape_interval,
    );
    let state = AdminState {
        store,
        keys: config.keys.clone(),
        token: config.admin_token.clone(),
        registry: registry.clone(),
        cluster,
        placement: config.placement,
    };
    let app = Router::new()
        .merge(routes(state))
        .merge(crate::dashboard::routes(dashboard))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .merge(common::metrics::route(registry));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let instance = format!("control-plane-{}-{}", addr, std::process::id());
    let leader = tokio::spawn(crate::leader::lead(
        leader_store,
        config.keys.clone(),
        instance,
        crate::leader::JudgeSettings::default(),
        moves,
    ));
    tracing::info!(%addr, "control plane listening");
    common::process::announce_ready("control-plane", addr);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(common::process::shutdown_signal());
    tokio::select! {
        result = server => result?,
        r = leader => anyhow::bail!("leadership task stopped: {r:?}"),
        r = watch_task => anyhow::bail!("cluster watch stopped: {r:?}"),
        r = scraper => anyhow::bail!("dashboard metrics reader stopped: {r:?}"),
    }
    Ok(())
}
