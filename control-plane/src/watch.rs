//! The cluster snapshot that router and cells keep in memory, fed by one etcd
//! watch from a revision: it never polls and never misses an event. A lost
//! watch resumes from the last revision seen; if etcd compacted past it, the
//! snapshot is rebuilt from a fresh read. While etcd is away the last snapshot
//! keeps serving (static stability).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::{
    CellAlive, CellSpec, KeyKind, Keys, Lifecycle, PlacementRecord, ProviderHealth, ProviderState,
    RouterPresence, TenantRecord,
};
use crate::store::{Store, StoreError, decode};

/// What is known of one cell.
#[derive(Debug, Clone, Default)]
pub struct CellView {
    pub spec: Option<CellSpec>,
    pub alive: Option<CellAlive>,
}

impl CellView {
    /// A cell takes traffic for the tenants placed on it while its lease is
    /// alive and it has not been removed.
    pub fn is_serving(&self) -> bool {
        self.alive.is_some() && self.lifecycle() != Some(Lifecycle::Removed)
    }

    /// The lifecycle its spec records, if it has a spec.
    pub fn lifecycle(&self) -> Option<Lifecycle> {
        self.spec.as_ref().map(|s| s.lifecycle)
    }

    /// The endpoint to send requests to: the live one if any, else the spec's.
    pub fn endpoint(&self) -> Option<&str> {
        self.alive
            .as_ref()
            .map(|a| a.endpoint.as_str())
            .or_else(|| self.spec.as_ref().map(|s| s.endpoint.as_str()))
    }
}

/// An immutable view of the cluster at one etcd revision.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    pub revision: i64,
    pub cells: BTreeMap<String, CellView>,
    pub tenants: HashMap<String, Arc<TenantRecord>>,
    /// API key hash → tenant id.
    key_index: HashMap<String, String>,
    /// The router↔cell signing key, once the control plane has made it.
    pub cell_auth_key: Option<Arc<[u8]>>,
    /// The signing key before the last rotation, which cells still accept.
    pub cell_auth_previous_key: Option<Arc<[u8]>>,
    /// Provider-regions that a cell is configured with, or that have
    /// published health or an operator's drain.
    pub providers: BTreeMap<String, ProviderView>,
    /// Committed placement, by tenant.
    pub placements: HashMap<String, Arc<PlacementRecord>>,
    /// Routers that are up, with the placement revision each routes by.
    pub routers: BTreeMap<String, RouterPresence>,
    /// The last revision that changed what placement is built from (cells,
    /// tenants, placement records); other keys leave it alone, so that
    /// routers rebuild and report only when routing may have changed.
    pub placement_revision: i64,
}

/// What the control plane says about one provider-region.
#[derive(Debug, Clone, Default)]
pub struct ProviderView {
    pub health: Option<ProviderHealth>,
    pub drained: bool,
    /// Cells that registered this provider-region in their config.
    pub configured_cells: std::collections::BTreeSet<String>,
}

impl ProviderView {
    /// The state cells act on: a drain wins over published health.
    pub fn state(&self) -> ProviderState {
        if self.drained {
            ProviderState::Drained
        } else {
            self.health
                .as_ref()
                .map(|h| h.state)
                .unwrap_or(ProviderState::Healthy)
        }
    }
}

impl ClusterView {
    /// Cells that take traffic, in id order.
    pub fn serving_cells(&self) -> impl Iterator<Item = (&str, &CellView)> {
        self.cells
            .iter()
            .filter(|(_, c)| c.is_serving())
            .map(|(id, c)| (id.as_str(), c))
    }

    /// The tenant owning the API key with this hash.
    pub fn tenant_by_key_hash(&self, sha256: &str) -> Option<&Arc<TenantRecord>> {
        self.key_index
            .get(sha256)
            .and_then(|id| self.tenants.get(id))
    }

    /// The tenant's committed placement.
    pub fn placement(&self, tenant: &str) -> Option<&Arc<PlacementRecord>> {
        self.placements.get(tenant)
    }

