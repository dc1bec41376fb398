//! Placement as the control plane committed it: a lookup, never a
//! computation. The leader writes each tenant's replica set to
//! `placement/<tenant>`; every router reads the same records, so all of
//! them flip at the same etcd revision. Reads go to the committed members
//! that are alive, home first; writes go to every member, and while a move
//! is under way to the cells it brings in too.
//!
//! A router reports the placement revision it routes by (`routers/<id>`)
//! only once no write it began under an older placement is still in
//! flight: each write holds the placement it was routed by, and a retired
//! placement says so when its last holder lets go. The leader copies a
//! moving tenant's points only after every router reports the revision that
//! started the move, so no write can miss the new members.

use std::collections::HashMap;
use std::sync::Arc;

use control_plane::model::Lifecycle;
use control_plane::watch::ClusterView;
use tokio::sync::oneshot;

/// A cell requests can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cell: Arc<str>,
    pub region: Arc<str>,
    pub endpoint: Arc<str>,
    /// Whether its liveness key exists.
    pub alive: bool,
}

/// What a tenant's requests are routed by.
#[derive(Debug, Default)]
struct Sets {
    /// The committed members, home first (indices into `targets`).
    reads: Vec<u32>,
    /// Members and a move's new cells.
    writes: Vec<u32>,
}

/// Placement for one snapshot revision.
#[derive(Debug)]
pub struct Placement {
    /// The snapshot's placement revision.
    pub revision: i64,
    /// Cells that can be routed to (not removed), by id.
    targets: Vec<Target>,
    tenants: HashMap<String, Sets>,
    /// Told when the last holder of this placement lets go of it.
    retired: Option<oneshot::Sender<()>>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        if let Some(tx) = self.retired.take() {
            let _ = tx.send(());
        }
    }
}

impl Placement {
    /// The committed placement in `view`, and a receiver told when it is
    /// dropped for good.
    pub fn build(view: &ClusterView) -> (Self, oneshot::Receiver<()>) {
        let mut targets = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        for (id, cell) in &view.cells {
            let Some(endpoint) = cell.endpoint() else {
                continue;
            };
            if cell.lifecycle() == Some(Lifecycle::Removed) {
                continue;
            }
            let region = cell.spec.as_ref().map(|s| s.region.as_str()).unwrap_or("");
            index.insert(id, targets.len() as u32);
            targets.push(Target {
                cell: Arc::from(id.as_str()),
                region: Arc::from(region),
                endpoint: Arc::from(endpoint.trim_end_matches('/')),
                alive: cell.alive.is_some(),
            });
        }
        let lookup = |cells: &mut dyn Iterator<Item = &str>| -> Vec<u32> {
            cells.filter_map(|c| index.get(c).copied()).collect()
        };
        let tenants = view
            .placements
            .iter()
            .map(|(tenant, record)| {
                let sets = Sets {
                    reads: lookup(&mut record.members.iter().map(String::as_str)),
                    writes: lookup(&mut record.write_set().into_iter()),
                };
                (tenant.clone(), sets)
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        (
            Self {
                revision: view.placement_revision,
                targets,
                tenants,
                retired: Some(tx),
            },
            rx,
        )
    }

    /// Cells that are alive now.
    pub fn cell_count(&self) -> usize {
        self.targets.iter().filter(|t| t.alive).count()
    }

    /// The cells that are alive.
    pub fn live_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.alive)
    }

    /// Whether the control plane has placed the tenant.
    pub fn is_placed(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    fn pick(&self, cells: &[u32]) -> Vec<Target> {
        cells
            .iter()
            .map(|&c| self.targets[c as usize].clone())
            .collect()
    }

    /// The cells a read by `tenant` may go to, in order: its committed
    /// members that are alive, home first. No other cell holds its data, so
    /// none other is tried.
    pub fn cells_for(&self, tenant: &str) -> Vec<Target> {
        self.tenants
            .get(tenant)
            .map(|s| self.pick(&s.reads))
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.alive)
            .collect()
    }

    /// Every cell a write by `tenant` must reach, alive or not: its members
    /// and, during a move, the cells the move brings in.
    pub fn write_targets(&self, tenant: &str) -> Vec<Target> {
        self.tenants
            .get(tenant)
            .map(|s| self.pick(&s.writes))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_plane::model::{CellAlive, CellSpec, Move, MoveStep, PlacementRecord};
    use control_plane::watch::CellView;

    fn view() -> ClusterView {
        let mut v = ClusterView::default();
        for (id, lifecycle, alive) in [
            ("a", Lifecycle::Active, true),
            ("b", Lifecycle::Draining, false),
            ("c", Lifecycle::Joining, true),
            ("d", Lifecycle::Removed, true),
        ] {
            v.cells.insert(
                id.into(),
                CellView {
                    spec: Some(CellSpec {
                        region: "r".into(),
                        endpoint: format!("http://{id}/"),
                        template: "standard".into(),
                        lifecycle,
                    }),
                    alive: alive.then(|| CellAlive {
                        endpoint: format!("http://{id}"),
                        started_at_ms: 0,
                    }),
                },
            );
        }
        v.placements.insert(
            "t1".into(),
            Arc::new(PlacementRecord {
                members: vec!["b".into(), "a".into()],
                epoch: 3,
                moving: Some(Move::new(vec!["c".into(), "a".into()], MoveStep::Copy, 0)),
                leaving: Vec::new(),
                updated_at_ms: 0,
            }),
        );
        v.placements.insert(
            "t2".into(),
            Arc::new(PlacementRecord {
                members: vec!["d".into(), "a".into()],
                epoch: 1,
                moving: None,
                leaving: Vec::new(),
                updated_at_ms: 0,
            }),
        );
        v.placement_revision = 42;
        v
    }

    fn ids(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| &*t.cell).collect()
    }

    #[test]
    fn reads_go_to_live_committed_members_and_writes_to_the_move_too() {
        let (p, _) = Placement::build(&view());
        assert_eq!(p.revision, 42);
        // b is down, c is only being moved onto: the read goes to a alone.
        assert_eq!(ids(&p.cells_for("t1")), ["a"]);
        assert_eq!(ids(&p.write_targets("t1")), ["b", "a", "c"]);
        // A removed cell is never routed to.
        assert_eq!(ids(&p.cells_for("t2")), ["a"]);
        assert_eq!(ids(&p.write_targets("t2")), ["a"]);
        // A tenant the leader has not placed yet goes nowhere.
        assert!(!p.is_placed("t3"));
        assert!(p.cells_for("t3").is_empty());
        assert_eq!(p.targets[0].endpoint.as_ref(), "http://a");
    }

    #[tokio::test]
    async fn a_placement_says_when_its_last_holder_lets_go() {
        let (p, mut retired) = Placement::build(&view());
        let p = Arc::new(p);
        let in_flight = p.clone();
        drop(p);
        assert!(retired.try_recv().is_err(), "a write still holds it");
        drop(in_flight);
        assert!(retired.await.is_ok());
    }
}
