//! The control-plane service: configuration and the HTTP server that hosts
//! the admin API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use common::config::{ConfigError, ConfigErrors, read_yaml};
use serde::Deserialize;

use crate::admin::{AdminState, routes};
use crate::model::Keys;
use crate::store::{EtcdSettings, RawEtcd, Store};

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
        errors.finish(Config {
            listen,
            etcd,
            keys,
            admin_token: Secret::new(token),
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
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::connect(config.etcd.clone()).await?;
    ensure_cell_auth_key(&store, &config.keys).await?;
    let registry = Arc::new(prometheus_client::registry::Registry::default());
    let leader_store = store.clone();
    let state = AdminState {
        store,
        keys: config.keys.clone(),
        token: config.admin_token.clone(),
        registry: registry.clone(),
    };
    let app = Router::new()
        .merge(routes(state))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { common::metrics::render(&registry) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let instance = format!("control-plane-{}-{}", addr, std::process::id());
    let leader = tokio::spawn(crate::leader::lead(
        leader_store,
        config.keys.clone(),
        instance,
        crate::leader::JudgeSettings::default(),
    ));
    tracing::info!(%addr, "control plane listening");
    common::process::announce_ready("control-plane", addr);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(common::process::shutdown_signal());
    tokio::select! {
        result = server => result?,
        r = leader => anyhow::bail!("leadership task stopped: {r:?}"),
    }
    Ok(())
}