    fn apply(&mut self, kind: KeyKind<'_>, key: &str, value: Option<&[u8]>, revision: i64) {
        if matches!(
            kind,
            KeyKind::CellSpec(_)
                | KeyKind::CellAlive(_)
                | KeyKind::Tenant(_)
                | KeyKind::Placement(_)
        ) {
            self.placement_revision = self.placement_revision.max(revision);
        }
        match kind {
            KeyKind::CellSpec(id) => {
                let spec = value.and_then(|v| decode_logged::<CellSpec>(key, v));
                let cell = self.cells.entry(id.to_owned()).or_default();
                cell.spec = spec;
                self.prune_cell(id);
            }
            KeyKind::CellAlive(id) => {
                let alive = value.and_then(|v| decode_logged::<CellAlive>(key, v));
                let cell = self.cells.entry(id.to_owned()).or_default();
                cell.alive = alive;
                self.prune_cell(id);
            }
            KeyKind::Tenant(id) => {
                if let Some(old) = self.tenants.remove(id) {
                    for k in &old.api_keys {
                        self.key_index.remove(&k.sha256);
                    }
                }
                if let Some(record) = value.and_then(|v| decode_logged::<TenantRecord>(key, v)) {
                    for k in &record.api_keys {
                        self.key_index.insert(k.sha256.clone(), id.to_owned());
                    }
                    self.tenants.insert(id.to_owned(), Arc::new(record));
                }
            }
            KeyKind::CellAuthKey => self.cell_auth_key = value.and_then(signing_key),
            KeyKind::CellAuthPreviousKey => {
                self.cell_auth_previous_key = value.and_then(signing_key);
            }
            KeyKind::ProviderHealth(id) => {
                let health = value.and_then(|v| decode_logged::<ProviderHealth>(key, v));
                let p = self.providers.entry(id.to_owned()).or_default();
                p.health = health;
                self.prune_provider(id);
            }
            KeyKind::ProviderDrain(id) => {
                let p = self.providers.entry(id.to_owned()).or_default();
                p.drained = value.is_some();
                self.prune_provider(id);
            }
            KeyKind::Placement(id) => {
                match value.and_then(|v| decode_logged::<PlacementRecord>(key, v)) {
                    Some(record) => {
                        self.placements.insert(id.to_owned(), Arc::new(record));
                    }
                    None => {
                        self.placements.remove(id);
                    }
                }
            }
            KeyKind::Router(id) => {
                match value.and_then(|v| decode_logged::<RouterPresence>(key, v)) {
                    Some(presence) => {
                        self.routers.insert(id.to_owned(), presence);
                    }
                    None => {
                        self.routers.remove(id);
                    }
                }
            }
            KeyKind::ProviderConfigured { provider, cell } => {
                let p = self.providers.entry(provider.to_owned()).or_default();
                if value.is_some() {
                    p.configured_cells.insert(cell.to_owned());
                } else {
                    p.configured_cells.remove(cell);
                }
                self.prune_provider(provider);
            }
            // Reports are for the leader, which reads them itself.
            KeyKind::ProviderReport { .. } | KeyKind::Unknown => {}
        }
    }

    fn prune_provider(&mut self, id: &str) {
        if self
            .providers
            .get(id)
            .is_some_and(|p| p.health.is_none() && !p.drained && p.configured_cells.is_empty())
        {
            self.providers.remove(id);
        }
    }

    fn prune_cell(&mut self, id: &str) {
        if self
            .cells
            .get(id)
            .is_some_and(|c| c.spec.is_none() && c.alive.is_none())
        {
            self.cells.remove(id);
        }
    }
}

fn decode_logged<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match decode(key, value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable record");
            None
        }
    }
}

/// A live, lock-free snapshot of the cluster, kept current by a background watch.
#[derive(Clone)]
pub struct ClusterWatch {
    current: Arc<ArcSwap<ClusterView>>,
    revisions: watch::Receiver<i64>,
}

impl ClusterWatch {
    /// Reads the whole prefix, then follows it. Fails only if the first read
    /// fails: after that, etcd outages are ridden out on the last snapshot.
    pub async fn start(store: Store, keys: Keys) -> Result<(Self, JoinHandle<()>), StoreError> {
        let view = load(&store, &keys).await?;
        let (tx, rx) = watch::channel(view.revision);
        let current = Arc::new(ArcSwap::from_pointee(view));
        let task = tokio::spawn(follow(store, keys, current.clone(), tx));
        Ok((
            Self {
                current,
                revisions: rx,
            },
            task,
        ))
    }

