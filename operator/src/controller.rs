//! The reconciler. Apply: render the Cell, server-side apply its
//! ConfigMap, headless Service and StatefulSet (owned by the Cell), register
//! it with the control plane, and write its status from the pod and the
//! control plane. Cleanup (the finalizer): drain the cell through the
//! control plane, wait until it holds no tenant, remove it, and only then
//! let Kubernetes delete the workload with the Cell.
//!
//! Every step is idempotent, so a reconcile interrupted anywhere is simply
//! run again. Failures requeue with exponential backoff per Cell.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::admin::{AdminClient, AdminError};
use crate::config::CellDefaults;
use crate::crd::{Cell, CellStatus, FINALIZER};
use crate::metrics::Metrics;
use crate::render::{SpecErrors, Workload, pod_name, render};
use crate::status::{self, ControlPlane, Observed, PodState};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "cell-operator";
/// How often cells are looked at without a Kubernetes event: the control
/// plane's side of their status changes without one.
#[derive(Debug, Clone, Copy)]
pub struct Recheck {
    /// A cell that is Active and stable.
    pub settled: Duration,
    /// A cell that is starting, joining or moving tenants.
    pub busy: Duration,
}

impl Default for Recheck {
    fn default() -> Self {
        Recheck {
            settled: Duration::from_secs(60),
            busy: Duration::from_secs(5),
        }
    }
}
/// How often a draining cell's tenants are counted while its deletion waits.
const DRAIN_RECHECK: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("the Cell's spec is invalid: {0}")]
    InvalidSpec(SpecErrors),
    /// Not a failure: the finalizer keeps the Cell until its tenants are off.
    #[error("cell {cell} is draining; it still holds {tenants} tenants")]
    StillDraining { cell: String, tenants: usize },
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
}

impl Error {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Admin(_) => "control_plane",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::StillDraining { .. } => "still_draining",
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.kind(),
                _ => "finalizer",
            },
        }
    }

    fn is_still_draining(&self) -> bool {
        self.kind() == "still_draining"
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub admin: AdminClient,
    pub defaults: CellDefaults,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub recheck: Recheck,
    /// Consecutive failures per Cell, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        admin: AdminClient,
        defaults: CellDefaults,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            defaults,
            metrics,
            recheck: Recheck::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(cell: &Cell) -> String {
        format!(
            "{}/{}",
            cell.namespace().unwrap_or_default(),
            cell.name_any()
        )
    }

    /// Records an event on the Cell; an event that cannot be written is
    /// logged, never a reason to fail the reconcile.
    async fn event(&self, cell: &Cell, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cell.object_ref(&())).await {
            tracing::warn!(cell = %cell.name_any(), error = %e, "could not record an event");
        }
    }
}

