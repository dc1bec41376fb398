//! The vector tier: an in-process index per tenant over that tenant's cache
//! entries (Redis 7.0 has no vector search). Vectors are stored contiguously
//! so a search is one linear pass over memory; a search only ever reads the
//! asking tenant's index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One tenant's entries.
#[derive(Debug, Default)]
struct TenantIndex {
    ids: Vec<String>,
    created: Vec<u64>,
    /// Row-major, `ids.len() × dims`.
    vectors: Vec<f32>,
    positions: HashMap<String, usize>,
}

impl TenantIndex {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn vector(&self, i: usize, dims: usize) -> &[f32] {
        &self.vectors[i * dims..(i + 1) * dims]
    }
}

/// Every tenant's index, with the memory they take.
#[derive(Debug)]
pub struct VectorTier {
    dims: usize,
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>,
    bytes: AtomicUsize,
}

fn entry_bytes(dims: usize, id: &str) -> usize {
    dims * 4 + id.len() * 2 + 64
}

impl VectorTier {
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            tenants: RwLock::default(),
            bytes: AtomicUsize::new(0),
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Approximate memory held by all indexes.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.tenants.read().is_ok_and(|t| t.contains_key(tenant))
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<RwLock<TenantIndex>>> {
        self.tenants.read().ok()?.get(tenant).cloned()
    }

    /// Replaces a tenant's whole index (after loading it from Redis).
    pub fn install(&self, tenant: &str, entries: Vec<(String, u64, Vec<f32>)>) {
        let mut index = TenantIndex::default();
        for (id, created, v) in entries {
            if v.len() != self.dims || index.positions.contains_key(&id) {
                continue;
            }
            index.positions.insert(id.clone(), index.ids.len());
            index.ids.push(id);
            index.created.push(created);
            index.vectors.extend_from_slice(&v);
        }
        let added: usize = index.ids.iter().map(|id| entry_bytes(self.dims, id)).sum();
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        if let Some(old) = tenants.insert(tenant.to_owned(), Arc::new(RwLock::new(index)))
            && let Ok(old) = old.read()
        {
            let removed: usize = old.ids.iter().map(|id| entry_bytes(self.dims, id)).sum();
            self.bytes.fetch_sub(removed, Ordering::Relaxed);
        }
        self.bytes.fetch_add(added, Ordering::Relaxed);
    }

    /// Adds or replaces one entry of a tenant whose index exists.
    pub fn upsert(&self, tenant: &str, id: &str, created: u64, vector: &[f32]) {
        if vector.len() != self.dims {
            return;
        }
        let index = match self.tenant(tenant) {
            Some(i) => i,
            None => {
                self.install(tenant, Vec::new());
                let Some(i) = self.tenant(tenant) else { return };
                i
            }
        };
        let Ok(mut index) = index.write() else { return };
        if let Some(&pos) = index.positions.get(id) {
            index.created[pos] = created;
            index.vectors[pos * self.dims..(pos + 1) * self.dims].copy_from_slice(vector);
            return;
        }
        let pos = index.ids.len();
        index.positions.insert(id.to_owned(), pos);
        index.ids.push(id.to_owned());
        index.created.push(created);
        index.vectors.extend_from_slice(vector);
        self.bytes
            .fetch_add(entry_bytes(self.dims, id), Ordering::Relaxed);
    }

    /// Removes one entry.
    pub fn remove(&self, tenant: &str, id: &str) {
        let Some(index) = self.tenant(tenant) else {
            return;
        };
        let Ok(mut index) = index.write() else { return };
        let Some(pos) = index.positions.remove(id) else {
            return;
        };
        let last = index.ids.len() - 1;
        let dims = self.dims;
        if pos != last {
            index.ids.swap(pos, last);
            index.created.swap(pos, last);
            let (head, tail) = index.vectors.split_at_mut(last * dims);
            head[pos * dims..(pos + 1) * dims].copy_from_slice(&tail[..dims]);
            let moved = index.ids[pos].clone();
            index.positions.insert(moved, pos);
        }
        index.ids.pop();
        index.created.pop();
        index.vectors.truncate(last * dims);
        self.bytes
            .fetch_sub(entry_bytes(self.dims, id), Ordering::Relaxed);
    }

