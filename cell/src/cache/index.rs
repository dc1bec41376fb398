//! The vector tier: an in-process index per tenant over that tenant's cache
//! entries (Redis 7.0 has no vector search). Vectors are stored contiguously
//! so a search is one linear pass over memory; a search only ever reads the
//! asking tenant's index.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::ivf::{Ivf, RESCORE};

/// Tenants with fewer entries are scanned whole: below this a full scan is
/// faster than probing lists.
pub const PARTITION_MIN_ENTRIES: usize = 8_192;

/// One tenant's entries.
#[derive(Debug, Default)]
struct TenantIndex {
    ids: Vec<String>,
    created: Vec<u64>,
    /// Row-major, `ids.len() × dims`.
    vectors: Vec<f32>,
    positions: HashMap<String, usize>,
    /// Lists over rows `0..ivf.covered()` once the tenant is large.
    ivf: Option<Ivf>,
    /// Counts removals, so a partition built from a snapshot is installed
    /// only if no row moved meanwhile.
    removals: u64,
    building: bool,
}

impl TenantIndex {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn needs_partition(&self) -> bool {
        let len = self.len();
        !self.building
            && len >= PARTITION_MIN_ENTRIES
            && self
                .ivf
                .as_ref()
                .is_none_or(|ivf| len - ivf.covered().min(len) > (ivf.covered() / 8).max(4096))
    }

    #[inline(always)]
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
        drop(tenants);
        self.maybe_partition(tenant);
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
            if let Some(ivf) = index.ivf.as_mut() {
                ivf.updated(pos, vector);
            }
            return;
        }
        let pos = index.ids.len();
        index.positions.insert(id.to_owned(), pos);
        index.ids.push(id.to_owned());
        index.created.push(created);
        index.vectors.extend_from_slice(vector);
        self.bytes
            .fetch_add(entry_bytes(self.dims, id), Ordering::Relaxed);
        let grow = index.needs_partition();
        drop(index);
        if grow {
            self.maybe_partition(tenant);
        }
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
        let TenantIndex { ivf, vectors, .. } = &mut *index;
        if let Some(ivf) = ivf.as_mut() {
            ivf.swap_removed(pos, last, &vectors[pos * dims..(pos + 1) * dims]);
        }
        index.removals += 1;
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
        let rows: Vec<usize> = match &index.ivf {
            None => (0..index.len()).collect(),
            Some(ivf) => {
                // Pre-score the probed lists by code, keep the best few,
                // and add the rows that joined after the build.
                ivf.prescore(query, RESCORE)
                    .into_iter()
                    .map(|r| r as usize)
                    .chain(ivf.covered().min(index.len())..index.len())
                    .collect()
            }
        };
        let (best, top) = crate::simd::vectorized(Rescore {
            index: &index,
            rows,
            query,
            dims: self.dims,
            floor,
            k,
        });
        (
            best,
            top.into_iter()
                .map(|(s, i)| (s, index.ids[i].clone()))
                .collect(),
        )
    }

    /// Makes sure the tenant's partition is built: waits for a build under
    /// way, or builds on this thread. For benches and tests.
    pub fn partition_now(&self, tenant: &str) {
        let Some(index) = self.tenant(tenant) else {
            return;
        };
        while index.read().is_ok_and(|i| i.building) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if index
            .read()
            .is_ok_and(|i| i.ivf.is_none() && i.len() >= PARTITION_MIN_ENTRIES)
        {
            build_partition(&index, self.dims);
        }
    }

    /// Starts a background partition build if the tenant has grown enough.
    fn maybe_partition(&self, tenant: &str) {
        let Some(index) = self.tenant(tenant) else {
            return;
        };
        let start = match index.write() {
            Ok(mut i) if i.needs_partition() => {
                i.building = true;
                true
            }
            _ => false,
        };
        if start {
            let dims = self.dims;
            std::thread::spawn(move || build_partition(&index, dims));
        }
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

/// Partitions a snapshot of the tenant's vectors outside the lock, then
/// installs the result if no row moved meanwhile (rows appended meanwhile
/// stay outside the lists and are scanned in full).
fn build_partition(index: &RwLock<TenantIndex>, dims: usize) {
    let snapshot = index.read().ok().map(|i| (i.vectors.clone(), i.removals));
    let Some((vectors, removals)) = snapshot else {
        return;
    };
    let ivf = Ivf::build(&vectors, dims);
    if let Ok(mut i) = index.write() {
        if i.removals == removals {
            i.ivf = Some(ivf);
        }
        i.building = false;
    }
}

/// Exact similarity of the candidate rows: the best seen, and the `k` best
/// at or above `floor`. Run through [`crate::simd::vectorized`]: for a small
/// tenant the candidates are all its rows.
struct Rescore<'a> {
    index: &'a TenantIndex,
    rows: Vec<usize>,
    query: &'a [f32],
    dims: usize,
    floor: f32,
    k: usize,
}