    /// Notified with the revision whenever the snapshot changes.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revisions.clone()
    }

    /// The current snapshot; cheap, never blocks.
    pub fn snapshot(&self) -> Arc<ClusterView> {
        self.current.load_full()
    }

    /// Waits until the snapshot satisfies `pred` or `timeout` passes; returns
    /// whether it did. For readiness checks and tests, not the request path.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&ClusterView) -> bool,
    ) -> bool {
        let mut rx = self.revisions.clone();
        let wait = async {
            loop {
                if pred(&self.current.load()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

async fn load(store: &Store, keys: &Keys) -> Result<ClusterView, StoreError> {
    let prefix = keys.prefix().to_owned();
    let resp = store
        .retrying("load cluster view", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut view = ClusterView {
        revision: resp.header().map(|h| h.revision()).unwrap_or(0),
        ..ClusterView::default()
    };
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        view.apply(keys.parse(key), key, Some(kv.value()), kv.mod_revision());
    }
    Ok(view)
}

/// Follows the prefix forever, resuming after errors from the last revision.
async fn follow(
    store: Store,
    keys: Keys,
    current: Arc<ArcSwap<ClusterView>>,
    revisions: watch::Sender<i64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let from = current.load().revision + 1;
        match watch_from(&store, &keys, &current, &revisions, from).await {
            WatchEnd::Compacted => {
                tracing::warn!(from, "watch revision compacted, reloading snapshot");
                match load(&store, &keys).await {
                    Ok(view) => {
                        let rev = view.revision;
                        current.store(Arc::new(view));
                        revisions.send_replace(rev);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => tracing::warn!(error = %e, "reload failed, keeping last snapshot"),
                }
            }
            WatchEnd::Failed(e) => {
                tracing::warn!(error = %e, from, "watch lost, keeping last snapshot and resuming");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

enum WatchEnd {
    Compacted,
    Failed(String),
}

async fn watch_from(
    store: &Store,
    keys: &Keys,
    current: &ArcSwap<ClusterView>,
    revisions: &watch::Sender<i64>,
    from: i64,
) -> WatchEnd {
    let mut client = store.client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from)
        .with_progress_notify();
    let mut stream = match client.watch(keys.prefix(), Some(options)).await {
        Ok(s) => s,
        Err(e) => return WatchEnd::Failed(e.to_string()),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return WatchEnd::Failed("watch stream ended".to_owned()),
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        if resp.compact_revision() > 0 {
            return WatchEnd::Compacted;
        }
        if resp.canceled() {
            return WatchEnd::Failed(format!("watch canceled: {}", resp.cancel_reason()));
        }
        // Keys nobody here follows (provider reports, election keys) change
        // every second; they must not rebuild the view, nor the router's
        // placement behind it.
        let relevant = resp.events().iter().any(|e| {
            e.kv().and_then(|kv| kv.key_str().ok()).is_some_and(|k| {
                !matches!(
                    keys.parse(k),
                    KeyKind::ProviderReport { .. } | KeyKind::Unknown
                )
            })
        });
        if !relevant {
            continue;
        }
        let mut view = ClusterView::clone(&current.load());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let Ok(key) = kv.key_str() else { continue };
            let value = match event.event_type() {
                EventType::Put => Some(kv.value()),
                EventType::Delete => None,
            };
            view.apply(keys.parse(key), key, value, kv.mod_revision());
            view.revision = view.revision.max(kv.mod_revision());
        }
        if let Some(header) = resp.header() {
            view.revision = view.revision.max(header.revision());
        }
        let rev = view.revision;
        current.store(Arc::new(view));
        revisions.send_replace(rev);
    }
}

/// A signing key as stored in etcd: hex, at least 32 bytes.
fn signing_key(value: &[u8]) -> Option<Arc<[u8]>> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| hex::decode(v.trim()).ok())
        .filter(|k| k.len() >= 32)
        .map(Arc::from)
}
