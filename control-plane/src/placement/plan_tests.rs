//! The leader's decisions on hand-made snapshots.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::model::{
    CellAlive, CellSpec, Leaving, Lifecycle, Move, MoveStep, PlacementRecord, TenantRecord,
};
use crate::placement::ring::PlacementSettings;
use crate::watch::{CellView, ClusterView};

fn add_cell(v: &mut ClusterView, id: &str, region: &str, lifecycle: Lifecycle, alive: bool) {
    v.cells.insert(
        id.into(),
        CellView {
            spec: Some(CellSpec {
                region: region.into(),
                endpoint: format!("http://{id}"),
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

fn add_tenants(v: &mut ClusterView, n: usize) {
    for i in 0..n {
        let id = format!("t{i:03}");
        v.tenants.insert(
            id.clone(),
            Arc::new(TenantRecord {
                id,
                api_keys: Vec::new(),
                plan: "standard".into(),
                pin: None,
                cache_threshold: None,
                limits: None,
                fallbacks: None,
                hybrid_retrieval: false,
                created_at_ms: i as u64,
            }),
        );
    }
}

fn record(members: &[&str]) -> PlacementRecord {
    PlacementRecord {
        members: members.iter().map(|c| c.to_string()).collect(),
        epoch: 1,
        moving: None,
        leaving: Vec::new(),
        updated_at_ms: 0,
    }
}

fn three_cells() -> ClusterView {
    let mut v = ClusterView::default();
    add_cell(&mut v, "a", "eu", Lifecycle::Active, true);
    add_cell(&mut v, "b", "us", Lifecycle::Active, true);
    add_cell(&mut v, "c", "eu", Lifecycle::Active, true);
    v
}

fn run(v: &ClusterView, running: &HashSet<String>, now_ms: u64) -> Plan {
    let target = Placement::build(v, PlacementSettings::default());
    plan(v, &target, running, Throttle::default(), now_ms)
}

/// Commits every planned `Commit` into the snapshot, as the leader would.
fn commit_all(v: &mut ClusterView) {
    for action in run(v, &HashSet::new(), 0).actions {
        if let Action::Commit { tenant, members } = action {
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            v.placements.insert(tenant, Arc::new(record(&refs)));
        }
    }
}

/// Moves started by `p` that bring `cell` in or take it out.
fn touching(v: &ClusterView, p: &Plan, cell: &str) -> usize {
    p.actions
        .iter()
        .filter(|a| match a {
            Action::StartMove { tenant, to } => {
                let members = &v.placements[tenant].members;
                let cell = cell.to_owned();
                members.contains(&cell) != to.contains(&cell)
            }
            _ => false,
        })
        .count()
}

#[test]
fn new_tenants_are_committed_to_their_target_at_once() {
    let mut v = three_cells();
    add_tenants(&mut v, 30);
    let p = run(&v, &HashSet::new(), 0);
    let commits = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Commit { members, .. } if members.len() == 2))
        .count();
    assert_eq!(commits, 30);
    assert!(p.pending.is_empty());
    commit_all(&mut v);
    assert!(run(&v, &HashSet::new(), 0).actions.is_empty());
}

#[test]
fn a_joining_cell_gets_its_share_by_throttled_moves_then_turns_active() {
    let mut v = three_cells();
    add_tenants(&mut v, 60);
    commit_all(&mut v);
    add_cell(&mut v, "d", "us", Lifecycle::Joining, true);
    let p = run(&v, &HashSet::new(), 0);
    // "d" takes part in at most two moves at once, and so does every other
    // cell (bounded loads move a few tenants between the old cells too).
    for cell in ["a", "b", "c", "d"] {
        assert!(touching(&v, &p, cell) <= 2, "{cell}: {:?}", p.actions);
    }
    assert_eq!(touching(&v, &p, "d"), 2, "{:?}", p.actions);
    let onto_d = p
        .pending
        .iter()
        .filter(|m| m.target.contains(&"d".to_owned()))
        .count();
    assert!(onto_d >= 10, "{onto_d} tenants wait for d");
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::SetLifecycle { .. })),
        "d must stay joining while tenants wait for it"
    );
    // Once every move is committed, "d" is active.
    for m in &p.pending {
        let refs: Vec<&str> = m.target.iter().map(String::as_str).collect();
        v.placements
            .insert(m.tenant.clone(), Arc::new(record(&refs)));
    }
    let p = run(&v, &HashSet::new(), 0);
    assert!(p.actions.contains(&Action::SetLifecycle {
        cell: "d".into(),
        lifecycle: Lifecycle::Active
    }));
    // What is left only reorders members: nothing to copy.
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a, Action::Commit { .. } | Action::SetLifecycle { .. })),
        "{:?}",
        p.actions
    );
}

