//! Properties of placement over many random configurations (seeded, so a
//! failure reproduces): balance, movement on adding or removing a cell,
//! none on creating tenants, determinism across routers, replica sets.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::model::{CellAlive, CellSpec, Lifecycle, TenantRecord};
use crate::watch::{CellView, ClusterView};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn cell(region: &str, id: &str) -> CellView {
    CellView {
        spec: Some(CellSpec {
            region: region.into(),
            endpoint: format!("http://{id}"),
            template: "t".into(),
            lifecycle: Lifecycle::Active,
        }),
        alive: Some(CellAlive {
            endpoint: format!("http://{id}"),
            started_at_ms: 0,
        }),
    }
}

fn tenant(id: &str) -> Arc<TenantRecord> {
    Arc::new(TenantRecord {
        id: id.into(),
        api_keys: Vec::new(),
        plan: "standard".into(),
        pin: None,
        cache_threshold: None,
        limits: None,
        fallbacks: None,
        hybrid_retrieval: false,
        created_at_ms: 0,
    })
}

fn view(cells: &[String], tenants: usize) -> ClusterView {
    let mut v = ClusterView::default();
    for c in cells {
        // The region follows from the name, so shuffled lists describe the same cells.
        let odd = c.bytes().last().is_some_and(|b| b % 2 == 1);
        v.cells
            .insert(c.clone(), cell(if odd { "us" } else { "eu" }, c));
    }
    for t in 0..tenants {
        let id = format!("tenant-{t}");
        v.tenants.insert(id.clone(), tenant(&id));
    }
    v
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cell-{i:02}")).collect()
}

fn homes(p: &Placement, tenants: usize) -> Vec<Arc<str>> {
    (0..tenants)
        .map(|t| p.replicas_of(&format!("tenant-{t}"), None)[0].cell.clone())
        .collect()
}

#[test]
fn no_cell_exceeds_the_load_bound() {
    let tenants = 10_000;
    for cells in [3, 5, 8, 13, 21, 34, 50] {
        let p = Placement::build(&view(&names(cells), tenants), PlacementSettings::default());
        let mean = tenants as f64 / cells as f64;
        let bound = ((1.0 + DEFAULT_LOAD_EPSILON) * mean).ceil() as usize;
        let max = p.loads().map(|(_, n)| n).max().unwrap();
        assert!(max <= bound, "{cells} cells: max {max} > bound {bound}");
        let total: usize = p.loads().map(|(_, n)| n).sum();
        assert_eq!(total, tenants);
        eprintln!("{cells:>2} cells: max/mean {:.3}", max as f64 / mean);
    }
}

#[test]
fn adding_or_removing_a_cell_moves_about_one_nth() {
    let tenants = 10_000;
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..12 {
        let n = rng.random_range(3..=50);
        let mut all = names(n + 1);
        all.shuffle(&mut rng);
        let before = Placement::build(&view(&all[..n], tenants), PlacementSettings::default());
        let after = Placement::build(&view(&all, tenants), PlacementSettings::default());
        let moved = homes(&before, tenants)
            .iter()
            .zip(homes(&after, tenants))
            .filter(|(a, b)| **a != *b)
            .count() as f64
            / tenants as f64;
        let ideal = 1.0 / (n + 1) as f64;
        eprintln!(
            "{n} -> {} cells: moved {moved:.4} (ideal {ideal:.4})",
            n + 1
        );
        // Bounded loads add some cascading moves on top of the ideal.
        assert!(
            moved <= 2.5 * ideal + 0.01,
            "{n} -> {} cells moved {moved}",
            n + 1
        );
        // Removal is the same pair of placements read the other way round.
    }
}

/// Every tenant's replica set, by tenant id.
fn replica_sets(p: &Placement, view: &ClusterView) -> BTreeMap<String, Vec<Arc<str>>> {
    view.tenants
        .keys()
        .map(|t| {
            let set = p.replicas_of(t, None).into_iter().map(|t| t.cell).collect();
            (t.clone(), set)
        })
        .collect()
}