    /// Forgets a tenant's whole index.
    pub fn drop_tenant(&self, tenant: &str) {
        let Ok(mut tenants) = self.tenants.write() else {
            return;
        };
        if let Some(old) = tenants.remove(tenant)
            && let Ok(old) = old.read()
        {
            let removed: usize = old.ids.iter().map(|id| entry_bytes(self.dims, id)).sum();
            self.bytes.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Up to `k` entries of `tenant` with similarity ≥ `floor`, best first,
    /// and the best similarity seen (even below the floor).
    pub fn search(
        &self,
        tenant: &str,
        query: &[f32],
        floor: f32,
        k: usize,
    ) -> (Option<f32>, Vec<(f32, String)>) {
        let Some(index) = self.tenant(tenant) else {
            return (None, Vec::new());
        };
        let Ok(index) = index.read() else {
            return (None, Vec::new());
        };
        let mut best: Option<f32> = None;
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for i in 0..index.len() {
            let s = dot(index.vector(i, self.dims), query);
            if best.is_none_or(|b| s > b) {
                best = Some(s);
            }
            if s < floor {
                continue;
            }
            if top.len() < k || top.last().is_some_and(|(w, _)| s > *w) {
                let at = top.partition_point(|(t, _)| *t >= s);
                top.insert(at, (s, i));
                top.truncate(k);
            }
        }
        (
            best,
            top.into_iter()
                .map(|(s, i)| (s, index.ids[i].clone()))
                .collect(),
        )
    }

    /// The stored vector of an entry.
    pub fn vector_of(&self, tenant: &str, id: &str) -> Option<Vec<f32>> {
        let index = self.tenant(tenant)?;
        let index = index.read().ok()?;
        let pos = *index.positions.get(id)?;
        Some(index.vector(pos, self.dims).to_vec())
    }

    /// The `n` oldest entries across all tenants, oldest first.
    pub fn oldest(&self, n: usize) -> Vec<(String, String, u64)> {
        let Ok(tenants) = self.tenants.read() else {
            return Vec::new();
        };
        let mut all: Vec<(u64, String, String)> = Vec::new();
        for (tenant, index) in tenants.iter() {
            let Ok(index) = index.read() else { continue };
            for (i, id) in index.ids.iter().enumerate() {
                all.push((index.created[i], tenant.clone(), id.clone()));
            }
        }
        all.sort_unstable();
        all.into_iter()
            .take(n)
            .map(|(c, t, id)| (t, id, c))
            .collect()
    }

    pub fn tenant_len(&self, tenant: &str) -> usize {
        self.tenant(tenant)
            .and_then(|i| i.read().ok().map(|i| i.len()))
            .unwrap_or(0)
    }
}

/// Dot product, written so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    #[test]
    fn searches_only_the_tenant() {
        let tier = VectorTier::new(2);
        tier.upsert("a", "1", 1, &v(1.0, 0.0));
        tier.upsert("b", "2", 1, &v(1.0, 0.0));
        let (_, hits) = tier.search("a", &v(1.0, 0.0), 0.9, 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1, "1");
        assert!(tier.search("c", &v(1.0, 0.0), 0.0, 5).1.is_empty());
    }

    #[test]
    fn ranks_and_removes() {
        let tier = VectorTier::new(2);
        tier.upsert("a", "far", 1, &v(0.0, 1.0));
        tier.upsert("a", "near", 2, &v(1.0, 0.1));
        tier.upsert("a", "exact", 3, &v(1.0, 0.0));
        let (best, hits) = tier.search("a", &v(1.0, 0.0), 0.5, 5);
        assert!(best.unwrap() > 0.99);
        assert_eq!(
            hits.iter().map(|h| h.1.as_str()).collect::<Vec<_>>(),
            ["exact", "near"]
        );
        tier.remove("a", "exact");
        let (_, hits) = tier.search("a", &v(1.0, 0.0), 0.5, 5);
        assert_eq!(hits[0].1, "near");
        assert_eq!(tier.vector_of("a", "far").unwrap(), v(0.0, 1.0));
        assert_eq!(tier.oldest(1)[0].1, "far");
        let before = tier.bytes();
        tier.drop_tenant("a");
        assert!(tier.bytes() < before);
        assert_eq!(tier.tenant_len("a"), 0);
    }
}
