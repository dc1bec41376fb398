//! The target placement: which cells should hold each tenant. The leader
//! compares it with the committed placement and moves the tenants whose
//! committed replica set differs.
//!
//! A consistent-hash ring with virtual nodes over the cells that take
//! tenants (joining or active; alive or not: a cell that is down keeps its
//! place, so its tenants do not move while it restarts),
//! positions hashed with the `hashring` crate's hasher (SipHash with fixed
//! keys, so every router computes the same ring from the same etcd
//! revision). Tenants are placed with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam): oldest first (by creation time, then id), the k-th tenant
//! walks the ring from its hash to the first cell holding fewer than
//! ⌈(1+ε)·k/cells⌉ tenants, the bound when it was created. No cell ends
//! above ⌈(1+ε)·mean⌉, and a new tenant takes its place without moving any
//! older one. Its replica set is that home cell plus the next distinct cells
//! along the ring, preferring regions not yet in the set. A pin in the
//! tenant record overrides the ring.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashring::DefaultHashBuilder;

use crate::watch::ClusterView;

/// Virtual nodes per cell: enough to spread tenants evenly over a few cells.
pub const DEFAULT_VNODES: u32 = 128;
/// Cells in a tenant's replica set.
pub const DEFAULT_REPLICAS: usize = 2;
/// A cell may hold up to (1 + ε) times the mean number of tenants.
pub const DEFAULT_LOAD_EPSILON: f64 = 0.25;

/// A cell that takes tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub cell: Arc<str>,
    pub region: Arc<str>,
}

/// How placement is computed.
#[derive(Debug, Clone, Copy)]
pub struct PlacementSettings {
    pub vnodes: u32,
    pub replicas: usize,
    pub epsilon: f64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        Self {
            vnodes: DEFAULT_VNODES,
            replicas: DEFAULT_REPLICAS,
            epsilon: DEFAULT_LOAD_EPSILON,
        }
    }
}

/// A virtual node as hashed onto the ring.
#[derive(Hash)]
struct VNode<'a> {
    cell: &'a str,
    replica: u32,
}

fn position<T: Hash>(value: &T) -> u64 {
    DefaultHashBuilder.hash_one(value)
}

/// Target placement for one snapshot revision.
#[derive(Debug)]
pub struct Placement {
    pub revision: i64,
    /// Cells that take tenants, by id.
    targets: Vec<Target>,
    /// (position, index into `targets`), sorted.
    ring: Vec<(u64, u32)>,
    /// Tenant → its replica set (indices into `targets`), home first.
    replica_sets: HashMap<String, Vec<u32>>,
    /// Tenants whose home each cell is.
    loads: Vec<usize>,
}

impl Placement {
    pub fn build(view: &ClusterView, settings: PlacementSettings) -> Self {
        let mut targets = Vec::new();
        for (id, cell) in &view.cells {
            let Some(spec) = cell.spec.as_ref().filter(|s| s.lifecycle.takes_tenants()) else {
                continue;
            };
            targets.push(Target {
                cell: Arc::from(id.as_str()),
                region: Arc::from(spec.region.as_str()),
            });
        }
        let mut ring: Vec<(u64, u32)> =
            Vec::with_capacity(targets.len() * settings.vnodes as usize);
        for (i, t) in targets.iter().enumerate() {
            for replica in 0..settings.vnodes {
                ring.push((
                    position(&VNode {
                        cell: &t.cell,
                        replica,
                    }),
                    i as u32,
                ));
            }
        }
        ring.sort_unstable();
        let mut placement = Self {
            revision: view.revision,
            targets,
            ring,
            replica_sets: HashMap::with_capacity(view.tenants.len()),
            loads: Vec::new(),
        };
        placement.loads = vec![0; placement.targets.len()];
        if placement.targets.is_empty() {
            return placement;
        }
        // Oldest first, each under the bound as it stood when the tenant was
        // created: a tenant's place then depends only on the cells and the
        // tenants created before it, so creating one moves no other (its
        // documents would not follow it).
        let mut tenants: Vec<(u64, &String)> = view
            .tenants
            .iter()
            .map(|(id, t)| (t.created_at_ms, id))
            .collect();
        tenants.sort_unstable();
        let cells = placement.targets.len() as f64;
        let epsilon = settings.epsilon.max(0.0);
        for (placed, (_, tenant)) in tenants.into_iter().enumerate() {
            let capacity = ((1.0 + epsilon) * (placed + 1) as f64 / cells)
                .ceil()
                .max(1.0) as usize;
            let set = placement.replica_set(tenant, capacity, settings.replicas.max(1));
            if let Some(&home) = set.first() {
                placement.loads[home as usize] += 1;
            }
            placement.replica_sets.insert(tenant.clone(), set);
        }
        placement
    }

