//! An inverted-file partition of one tenant's cache vectors, so that a
//! lookup in a tenant with a million entries reads a few thousand vectors
//! instead of all of them. Two-level k-means: about √L coarse centroids,
//! each split into √L lists, L sized for ~`ROWS_PER_LIST` rows a list. A
//! lookup scores the coarse centroids, the fine ones under the best few, and
//! scans the best `PROBES` lists. The cache only
//! wants near-duplicates (cosine ≥ ~0.9), which almost always fall in the
//! query's own nearest lists, so a few probes suffice.
//!
//! Each list keeps its rows' vectors contiguously as 8-bit codes (a quarter
//! of the bytes of the f32 vectors, read in one sequential sweep: the scan is
//! bound by memory, not arithmetic); the best few by code are then re-scored
//! exactly from the f32 matrix. Rows are indices into the tenant's vector
//! matrix; rows appended after the build (`covered..`) are not in any list
//! and are scanned in full until the next build.

/// Rows per list the partition aims for: a probe reads about this many vectors.
const ROWS_PER_LIST: usize = 1000;
/// Most coarse centroids and lists under each (1,024 lists in all).
const MAX_SIDE: usize = 32;
/// Coarse centroids whose lists are considered.
const COARSE_PROBES: usize = 4;
/// Lists scanned per lookup.
pub const PROBES: usize = 16;
/// Rows re-scored exactly after the 8-bit pre-score.
pub const RESCORE: usize = 32;
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
    lists: Vec<List>,
    /// Codes are `round(x · scale)`, clamped to ±127.
    scale: f32,
    /// List of each covered row.
    list_of: Vec<u32>,
    /// Rows `0..covered` are in lists.
    covered: usize,
}

/// One list: its rows and their 8-bit codes, row-major.
#[derive(Debug, Clone, Default)]
pub struct List {
    pub rows: Vec<u32>,
    codes: Vec<i8>,
}

impl List {
    fn push(&mut self, row: u32, code: &[i8]) {
        self.rows.push(row);
        self.codes.extend_from_slice(code);
    }

    fn remove(&mut self, row: u32, dims: usize) {
        if let Some(j) = self.rows.iter().position(|&r| r == row) {
            let last = self.rows.len() - 1;
            self.rows.swap_remove(j);
            if j != last {
                let (head, tail) = self.codes.split_at_mut(last * dims);
                head[j * dims..(j + 1) * dims].copy_from_slice(&tail[..dims]);
            }
            self.codes.truncate(last * dims);
        }
    }

    /// Keeps in `best` (sorted, best first) the `keep` rows with the
    /// highest approximate score (× scale²) seen so far.
    #[inline(always)]
    fn prescore(&self, query: &[i8], dims: usize, keep: usize, best: &mut Vec<(i32, u32)>) {
        for (code, &r) in self.codes.chunks_exact(dims).zip(&self.rows) {
            let score = dot_i8(code, query);
            if best.len() < keep || best.last().is_some_and(|(w, _)| score > *w) {
                let at = best.partition_point(|(t, _)| *t >= score);
                best.insert(at, (score, r));
                best.truncate(keep);
            }
        }
    }
}

/// The probed lists' best rows by code: the whole lookup's hot loop, run
/// through [`crate::simd::vectorized`].
struct Scan<'a> {
    ivf: &'a Ivf,
    query: &'a [f32],
    code: Vec<i8>,
    keep: usize,
}

impl pulp::WithSimd for Scan<'_> {
    type Output = Vec<(i32, u32)>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Self::Output {
        let mut best = Vec::with_capacity(self.keep + 1);
        for l in self.ivf.probe(self.query) {
            self.ivf.lists[l].prescore(&self.code, self.ivf.dims, self.keep, &mut best);
        }
        best
    }
}

/// Integer dot product of two codes, written so that the compiler
/// vectorises it (integer sums may be reordered freely).
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
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
        // Unit vectors rarely have a component beyond ±0.5 in this many
        // dimensions; larger ones saturate, which only blurs the pre-score.
        let max_abs = vectors
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            .clamp(1e-6, 0.5);
        let mut ivf = Self {
            dims,
            coarse,
            fine_per_coarse: side,
            fine,
            lists: vec![List::default(); k1 * side],
            scale: 127.0 / max_abs,
            list_of: Vec::with_capacity(len),
            covered: 0,
        };
        // Assign every row, on both cores.
        let half = len / 2;
        let assign = |rows: std::ops::Range<usize>| {
            rows.map(|i| ivf.list_for(row(vectors, dims, i)) as u32)
                .collect::<Vec<_>>()
        };
        let (first, second) = std::thread::scope(|s| {
            let a = s.spawn(|| assign(0..half));
            let b = assign(half..len);
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
            let code = ivf.code(row(vectors, dims, i));
            ivf.lists[l as usize].push(i as u32, &code);
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
    #[inline(always)]
    fn probe(&self, query: &[f32]) -> Vec<usize> {
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

    /// The 8-bit code of a vector.
    pub fn code(&self, v: &[f32]) -> Vec<i8> {
        v.iter()
            .map(|x| (x * self.scale).round().clamp(-127.0, 127.0) as i8)
            .collect()
    }

    /// The `keep` rows of the probed lists with the best approximate score
    /// for `query`, best first.
    pub fn prescore(&self, query: &[f32], keep: usize) -> Vec<u32> {
        let scan = Scan {
            ivf: self,
            query,
            code: self.code(query),
            keep,
        };
        crate::simd::vectorized(scan)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// Row `pos` was removed and row `last` (with vector `moved`) took its place.
    pub fn swap_removed(&mut self, pos: usize, last: usize, moved: &[f32]) {
        if pos < self.covered {
            let l = self.list_of[pos] as usize;
            self.lists[l].remove(pos as u32, self.dims);
        }
        if pos != last {
            if last < self.covered {
                let l = self.list_of[last] as usize;
                for r in &mut self.lists[l].rows {
                    if *r as usize == last {
                        *r = pos as u32;
                    }
                }
                self.list_of[pos] = l as u32;
            } else if pos < self.covered {
                let l = self.list_for(moved);
                let code = self.code(moved);
                self.lists[l].push(pos as u32, &code);
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
            self.lists[old].remove(pos as u32, self.dims);
            let l = self.list_for(v);
            let code = self.code(v);
            self.lists[l].push(pos as u32, &code);
            self.list_of[pos] = l as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in -127..=127 (and in ±1 for floats).
    fn values(n: usize, seed: i32) -> Vec<i8> {
        (0..n as i32)
            .map(|i| ((i * 37 + seed * 11) % 255 - 127) as i8)
            .collect()
    }

    #[test]
    fn code_dot_products_are_exact_at_every_length() {
        // Lengths around the 32-byte blocks the compiler vectorises, and the
        // extremes of the code range, where a narrower sum would overflow.
        for n in [0, 1, 31, 32, 33, 383, 384, 385] {
            let a = values(n, 1);
            let b = values(n, 2);
            let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(dot_i8(&a, &b), want, "length {n}");
            let vectorised = crate::simd::vectorized(DotI8(&a, &b));
            assert_eq!(vectorised, want, "length {n}, vectorised");
        }
        let max = vec![127i8; 384];
        assert_eq!(dot_i8(&max, &max), 127 * 127 * 384);
    }

    struct DotI8<'a>(&'a [i8], &'a [i8]);

    impl pulp::WithSimd for DotI8<'_> {
        type Output = i32;
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) -> i32 {
            dot_i8(self.0, self.1)
        }
    }
}