#[test]
fn moves_under_way_count_against_the_throttle_and_resume_once() {
    let mut v = three_cells();
    add_tenants(&mut v, 60);
    commit_all(&mut v);
    add_cell(&mut v, "d", "us", Lifecycle::Joining, true);
    let first = run(&v, &HashSet::new(), 0);
    // Two moves recorded in etcd, as started by a leader that then died.
    for action in &first.actions {
        if let Action::StartMove { tenant, to } = action {
            let mut r = PlacementRecord::clone(&v.placements[tenant]);
            r.moving = Some(Move::new(to.clone(), MoveStep::Copy, 0));
            v.placements.insert(tenant.clone(), Arc::new(r));
        }
    }
    let p = run(&v, &HashSet::new(), 0);
    let resumed = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::ResumeMove { .. }))
        .count();
    let started = first
        .actions
        .iter()
        .filter(|a| matches!(a, Action::StartMove { .. }))
        .count();
    assert_eq!(resumed, started);
    let mut before = v.clone();
    for action in &first.actions {
        if let Action::StartMove { tenant, .. } = action {
            // Judge "touching" against the members before the moves.
            let mut r = PlacementRecord::clone(&before.placements[tenant]);
            r.moving = None;
            before.placements.insert(tenant.clone(), Arc::new(r));
        }
    }
    assert_eq!(
        touching(&before, &p, "d"),
        0,
        "d already takes part in two moves: {:?}",
        p.actions
    );
    // The leader working on them: nothing to do twice.
    let running: HashSet<String> = first
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::StartMove { tenant, .. } => Some(tenant.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !run(&v, &running, 0)
            .actions
            .iter()
            .any(|a| matches!(a, Action::StartMove { .. } | Action::ResumeMove { .. }))
    );
}

#[test]
fn no_move_starts_into_a_cell_that_is_down() {
    let mut v = three_cells();
    add_tenants(&mut v, 30);
    commit_all(&mut v);
    add_cell(&mut v, "d", "us", Lifecycle::Joining, false);
    let p = run(&v, &HashSet::new(), 0);
    assert!(p.pending.iter().any(|m| m.target.contains(&"d".to_owned())));
    assert_eq!(touching(&v, &p, "d"), 0, "{:?}", p.actions);
}

#[test]
fn a_draining_cell_is_drained_once_no_tenant_is_left_on_it() {
    let mut v = three_cells();
    add_tenants(&mut v, 20);
    commit_all(&mut v);
    if let Some(spec) = v.cells.get_mut("c").and_then(|c| c.spec.as_mut()) {
        spec.lifecycle = Lifecycle::Draining;
    }
    let p = run(&v, &HashSet::new(), 0);
    assert!(
        p.pending
            .iter()
            .all(|m| m.members.contains(&"c".to_owned()))
    );
    assert!(!p.pending.is_empty());
    assert!(!p.actions.contains(&Action::SetLifecycle {
        cell: "c".into(),
        lifecycle: Lifecycle::Drained
    }));
    for m in &p.pending {
        let refs: Vec<&str> = m.target.iter().map(String::as_str).collect();
        let mut r = record(&refs);
        r.leaving.push(Leaving {
            cell: "c".into(),
            after_ms: 1_000,
        });
        v.placements.insert(m.tenant.clone(), Arc::new(r));
    }
    let p = run(&v, &HashSet::new(), 0);
    assert!(p.actions.contains(&Action::SetLifecycle {
        cell: "c".into(),
        lifecycle: Lifecycle::Drained
    }));
    // Its points go once the grace period is over, not before.
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::Cleanup { .. }))
    );
    let later = run(&v, &HashSet::new(), 1_000);
    let cleanups = later
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Cleanup { cell, .. } if cell == "c"))
        .count();
    assert_eq!(cleanups, p_pending_len(&v));
}

fn p_pending_len(v: &ClusterView) -> usize {
    v.placements
        .values()
        .filter(|r| !r.leaving.is_empty())
        .count()
}

#[test]
fn a_pin_is_a_move_like_any_other() {
    let mut v = three_cells();
    add_tenants(&mut v, 1);
    commit_all(&mut v);
    let mut t = TenantRecord::clone(&v.tenants["t000"]);
    let current = v.placements["t000"].members.clone();
    let other = ["a", "b", "c"]
        .into_iter()
        .find(|c| !current.contains(&c.to_string()))
        .unwrap();
    t.pin = Some(vec![other.to_owned()]);
    v.tenants.insert("t000".into(), Arc::new(t));
    let p = run(&v, &HashSet::new(), 0);
    assert_eq!(
        p.actions,
        vec![Action::StartMove {
            tenant: "t000".into(),
            to: vec![other.to_owned()]
        }]
    );
}

#[test]
fn a_deleted_tenant_is_cleaned_off_its_cells_then_forgotten() {
    let mut v = three_cells();
    let mut gone = record(&[]);
    gone.leaving = vec![
        Leaving {
            cell: "a".into(),
            after_ms: 100,
        },
        Leaving {
            cell: "b".into(),
            after_ms: 100,
        },
    ];
    v.placements
        .insert("deleted".into(), Arc::new(gone.clone()));
    // Not before the grace period, and never a commit for it.
    assert!(run(&v, &HashSet::new(), 50).actions.is_empty());
    let actions = run(&v, &HashSet::new(), 100).actions;
    assert_eq!(
        actions,
        vec![
            Action::Cleanup {
                tenant: "deleted".into(),
                cell: "a".into()
            },
            Action::Cleanup {
                tenant: "deleted".into(),
                cell: "b".into()
            },
        ]
    );
    // Nothing while a clean-up of it runs.
    let running: HashSet<String> = ["deleted".to_owned()].into();
    assert!(run(&v, &running, 100).actions.is_empty());
    // Once no cell holds its points, its record goes.
    gone.leaving.clear();
    v.placements.insert("deleted".into(), Arc::new(gone));
    assert_eq!(
        run(&v, &HashSet::new(), 100).actions,
        vec![Action::Forget {
            tenant: "deleted".into()
        }]
    );
    // A cell it was on drains without waiting for it.
    add_cell(&mut v, "a", "eu", Lifecycle::Draining, true);
    assert!(
        run(&v, &HashSet::new(), 100)
            .actions
            .contains(&Action::SetLifecycle {
                cell: "a".into(),
                lifecycle: Lifecycle::Drained
            })
    );
}