    fn start(&self, tenant: &str) -> usize {
        let h = position(&tenant);
        self.ring.partition_point(|(p, _)| *p < h) % self.ring.len()
    }

    /// Ring order from the tenant's hash, each cell once.
    fn walk(&self, tenant: &str) -> Vec<u32> {
        let mut seen = vec![false; self.targets.len()];
        let mut order = Vec::with_capacity(self.targets.len());
        let start = self.start(tenant);
        for k in 0..self.ring.len() {
            let cell = self.ring[(start + k) % self.ring.len()].1;
            if !seen[cell as usize] {
                seen[cell as usize] = true;
                order.push(cell);
                if order.len() == self.targets.len() {
                    break;
                }
            }
        }
        order
    }

    fn replica_set(&self, tenant: &str, capacity: usize, replicas: usize) -> Vec<u32> {
        let order = self.walk(tenant);
        let home = order
            .iter()
            .copied()
            .find(|&c| self.loads[c as usize] < capacity)
            .unwrap_or(order[0]);
        let mut set = vec![home];
        let after_home: Vec<u32> = order
            .iter()
            .copied()
            .skip_while(|&c| c != home)
            .skip(1)
            .chain(order.iter().copied().take_while(|&c| c != home))
            .collect();
        while set.len() < replicas.min(self.targets.len()) {
            let regions: Vec<&str> = set
                .iter()
                .map(|&c| &*self.targets[c as usize].region)
                .collect();
            let next = after_home
                .iter()
                .copied()
                .filter(|c| !set.contains(c))
                .find(|&c| !regions.contains(&&*self.targets[c as usize].region))
                .or_else(|| after_home.iter().copied().find(|c| !set.contains(c)));
            match next {
                Some(c) => set.push(c),
                None => break,
            }
        }
        set
    }

    /// Home tenants per cell id.
    pub fn loads(&self) -> impl Iterator<Item = (&str, usize)> {
        self.targets
            .iter()
            .zip(&self.loads)
            .map(|(t, &n)| (&*t.cell, n))
    }

    fn target(&self, cell: &str) -> Option<&Target> {
        self.targets.iter().find(|t| &*t.cell == cell)
    }

    /// The tenant's target replica set, home first: the pin if it names
    /// cells that take tenants, else its place on the ring.
    pub fn replicas_of(&self, tenant: &str, pin: Option<&[String]>) -> Vec<Target> {
        if let Some(pin) = pin {
            let pinned: Vec<Target> = pin.iter().filter_map(|c| self.target(c)).cloned().collect();
            if !pinned.is_empty() {
                return pinned;
            }
        }
        match self.replica_sets.get(tenant) {
            Some(set) => set
                .iter()
                .map(|&c| self.targets[c as usize].clone())
                .collect(),
            // A tenant newer than this snapshot: its ring walk, unbounded.
            None if !self.targets.is_empty() => self
                .walk(tenant)
                .into_iter()
                .take(DEFAULT_REPLICAS)
                .map(|c| self.targets[c as usize].clone())
                .collect(),
            None => Vec::new(),
        }
    }

    /// The target replica set as cell ids.
    pub fn target_ids(&self, tenant: &str, pin: Option<&[String]>) -> Vec<String> {
        self.replicas_of(tenant, pin)
            .into_iter()
            .map(|t| t.cell.to_string())
            .collect()
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
