//! What the leader does next, from one snapshot: commit placement for new
//! tenants, start the moves that bring the committed placement to the
//! target (throttled per cell), clean up cells that left a replica set, and
//! move cells on in their lifecycle. A pure function of the snapshot, so
//! that every decision can be tested without etcd.

use std::collections::{BTreeMap, HashSet};

use crate::model::Lifecycle;
use crate::placement::ring::Placement;
use crate::watch::ClusterView;

/// How many moves may run at once.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// Moves a cell may take part in at once, as a destination or as a cell
    /// that leaves: copies compete with the cell's queries.
    pub max_moves_per_cell: usize,
    /// Moves in the whole system at once.
    pub max_moves: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Self {
            max_moves_per_cell: 2,
            max_moves: 8,
        }
    }
}

/// One thing for the leader to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Commit a replica set at once: the tenant has no placement yet, or only
    /// the order of its members changes (nothing to copy).
    Commit {
        tenant: String,
        members: Vec<String>,
    },
    /// Start moving the tenant's points to `to`.
    StartMove {
        tenant: String,
        to: Vec<String>,
    },
    /// Carry on with a move recorded in etcd (after a leader change).
    ResumeMove {
        tenant: String,
    },
    /// Delete the tenant's points from a cell that left its replica set.
    Cleanup {
        tenant: String,
        cell: String,
    },
    SetLifecycle {
        cell: String,
        lifecycle: Lifecycle,
    },
    /// Delete the placement record of a deleted tenant whose points are
    /// gone from every cell.
    Forget {
        tenant: String,
    },
}

/// A tenant whose committed replica set is not its target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub tenant: String,
    pub members: Vec<String>,
    pub target: Vec<String>,
    /// The step of the move under way, if one is.
    pub step: Option<String>,
}

/// Everything the snapshot calls for; `pending` lists every tenant still
/// away from its target, whether its move may start now or must wait.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub pending: Vec<Pending>,
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|c| b.contains(c))
}

/// Plans one round. `running` holds the tenants the leader is working on
/// now (moves and clean-ups), which are neither started nor resumed again;
/// `now_ms` decides which clean-ups are due.
pub fn plan(
    view: &ClusterView,
    target: &Placement,
    running: &HashSet<String>,
    throttle: Throttle,
    now_ms: u64,
) -> Plan {
    let mut out = Plan::default();
    let alive = |c: &str| view.cells.get(c).is_some_and(|c| c.alive.is_some());
    let lifecycle = |c: &str| view.cells.get(c).and_then(|c| c.lifecycle());
    // Moves under way, counted against every cell they bring in or take out.
    let mut busy: BTreeMap<String, usize> = BTreeMap::new();
    let mut moves = 0usize;
    for record in view.placements.values() {
        if let Some(m) = &record.moving {
            moves += 1;
            for c in m.to.iter().chain(&record.members) {
                if !(m.to.contains(c) && record.members.contains(c)) {
                    *busy.entry(c.clone()).or_default() += 1;
                }
            }
        }
    }
    let mut tenants: Vec<&String> = view.tenants.keys().collect();
    tenants.sort();
    // Cells a move still has to bring tenants onto.
    let mut awaited: HashSet<String> = HashSet::new();
    for tenant in tenants {
        let record = view.placement(tenant);
        let pin = view.tenants.get(tenant).and_then(|t| t.pin.as_deref());
        let wanted = target.target_ids(tenant, pin);
        if wanted.is_empty() {
            continue;
        }
        let Some(record) = record else {
            out.actions.push(Action::Commit {
                tenant: tenant.clone(),
                members: wanted,
            });
            continue;
        };
        for leaving in &record.leaving {
            let gone = lifecycle(&leaving.cell).is_none_or(|l| l == Lifecycle::Removed);
            let due = leaving.after_ms <= now_ms && (alive(&leaving.cell) || gone);
            if due && !running.contains(tenant) {
                out.actions.push(Action::Cleanup {
                    tenant: tenant.clone(),
                    cell: leaving.cell.clone(),
                });
            }
        }
        if let Some(m) = &record.moving {
            awaited.extend(m.to.iter().cloned());
            out.pending.push(Pending {
                tenant: tenant.clone(),
                members: record.members.clone(),
                target: m.to.clone(),
                step: Some(m.step.as_str().to_owned()),
            });
            if !running.contains(tenant) {
                out.actions.push(Action::ResumeMove {
                    tenant: tenant.clone(),
                });
            }
            continue;
        }
        if same_set(&record.members, &wanted) {
            if record.members != wanted {
                out.actions.push(Action::Commit {
                    tenant: tenant.clone(),
                    members: wanted,
                });
            }
            continue;
        }
        awaited.extend(wanted.iter().cloned());
        out.pending.push(Pending {
            tenant: tenant.clone(),
            members: record.members.clone(),
            target: wanted.clone(),
            step: None,
        });
        // Cells the move touches: the new ones and the ones that leave.
        let touched: Vec<String> = wanted
            .iter()
            .filter(|c| !record.members.contains(c))
            .chain(record.members.iter().filter(|c| !wanted.contains(c)))
            .cloned()
            .collect();
        if running.contains(tenant) {
            // Started, and not recorded yet: it counts all the same.
            moves += 1;
            for c in touched {
                *busy.entry(c).or_default() += 1;
            }
            continue;
        }
        let destinations_alive = wanted
            .iter()
            .filter(|c| !record.members.contains(c))
            .all(|c| alive(c));
        let source_alive = record.members.iter().any(|c| alive(c));
        let room = moves < throttle.max_moves
            && touched
                .iter()
                .all(|c| busy.get(c).copied().unwrap_or(0) < throttle.max_moves_per_cell);
        if destinations_alive && source_alive && room {
            moves += 1;
            for c in touched {
                *busy.entry(c).or_default() += 1;
            }
            out.actions.push(Action::StartMove {
                tenant: tenant.clone(),
                to: wanted,
            });
        }
    }
    // Deleted tenants: a placement record with no member and no tenant.
    let mut deleted: Vec<(&String, &std::sync::Arc<crate::model::PlacementRecord>)> = view
        .placements
        .iter()
        .filter(|(t, r)| !view.tenants.contains_key(*t) && r.members.is_empty())
        .collect();
    deleted.sort_by_key(|(t, _)| *t);
    for (tenant, record) in deleted {
        if running.contains(tenant) || record.moving.is_some() {
            continue;
        }
        if record.leaving.is_empty() {
            out.actions.push(Action::Forget {
                tenant: tenant.clone(),
            });
        }
        for leaving in &record.leaving {
            let gone = lifecycle(&leaving.cell).is_none_or(|l| l == Lifecycle::Removed);
            if leaving.after_ms <= now_ms && (alive(&leaving.cell) || gone) {
                out.actions.push(Action::Cleanup {
                    tenant: tenant.clone(),
                    cell: leaving.cell.clone(),
                });
            }
        }
    }
    for (id, cell) in &view.cells {
        let Some(state) = cell.lifecycle() else {
            continue;
        };
        let next = match state {
            Lifecycle::Joining if cell.alive.is_some() && !awaited.contains(id) => {
                Some(Lifecycle::Active)
            }
            Lifecycle::Draining
                if !view
                    .placements
                    .values()
                    .any(|r| r.write_set().contains(&id.as_str())) =>
            {
                Some(Lifecycle::Drained)
            }
            _ => None,
        };
        if let Some(lifecycle) = next {
            out.actions.push(Action::SetLifecycle {
                cell: id.clone(),
                lifecycle,
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