#[test]
fn creating_tenants_moves_no_existing_tenant() {
    let mut rng = StdRng::seed_from_u64(13);
    for _ in 0..12 {
        let cells = names(rng.random_range(2..=20));
        let existing = rng.random_range(1..2000);
        let mut v = ClusterView::default();
        for c in &cells {
            v.cells.insert(c.clone(), cell("eu", c));
        }
        // Same creation times now and then (ties go by id), and ids that sort
        // anywhere among the existing ones.
        let mut created_at = 0;
        let mut add = |v: &mut ClusterView, rng: &mut StdRng| {
            created_at += rng.random_range(0..3);
            let id = format!("t{:08x}", rng.random::<u32>());
            let mut t = TenantRecord::clone(&tenant(&id));
            t.created_at_ms = created_at;
            v.tenants.insert(id, Arc::new(t));
        };
        for _ in 0..existing {
            add(&mut v, &mut rng);
        }
        let before = Placement::build(&v, PlacementSettings::default());
        let sets_before = replica_sets(&before, &v);
        let new = rng.random_range(1..200);
        for _ in 0..new {
            add(&mut v, &mut rng);
        }
        let after = Placement::build(&v, PlacementSettings::default());
        let sets_after = replica_sets(&after, &v);
        let moved = sets_before
            .iter()
            .filter(|&(id, set)| sets_after.get(id) != Some(set))
            .count();
        assert_eq!(
            moved,
            0,
            "{} cells, {existing} tenants, {new} created: {moved} moved",
            cells.len()
        );
        // The newcomers still keep every cell within the bound.
        let bound = ((1.0 + DEFAULT_LOAD_EPSILON) * v.tenants.len() as f64 / cells.len() as f64)
            .ceil() as usize;
        let max = after.loads().map(|(_, n)| n).max().unwrap_or(0);
        assert!(max <= bound, "max {max} > bound {bound}");
    }
}

#[test]
fn every_replica_places_alike() {
    let mut rng = StdRng::seed_from_u64(11);
    let cells = names(9);
    let a = Placement::build(&view(&cells, 2000), PlacementSettings::default());
    let mut shuffled = cells.clone();
    shuffled.shuffle(&mut rng);
    let b = Placement::build(&view(&shuffled, 2000), PlacementSettings::default());
    for t in 0..2000 {
        let tenant = format!("tenant-{t}");
        assert_eq!(a.replicas_of(&tenant, None), b.replicas_of(&tenant, None));
    }
}

#[test]
fn replica_sets_are_distinct_and_span_regions() {
    let p = Placement::build(&view(&names(6), 3000), PlacementSettings::default());
    for t in 0..3000 {
        let set = p.replicas_of(&format!("tenant-{t}"), None);
        assert_eq!(set.len(), DEFAULT_REPLICAS);
        let ids: HashSet<_> = set.iter().map(|t| t.cell.clone()).collect();
        assert_eq!(ids.len(), DEFAULT_REPLICAS);
        let regions: HashSet<_> = set.iter().map(|t| t.region.clone()).collect();
        assert_eq!(regions.len(), 2, "{set:?}");
    }
}

#[test]
fn pin_overrides_the_ring() {
    let p = Placement::build(&view(&names(3), 10), PlacementSettings::default());
    let pinned = p.replicas_of("tenant-1", Some(&["cell-02".to_owned()]));
    assert_eq!(pinned.len(), 1);
    assert_eq!(&*pinned[0].cell, "cell-02");
    // A pin to cells that take no tenants falls back to the ring.
    assert_eq!(
        p.replicas_of("tenant-1", Some(&["gone".to_owned()])).len(),
        2
    );
}

#[test]
fn a_dead_cell_keeps_its_tenants() {
    let cells = names(4);
    let mut v = view(&cells, 400);
    let before = Placement::build(&v, PlacementSettings::default());
    if let Some(c) = v.cells.get_mut("cell-01") {
        c.alive = None;
    }
    let after = Placement::build(&v, PlacementSettings::default());
    for t in 0..400 {
        let tenant = format!("tenant-{t}");
        // Nobody moves while a cell restarts.
        assert_eq!(
            before.replicas_of(&tenant, None),
            after.replicas_of(&tenant, None)
        );
    }
}

#[test]
fn cells_that_drain_or_left_take_no_tenants() {
    let cells = names(5);
    let mut v = view(&cells, 500);
    for (id, lifecycle) in [
        ("cell-01", Lifecycle::Draining),
        ("cell-02", Lifecycle::Drained),
        ("cell-03", Lifecycle::Removed),
    ] {
        if let Some(spec) = v.cells.get_mut(id).and_then(|c| c.spec.as_mut()) {
            spec.lifecycle = lifecycle;
        }
    }
    if let Some(spec) = v.cells.get_mut("cell-04").and_then(|c| c.spec.as_mut()) {
        spec.lifecycle = Lifecycle::Joining;
    }
    let p = Placement::build(&v, PlacementSettings::default());
    for t in 0..500 {
        let set = p.target_ids(&format!("tenant-{t}"), None);
        assert_eq!(set.len(), 2);
        assert!(
            set.iter().all(|c| c == "cell-00" || c == "cell-04"),
            "{set:?}"
        );
    }
}

#[test]
fn random_cluster_shapes_stay_consistent() {
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..20 {
        let cells = names(rng.random_range(1..=12));
        let tenants = rng.random_range(0..500);
        let p = Placement::build(&view(&cells, tenants), PlacementSettings::default());
        for t in 0..tenants {
            let set = p.replicas_of(&format!("tenant-{t}"), None);
            let ids: HashSet<_> = set.iter().map(|t| t.cell.clone()).collect();
            assert_eq!(ids.len(), DEFAULT_REPLICAS.min(cells.len()));
            assert_eq!(set.len(), ids.len());
        }
    }
}
