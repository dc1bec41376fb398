//! Presence in etcd: a cell's spec, and liveness keys (a cell's `alive`, a
//! router's `routers/<id>`) bound to a lease of about three seconds renewed
//! about every second. When the process dies the lease expires and every
//! watcher sees the key go.

use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use tokio::sync::watch;
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

/// Writes the cell's spec, keeping the lifecycle already recorded (an
/// operator's drain, the leader's promotion); a cell new to etcd joins.
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
        spec.lifecycle = old.lifecycle;
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

/// Keeps `cells/<id>/alive` bound to a live lease for as long as the task runs.
pub fn keep_cell_alive(
    store: Store,
    keys: &Keys,
    cell: &str,
    alive: &CellAlive,
    settings: LeaseSettings,
) -> JoinHandle<()> {
    // The value never changes: the sender may go at once.
    let (_, value) = watch::channel(encode(alive));
    keep_alive(store, keys.cell_alive(cell), value, settings)
}

/// Keeps `key` bound to a live lease for as long as the task runs, holding
/// the latest value of `value`; re-grants a new lease whenever the old one is
/// lost.
pub fn keep_alive(
    store: Store,
    key: String,
    value: watch::Receiver<Vec<u8>>,
    settings: LeaseSettings,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match hold_lease(&store, &key, value.clone(), settings).await {
                Ok(()) => tracing::warn!(key, "lease expired, registering again"),
                Err(e) => tracing::warn!(key, error = %e, "lease lost, registering again"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(settings.keep_alive_every);
        }
    })
}

async fn hold_lease(
    store: &Store,
    key: &str,
    mut value: watch::Receiver<Vec<u8>>,
    settings: LeaseSettings,
) -> Result<(), StoreError> {
    let mut client = store.client();
    let ttl = settings.ttl.as_secs().max(1) as i64;
    let lease = client.lease_grant(ttl, None).await?.id();
    let put = |client: &mut etcd_client::Client, v: Vec<u8>| {
        let mut client = client.clone();
        let key = key.to_owned();
        async move {
            client
                .put(key, v, Some(PutOptions::new().with_lease(lease)))
                .await
        }
    };
    let first = value.borrow_and_update().clone();
    put(&mut client, first).await?;
    tracing::info!(key, lease, "registered");
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(settings.keep_alive_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the owner may still publish new values; once it is gone the
    // last one is kept alive.
    let mut publishing = true;
    loop {
        tokio::select! {
                changed = value.changed(), if publishing => {
                    match changed {
                        Ok(()) => {
                            let first = value.borrow_and_update().clone();
        put(&mut client, first).await?;
                        }
                        Err(_) => publishing = false,
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
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