impl pulp::WithSimd for Rescore<'_> {
    type Output = (Option<f32>, Vec<(f32, usize)>);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        let mut best: Option<f32> = None;
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(self.k + 1);
        for i in self.rows {
            let s = dot(self.index.vector(i, self.dims), self.query);
            if best.is_none_or(|b| s > b) {
                best = Some(s);
            }
            if s < self.floor {
                continue;
            }
            if top.len() < self.k || top.last().is_some_and(|(w, _)| s > *w) {
                let at = top.partition_point(|(t, _)| *t >= s);
                top.insert(at, (s, i));
                top.truncate(self.k);
            }
        }
        (best, top)
    }
}

/// Dot product, written so the compiler vectorises it: sixteen independent
/// partial sums (two AVX registers, or four SSE ones).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_tail) = a.as_chunks::<16>();
    let (b_chunks, b_tail) = b.as_chunks::<16>();
    let mut acc = [0f32; 16];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_products_match_at_every_length() {
        for n in [0usize, 1, 15, 16, 17, 383, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-3, "length {n}");
        }
    }

    fn v(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    fn random_unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    /// A vector at cosine ≈ 0.95 from `v`.
    fn near(v: &[f32], seed: u64) -> Vec<f32> {
        let noise = random_unit(seed, v.len());
        let mut out: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.33 * b).collect();
        let n = out.iter().map(|a| a * a).sum::<f32>().sqrt();
        out.iter_mut().for_each(|a| *a /= n);
        out
    }

    #[test]
    fn partitioned_search_finds_near_duplicates_and_survives_changes() {
        let dims = 64;
        let n = 30_000;
        assert!(n > PARTITION_MIN_ENTRIES);
        let tier = VectorTier::new(dims);
        let rows: Vec<(String, u64, Vec<f32>)> = (0..n as u64)
            .map(|i| (format!("{i}"), i, random_unit(i, dims)))
            .collect();
        tier.install("t", rows);
        tier.partition_now("t");
        let found = |tier: &VectorTier, i: u64| {
            let q = near(&random_unit(i, dims), 1_000_000 + i);
            tier.search("t", &q, 0.5, 1).1.first().map(|h| h.1.clone()) == Some(format!("{i}"))
        };
        let hits = (0..500).filter(|&i| found(&tier, i * 37)).count();
        assert!(hits >= 480, "recall {hits}/500");
        // Removals move rows; appended rows sit outside the lists.
        for i in 0..2000u64 {
            tier.remove("t", &format!("{}", i * 11));
        }
        for i in 0..100u64 {
            tier.upsert(
                "t",
                &format!("new{i}"),
                0,
                &random_unit(5_000_000 + i, dims),
            );
        }
        let q = near(&random_unit(5_000_042, dims), 9);
        assert_eq!(tier.search("t", &q, 0.5, 1).1[0].1, "new42");
        assert!(
            tier.search("t", &random_unit(11 * 5, dims), 0.99, 1)
                .1
                .is_empty(),
            "a removed row was found"
        );
        let survivors = (0..500u64)
            .map(|i| i * 37)
            .filter(|i| i % 11 != 0 || i / 11 >= 2000);
        let (total, hits) = survivors.fold((0, 0), |(t, h), i| {
            (t + 1, h + usize::from(found(&tier, i)))
        });
        assert!(
            hits * 100 >= total * 95,
            "recall after changes {hits}/{total}"
        );
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