/// Reconciles one Cell; the controller calls it on every change of the Cell
/// or of what it owns, and when the returned action says.
pub async fn reconcile(cell: Arc<Cell>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let cells: Api<Cell> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&cells, FINALIZER, cell.clone(), |event| async {
        match event {
            finalizer::Event::Apply(cell) => apply(&cell, &ctx).await,
            finalizer::Event::Cleanup(cell) => cleanup(&cell, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    ctx.metrics.observe(&result, started.elapsed());
    match &result {
        Ok(_) => {
            lock(&ctx.failures).remove(&Context::key(&cell));
        }
        Err(e) if e.is_still_draining() => {}
        Err(e) => {
            tracing::warn!(cell = %cell.name_any(), error = %e, "reconcile failed");
            ctx.event(
                &cell,
                EventType::Warning,
                "ReconcileFailed",
                "Reconcile",
                e.to_string(),
            )
            .await;
        }
    }
    result
}

/// The controller's answer to a failed reconcile: a draining cell is looked
/// at again soon; anything else backs off exponentially, per Cell.
pub fn error_policy(cell: Arc<Cell>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_still_draining() {
        return Action::requeue(DRAIN_RECHECK);
    }
    let mut failures = lock(&ctx.failures);
    let n = failures.entry(Context::key(&cell)).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(backoff(*n))
}

/// The wait after the `n`th consecutive failure: 1 s, 2 s, 4 s … 5 min.
pub fn backoff(n: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn apply(cell: &Cell, ctx: &Context) -> Result<Action, Error> {
    let name = cell.name_any();
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let workload = match render(cell, &ctx.defaults) {
        Ok(w) => w,
        Err(problems) => {
            let observed =
                observe(cell, ctx, None, String::new(), Some(problems.to_string())).await?;
            write_status(cell, ctx, &observed).await?;
            ctx.event(
                cell,
                EventType::Warning,
                "InvalidSpec",
                "Render",
                problems.to_string(),
            )
            .await;
            return Err(Error::InvalidSpec(problems));
        }
    };
    let sts = apply_workload(&ctx.client, &namespace, &workload).await?;
    // A control plane that is away still gets its status written (it says
    // why the cell cannot join); the reconcile then fails and is retried.
    let registered = ctx
        .admin
        .register(
            &name,
            &cell.spec.region,
            &workload.endpoint,
            &cell.spec.template,
        )
        .await;
    if matches!(registered, Ok(true)) {
        ctx.event(
            cell,
            EventType::Normal,
            "Registered",
            "Register",
            format!("registered with the control plane at {}", workload.endpoint),
        )
        .await;
    }
    let observed = observe(cell, ctx, Some(&sts), workload.endpoint.clone(), None).await?;
    let written = write_status(cell, ctx, &observed).await?;
    registered?;
    let settled = written
        .conditions
        .iter()
        .any(|c| c.type_ == status::PROGRESSING && c.status == "False")
        && written.phase == Some(crate::crd::Phase::Active);
    Ok(Action::requeue(if settled {
        ctx.recheck.settled
    } else {
        ctx.recheck.busy
    }))
}

/// Applies the three objects; returns the StatefulSet as the API server
/// has it (with its status).
pub async fn apply_workload(
    client: &Client,
    namespace: &str,
    workload: &Workload,
) -> Result<StatefulSet, kube::Error> {
    let params = PatchParams::apply(MANAGER).force();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let name = |m: &kube::api::ObjectMeta| m.name.clone().unwrap_or_default();
    config_maps
        .patch(
            &name(&workload.config_map.metadata),
            &params,
            &Patch::Apply(&workload.config_map),
        )
        .await?;
    services
        .patch(
            &name(&workload.service.metadata),
            &params,
            &Patch::Apply(&workload.service),
        )
        .await?;
    stateful_sets
        .patch(
            &name(&workload.stateful_set.metadata),
            &params,
            &Patch::Apply(&workload.stateful_set),
        )
        .await
}

/// Reads the pod and the control plane's record. The control plane being
/// away is an observation (the status says so), not a failure.
async fn observe(
    cell: &Cell,
    ctx: &Context,
    sts: Option<&StatefulSet>,
    endpoint: String,
    invalid_spec: Option<String>,
) -> Result<Observed, Error> {
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = pods.get_opt(&pod_name(&cell.name_any())).await?;
    let control_plane = match ctx.admin.cell(&cell.name_any()).await {
        Ok(Some(summary)) => ControlPlane::Known(Box::new(summary)),
        Ok(None) => ControlPlane::NotRegistered,
        Err(e) => ControlPlane::Unreachable(e.to_string()),
    };
    Ok(Observed {
        generation: cell.metadata.generation,
        endpoint,
        pod: PodState::of(pod.as_ref()),
        rolled_out: sts.is_some_and(status::rolled_out),
        control_plane,
        invalid_spec,
    })
}

/// Writes the status `observed` gives, by server-side apply on `/status`,
/// if it differs from the Cell's; records an event for each condition that
/// flipped and for a new phase.
async fn write_status(
    cell: &Cell,
    ctx: &Context,
    observed: &Observed,
) -> Result<CellStatus, Error> {
    let previous = cell.status.as_ref();
    let next = status::status(previous, observed, Timestamp::now());
    if previous == Some(&next) {
        return Ok(next);
    }
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let cells: Api<Cell> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = json!({
        "apiVersion": Cell::api_version(&()),
        "kind": Cell::kind(&()),
        "status": next,
    });
    cells
        .patch_status(
            &cell.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    if let Some(phase) = next
        .phase
        .filter(|p| previous.and_then(|s| s.phase) != Some(*p))
    {
        ctx.event(
            cell,
            EventType::Normal,
            "PhaseChanged",
            "UpdateStatus",
            format!("phase {phase:?}"),
        )
        .await;
    }
    for c in &next.conditions {
        let before = previous.and_then(|p| p.conditions.iter().find(|p| p.type_ == c.type_));
        if before.is_some_and(|b| b.status != c.status) {
            // What an operator should look at: a fault, or a cell that
            // stopped serving for a reason other than its drain.
            let warning = match c.type_.as_str() {
                status::DEGRADED => c.status == "True",
                status::READY => {
                    c.status == "False" && !matches!(c.reason.as_str(), "Draining" | "Drained")
                }
                _ => false,
            };
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.event(
                cell,
                type_,
                &c.reason,
                "UpdateStatus",
                format!("{} {}: {}", c.type_, c.status, c.message),
            )
            .await;
        }
    }
    Ok(next)
}

/// The finalizer's work: drain, wait for no tenant, remove. Returns an
/// error (so the finalizer stays) until the cell holds no tenant.
async fn cleanup(cell: &Cell, ctx: &Context) -> Result<Action, Error> {
    use control_plane::model::Lifecycle;
    let name = cell.name_any();
    let Some(summary) = ctx.admin.cell(&name).await? else {
        tracing::info!(cell = %name, "cell was never registered; letting it go");
        return Ok(Action::await_change());
    };
    let lifecycle = summary.spec.as_ref().map(|s| s.lifecycle);
    match lifecycle {
        Some(Lifecycle::Removed) | None => return Ok(Action::await_change()),
        Some(Lifecycle::Joining | Lifecycle::Active) => {
            ctx.admin.drain(&name).await?;
            ctx.event(
                cell,
                EventType::Normal,
                "DrainStarted",
                "Drain",
                format!(
                    "moving {} tenants off before the cell is deleted",
                    summary.tenants
                ),
            )
            .await;
        }
        Some(Lifecycle::Draining) => {}
        Some(Lifecycle::Drained) if summary.tenants == 0 => {
            ctx.admin.remove(&name).await?;
            ctx.event(
                cell,
                EventType::Normal,
                "Removed",
                "Remove",
                "drained and removed from the control plane; its workload goes with the Cell"
                    .to_owned(),
            )
            .await;
            return Ok(Action::await_change());
        }
        Some(Lifecycle::Drained) => {}
    }
    // Show the drain in the status while the deletion waits.
    let refreshed = ctx.admin.cell(&name).await?.unwrap_or(summary);
    let endpoint = refreshed
        .spec
        .as_ref()
        .map(|s| s.endpoint.clone())
        .unwrap_or_default();
    let tenants = refreshed.tenants;
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = pods.get_opt(&pod_name(&name)).await?;
    let observed = Observed {
        generation: cell.metadata.generation,
        endpoint,
        pod: PodState::of(pod.as_ref()),
        rolled_out: true,
        control_plane: ControlPlane::Known(Box::new(refreshed)),
        invalid_spec: None,
    };
    write_status(cell, ctx, &observed).await?;
    Err(Error::StillDraining {
        cell: name,
        tenants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
