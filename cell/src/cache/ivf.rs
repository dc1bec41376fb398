//! An inverted-file partition of one tenant's cache vectors, so that a
//! lookup in a tenant with a million entries reads a few thousand vectors
//! instead of all of them. Two-level k-means: about √L coarse centroids,
//! each split into √L lists, L sized for ~`ROWS_PER_LIST` rows a list. A
//! lookup scores the coarse centroids, the fine ones under the best few, and
//! scans the best `PROBES` lists. The cache only
//! wants near-duplicates (cosine ≥ ~0.9), which almost always fall in the
//! query's own nearest lists, so a few probes suffice.
//!
//! Rows are indices into the tenant's vector matrix; rows appended after the
//! build (`covered..`) are not in any list and are scanned in full until the
//! next build.

/// Rows per list the partition aims for: a probe reads about this many vectors.
const ROWS_PER_LIST: usize = 1000;
/// Most coarse centroids and lists under each (1,024 lists in all).
const MAX_SIDE: usize = 32;
/// Coarse centroids whose lists are considered.
const COARSE_PROBES: usize = 3;
/// Lists scanned per lookup.
pub const PROBES: usize = 6;
/// Vectors sampled to train centroids.
const SAMPLE: usize = 32 * 1024;
/// Lloyd iterations.
const ITERATIONS: usize = 6;

use super::index::dot;

#[derive(Debug)]
pub struct Ivf {
    dims: usize,
    coarse: Vec<f32>,
    /// Lists under each coarse centroid.
    fine_per_coarse: usize,
    /// `coarse × fine_per_coarse` centroids, grouped by coarse centroid.
    fine: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// List of each covered row.
    list_of: Vec<u32>,
    /// Rows `0..covered` are in lists.
    covered: usize,
}

fn row(vectors: &[f32], dims: usize, i: usize) -> &[f32] {
    &vectors[i * dims..(i + 1) * dims]
}

