//! Placement: a consistent-hash ring (the `hashring` crate) with virtual
//! nodes over the cells that take traffic. A tenant's cells are the distinct
//! cells met walking the ring from the tenant's hash; the first is its home,
//! the rest are where it fails over to, in order. A pin in the tenant record
//! overrides the ring. The ring hashes with fixed keys, so every router
//! computes the same placement from the same etcd revision.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use control_plane::watch::ClusterView;
use hashring::HashRing;

/// Virtual nodes per cell: enough to spread tenants evenly over a few cells.
pub const DEFAULT_VNODES: u32 = 128;

/// A cell requests can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cell: Arc<str>,
    pub endpoint: Arc<str>,
}

#[derive(Debug, Clone)]
struct VNode {
    cell: Arc<str>,
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.cell.hash(state);
        self.replica.hash(state);
    }
}

/// The ring for one snapshot revision.
#[derive(Debug)]
pub struct Placement {
    pub revision: i64,
    ring: HashRing<VNode>,
    targets: Vec<Target>,
}

impl Placement {
    pub fn build(view: &ClusterView, vnodes: u32) -> Self {
        let mut ring = HashRing::new();
        let mut targets = Vec::new();
        for (id, cell) in view.serving_cells() {
            let Some(endpoint) = cell.endpoint() else {
                continue;
            };
            let cell: Arc<str> = Arc::from(id);
            targets.push(Target {
                cell: cell.clone(),
                endpoint: Arc::from(endpoint.trim_end_matches('/')),
            });
            ring.batch_add(
                (0..vnodes)
                    .map(|replica| VNode {
                        cell: cell.clone(),
                        replica,
                    })
                    .collect(),
            );
        }
        Self {
            revision: view.revision,
            ring,
            targets,
        }
    }

    pub fn cell_count(&self) -> usize {
        self.targets.len()
    }

    fn target(&self, cell: &str) -> Option<&Target> {
        self.targets.iter().find(|t| &*t.cell == cell)
    }

    /// The tenant's cells in failover order: pinned cells first if any serve,
    /// then the distinct cells along the ring from the tenant's hash.
    pub fn cells_for(&self, tenant: &str, pin: Option<&[String]>) -> Vec<Target> {
        let mut out: Vec<Target> = Vec::with_capacity(self.targets.len());
        if let Some(pin) = pin {
            out.extend(pin.iter().filter_map(|c| self.target(c)).cloned());
            if !out.is_empty() {
                return out;
            }
        }
        let Some(walk) = self.ring.get_with_replicas(&tenant, self.ring.len()) else {
            return out;
        };
        for vnode in walk {
            if out.len() == self.targets.len() {
                break;
            }
            if out.iter().any(|t| t.cell == vnode.cell) {
                continue;
            }
            if let Some(t) = self.target(&vnode.cell) {
                out.push(t.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_plane::model::{CellAlive, CellSpec, DesiredState};
    use control_plane::watch::CellView;

    fn view(cells: &[&str]) -> ClusterView {
        let mut v = ClusterView::default();
        for c in cells {
            v.cells.insert(
                (*c).to_owned(),
                CellView {
                    spec: Some(CellSpec {
                        region: "r".into(),
                        endpoint: format!("http://{c}"),
                        template: "t".into(),
                        desired: DesiredState::Active,
                    }),
                    alive: Some(CellAlive {
                        endpoint: format!("http://{c}"),
                        started_at_ms: 0,
                    }),
                },
            );
        }
        v
    }

    #[test]
    fn every_router_places_alike() {
        let a = Placement::build(&view(&["c1", "c2", "c3"]), 64);
        let b = Placement::build(&view(&["c3", "c1", "c2"]), 64);
        for t in 0..200 {
            let tenant = format!("tenant-{t}");
            assert_eq!(a.cells_for(&tenant, None), b.cells_for(&tenant, None));
        }
    }

    #[test]
    fn lists_each_cell_once() {
        let p = Placement::build(&view(&["c1", "c2", "c3"]), 64);
        let cells = p.cells_for("acme", None);
        assert_eq!(cells.len(), 3);
        let mut ids: Vec<_> = cells.iter().map(|t| t.cell.to_string()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn removing_a_cell_moves_only_its_tenants() {
        let before = Placement::build(&view(&["c1", "c2", "c3", "c4"]), 128);
        let after = Placement::build(&view(&["c1", "c2", "c3"]), 128);
        let mut moved = 0;
        for t in 0..2000 {
            let tenant = format!("t{t}");
            let home_before = before.cells_for(&tenant, None)[0].cell.clone();
            let home_after = after.cells_for(&tenant, None)[0].cell.clone();
            if home_before != home_after {
                assert_eq!(&*home_before, "c4", "{tenant} moved off a surviving cell");
                moved += 1;
            }
        }
        // About a quarter lived on c4.
        assert!((300..700).contains(&moved), "moved {moved}");
    }

    #[test]
    fn pin_overrides_the_ring() {
        let p = Placement::build(&view(&["c1", "c2", "c3"]), 64);
        let pinned = p.cells_for("acme", Some(&["c2".to_owned()]));
        assert_eq!(pinned.len(), 1);
        assert_eq!(&*pinned[0].cell, "c2");
        // A pin to cells that are all down falls back to the ring.
        assert_eq!(p.cells_for("acme", Some(&["gone".to_owned()])).len(), 3);
    }
}
