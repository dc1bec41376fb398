//! A cell's presence in etcd: its spec, and a liveness key bound to a lease of
//! about three seconds renewed about every second. When the process dies the
//! lease expires and every watcher sees the liveness key go.

use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use tokio::task::JoinHandle;

use crate::model::{CellAlive, CellSpec, Keys};
use crate::store::{Store, StoreError, decode, encode};

/// Lease settings; the defaults are the design's (TTL ~3 s, keep-alive ~1 s).
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    pub ttl: Duration,
    pub keep_alive_every: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3),
            keep_alive_every: Duration::from_secs(1),
        }
    }
}

/// Writes the cell's spec, keeping an operator's desired state if one is set.
pub async fn publish_spec(
    store: &Store,
    keys: &Keys,
    cell: &str,
    mut spec: CellSpec,
) -> Result<(), StoreError> {
    let key = keys.cell_spec(cell);
    let existing = store
        .retrying("read cell spec", |mut c| {
            let key = key.clone();
            async move { c.get(key, None::<GetOptions>).await }
        })
        .await?;
    if let Some(kv) = existing.kvs().first()
        && let Ok(old) = decode::<CellSpec>(&key, kv.value())
    {
        spec.desired = old.desired;
    }
    let value = encode(&spec);
    store
        .retrying("write cell spec", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
    Ok(())
}

/// Keeps `cells/<id>/alive` bound to a live lease for as long as the task
/// runs; re-grants a new lease whenever the old one is lost.
pub fn keep_alive(
    store: Store,
    keys: Keys,
    cell: String,
    alive: CellAlive,
    settings: LeaseSettings,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match hold_lease(&store, &keys, &cell, &alive, settings).await {
                Ok(()) => tracing::warn!(cell, "lease expired, registering again"),
                Err(e) => tracing::warn!(cell, error = %e, "lease lost, registering again"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(settings.keep_alive_every);
        }
    })
}

async fn hold_lease(
    store: &Store,
    keys: &Keys,
    cell: &str,
    alive: &CellAlive,
    settings: LeaseSettings,
) -> Result<(), StoreError> {
    let mut client = store.client();
    let ttl = settings.ttl.as_secs().max(1) as i64;
    let lease = client.lease_grant(ttl, None).await?.id();
    client
        .put(
            keys.cell_alive(cell),
            encode(alive),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    tracing::info!(cell, lease, "registered");
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(settings.keep_alive_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        let answer = tokio::time::timeout(settings.ttl, responses.message()).await;
        match answer {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return Ok(()),
            Ok(Ok(None)) => {
                return Err(StoreError::Unavailable("keep-alive stream ended".into()));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(StoreError::Unavailable("keep-alive timed out".into())),
        }
    }
}