fn nearest(centroids: &[f32], dims: usize, v: &[f32]) -> usize {
    let mut best = (f32::MIN, 0);
    for (c, centroid) in centroids.chunks_exact(dims).enumerate() {
        let s = dot(centroid, v);
        if s > best.0 {
            best = (s, c);
        }
    }
    best.1
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Spherical k-means over `points` (row-major), `k` centroids.
fn kmeans(points: &[f32], dims: usize, k: usize) -> Vec<f32> {
    let n = points.len() / dims;
    let k = k.min(n.max(1));
    // Spread the initial centroids over the sample deterministically.
    let mut centroids: Vec<f32> = (0..k)
        .flat_map(|c| row(points, dims, c * n / k).to_vec())
        .collect();
    let mut assignment = vec![0usize; n];
    for _ in 0..ITERATIONS {
        for (i, a) in assignment.iter_mut().enumerate() {
            *a = nearest(&centroids, dims, row(points, dims, i));
        }
        let mut sums = vec![0f32; k * dims];
        let mut counts = vec![0usize; k];
        for (i, &a) in assignment.iter().enumerate() {
            counts[a] += 1;
            for (s, x) in sums[a * dims..(a + 1) * dims]
                .iter_mut()
                .zip(row(points, dims, i))
            {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                let centroid = &mut sums[c * dims..(c + 1) * dims];
                normalise(centroid);
                centroids[c * dims..(c + 1) * dims].copy_from_slice(centroid);
            }
        }
    }
    centroids
}

impl Ivf {
    /// Partitions the `len` rows of `vectors`.
    pub fn build(vectors: &[f32], dims: usize) -> Self {
        let len = vectors.len() / dims;
        let step = (len / SAMPLE).max(1);
        let sample: Vec<f32> = (0..len)
            .step_by(step)
            .flat_map(|i| row(vectors, dims, i).to_vec())
            .collect();
        // √lists on each level, so both levels cost the same to score.
        let lists = (len / ROWS_PER_LIST).clamp(4, MAX_SIDE * MAX_SIDE);
        let side = (lists as f64).sqrt().ceil() as usize;
        let coarse = kmeans(&sample, dims, side);
        let k1 = coarse.len() / dims;
        // Split each coarse cell of the sample into fine lists.
        let mut members: Vec<Vec<f32>> = vec![Vec::new(); k1];
        for v in sample.chunks_exact(dims) {
            members[nearest(&coarse, dims, v)].extend_from_slice(v);
        }
        let mut fine = Vec::with_capacity(k1 * side * dims);
        for (c, m) in members.iter().enumerate() {
            let mut cell = if m.is_empty() {
                row(&coarse, dims, c).to_vec()
            } else {
                kmeans(m, dims, side)
            };
            // Pad to exactly `side` lists per coarse cell by repeating centroids.
            let have = cell.len() / dims;
            for j in have..side {
                let copy = row(&cell, dims, j % have.max(1)).to_vec();
                cell.extend_from_slice(&copy);
            }
            fine.extend_from_slice(&cell);
        }
        let mut ivf = Self {
            dims,
            coarse,
            fine_per_coarse: side,
            fine,
            lists: vec![Vec::new(); k1 * side],
            list_of: Vec::with_capacity(len),
            covered: 0,
        };
        // Assign every row, on both cores.
        let half = len / 2;
        let (first, second) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                (0..half)
                    .map(|i| ivf.list_for(row(vectors, dims, i)) as u32)
                    .collect::<Vec<_>>()
            });
            let b = (half..len)
                .map(|i| ivf.list_for(row(vectors, dims, i)) as u32)
                .collect::<Vec<_>>();
            (a.join().unwrap_or_default(), b)
        });
        ivf.list_of = first.into_iter().chain(second).collect();
        if ivf.list_of.len() != len {
            // A worker died: fall back to assigning here.
            ivf.list_of = (0..len)
                .map(|i| ivf.list_for(row(vectors, dims, i)) as u32)
                .collect();
        }
        for (i, &l) in ivf.list_of.iter().enumerate() {
            ivf.lists[l as usize].push(i as u32);
        }
        ivf.covered = len;
        ivf
    }

    /// Rows in lists; rows past this were added after the build.
    pub fn covered(&self) -> usize {
        self.covered
    }

    fn list_for(&self, v: &[f32]) -> usize {
        let per = self.fine_per_coarse;
        let c = nearest(&self.coarse, self.dims, v);
        let fine = &self.fine[c * per * self.dims..(c + 1) * per * self.dims];
        c * per + nearest(fine, self.dims, v)
    }

    /// The lists to scan for `query`, best first.
    pub fn probe(&self, query: &[f32]) -> Vec<usize> {
        let mut coarse: Vec<(f32, usize)> = self
            .coarse
            .chunks_exact(self.dims)
            .enumerate()
            .map(|(c, v)| (dot(v, query), c))
            .collect();
        coarse.sort_by(|a, b| b.0.total_cmp(&a.0));
        let per = self.fine_per_coarse;
        let mut fine: Vec<(f32, usize)> = Vec::with_capacity(COARSE_PROBES * per);
        for &(_, c) in coarse.iter().take(COARSE_PROBES) {
            for j in 0..per {
                let l = c * per + j;
                fine.push((dot(row(&self.fine, self.dims, l), query), l));
            }
        }
        fine.sort_by(|a, b| b.0.total_cmp(&a.0));
        fine.into_iter().take(PROBES).map(|(_, l)| l).collect()
    }

    pub fn list(&self, l: usize) -> &[u32] {
        &self.lists[l]
    }

    /// Row `pos` was removed and row `last` (with vector `moved`) took its place.
    pub fn swap_removed(&mut self, pos: usize, last: usize, moved: &[f32]) {
        if pos < self.covered {
            let l = self.list_of[pos] as usize;
            self.lists[l].retain(|&r| r as usize != pos);
        }
        if pos != last {
            if last < self.covered {
                let l = self.list_of[last] as usize;
                for r in &mut self.lists[l] {
                    if *r as usize == last {
                        *r = pos as u32;
                    }
                }
                self.list_of[pos] = l as u32;
            } else if pos < self.covered {
                let l = self.list_for(moved);
                self.lists[l].push(pos as u32);
                self.list_of[pos] = l as u32;
            }
        }
        if last < self.covered {
            self.covered -= 1;
            self.list_of.truncate(self.covered);
        }
    }

    /// Row `pos` got a new vector.
    pub fn updated(&mut self, pos: usize, v: &[f32]) {
        if pos < self.covered {
            let old = self.list_of[pos] as usize;
            self.lists[old].retain(|&r| r as usize != pos);
            let l = self.list_for(v);
            self.lists[l].push(pos as u32);
            self.list_of[pos] = l as u32;
        }
    }
}
