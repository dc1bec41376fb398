//! Placement, owned by the control-plane leader: it computes each tenant's
//! target replica set (`ring`), compares it with the committed one in etcd
//! (`plan`), and moves the tenants whose sets differ (`mover`, calling the
//! cells through `cells`). Routers route by the committed records only.

pub mod cells;
pub mod mover;
pub mod plan;
pub mod ring;
pub mod verify;

use std::collections::HashMap;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;

use crate::model::{Keys, now_ms};
use crate::store::{Store, StoreError};
use crate::watch::ClusterWatch;
use cells::{CellApi, CellCallError};
use plan::{Action, Throttle};
use ring::{Placement, PlacementSettings};

/// How the leader places and moves tenants.
#[derive(Debug, Clone, Copy)]
pub struct MoveSettings {
    pub ring: PlacementSettings,
    pub throttle: Throttle,
    /// Points copied per second per move, at most.
    pub copy_points_per_second: u64,
    /// How long a cell that left a replica set keeps the tenant's points.
    pub cleanup_grace: Duration,
}

/// Fast enough to move a 100k-point tenant in well under a minute, slow
/// enough to leave the cells most of their time for queries.
pub const DEFAULT_COPY_POINTS_PER_SECOND: u64 = 20_000;
/// Longer than a router takes to see a flip and finish the reads it began
/// before it.
pub const DEFAULT_CLEANUP_GRACE: Duration = Duration::from_secs(5);

impl Default for MoveSettings {
    fn default() -> Self {
        Self {
            ring: PlacementSettings::default(),
            throttle: Throttle::default(),
            copy_points_per_second: DEFAULT_COPY_POINTS_PER_SECOND,
            cleanup_grace: DEFAULT_CLEANUP_GRACE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cell(#[from] CellCallError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("{0}")]
    Waiting(String),
}

/// Counters of the moves this replica ran while leading.
#[derive(Clone, Default)]
pub struct MoveMetrics {
    pub moves_started: Counter,
    pub moves_completed: Counter,
    pub moves_rolled_back: Counter,
    pub points_copied: Counter,
    pub moves_in_progress: Gauge,
}

impl MoveMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let m = Self::default();
        registry.register(
            "cellnet_moves_started",
            "Tenant moves started by this control-plane replica",
            m.moves_started.clone(),
        );
        registry.register(
            "cellnet_moves_completed",
            "Tenant moves flipped to their new replica set",
            m.moves_completed.clone(),
        );
        registry.register(
            "cellnet_moves_rolled_back",
            "Tenant moves abandoned after repeated failures",
            m.moves_rolled_back.clone(),
        );
        registry.register(
            "cellnet_move_points_copied",
            "Points written to new replica-set members",
            m.points_copied.clone(),
        );
        registry.register(
            "cellnet_moves_in_progress",
            "Tenants whose committed replica set differs from their target",
            m.moves_in_progress.clone(),
        );
        m
    }
}

/// What a move needs: etcd, the leader's snapshot, the cells, and Redis for
/// the hints and ingestion queues a source may still owe.
#[derive(Clone)]
pub struct MoveContext {
    pub store: Store,
    pub keys: Keys,
    pub cluster: ClusterWatch,
    pub cells: CellApi,
    pub redis: Option<ConnectionManager>,
    pub settings: MoveSettings,
    pub metrics: MoveMetrics,
}

impl MoveContext {
    /// Waits until every router reports routing by `revision` or later (and
    /// has no write in flight from before it).
    pub async fn routers_at(&self, revision: i64) -> Result<(), MoveError> {
        let caught_up = self
            .cluster
            .wait_until(Duration::from_secs(30), |v| {
                v.routers.values().all(|r| r.placement_revision >= revision)
            })
            .await;
        if caught_up {
            Ok(())
        } else {
            let view = self.cluster.snapshot();
            let behind: Vec<&String> = view
                .routers
                .iter()
                .filter(|(_, r)| r.placement_revision < revision)
                .map(|(id, _)| id)
                .collect();
            Err(MoveError::Waiting(format!(
                "routers {behind:?} have not reached placement revision {revision}"
            )))
        }
    }
}

/// Brings committed placement to the target, round after round, until the
/// task is aborted (leadership lost). Each change of the snapshot starts a
/// round; a round also runs every second, for clean-ups that fall due.
pub async fn reconcile(ctx: MoveContext) {
    // Dropped with the loop when leadership is lost, aborting every move:
    // the next leader carries them on from etcd.
    let mut running: HashMap<String, AbortOnDrop> = HashMap::new();
    let mut revisions = ctx.cluster.revisions();
    loop {
        running.retain(|_, task| !task.0.is_finished());
        let view = ctx.cluster.snapshot();
        let target = Placement::build(&view, ctx.settings.ring);
        let busy = running.keys().cloned().collect();
        let plan = plan::plan(&view, &target, &busy, ctx.settings.throttle, now_ms());
        ctx.metrics.moves_in_progress.set(plan.pending.len() as i64);
        for action in plan.actions {
            let (tenant, work) = match action {
                Action::Commit { tenant, members } => {
                    if let Err(e) = mover::commit(&ctx, &tenant, members).await {
                        tracing::warn!(%tenant, error = %e, "cannot commit placement");
                    }
                    continue;
                }
                Action::SetLifecycle { cell, lifecycle } => {
                    if let Err(e) = mover::set_lifecycle(&ctx, &cell, lifecycle).await {
                        tracing::warn!(%cell, error = %e, "cannot change the cell's lifecycle");
                    }
                    continue;
                }
                Action::Forget { tenant } => {
                    if let Err(e) = mover::forget(&ctx, &tenant).await {
                        tracing::warn!(%tenant, error = %e, "cannot forget a deleted tenant's placement");
                    }
                    continue;
                }
                Action::StartMove { tenant, to } => (tenant, Work::Start(to)),
                Action::ResumeMove { tenant } => (tenant, Work::Resume),
                Action::Cleanup { tenant, cell } => (tenant, Work::Cleanup(cell)),
            };
            if running.contains_key(&tenant) {
                continue;
            }
            let task_ctx = ctx.clone();
            let id = tenant.clone();
            let task = tokio::spawn(async move {
                let result = match work {
                    Work::Start(to) => mover::start(&task_ctx, &id, to).await,
                    Work::Resume => mover::run(&task_ctx, &id).await,
                    Work::Cleanup(cell) => mover::clean_up(&task_ctx, &id, &cell).await,
                };
                if let Err(e) = result {
                    tracing::warn!(tenant = %id, error = %e, "placement work failed; the next round tries again");
                }
            });
            running.insert(tenant, AbortOnDrop(task));
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), revisions.changed()).await;
    }
}

enum Work {
    Start(Vec<String>),
    Resume,
    Cleanup(String),
}

/// A task aborted when its handle is dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
