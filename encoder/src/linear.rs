//! `y = x · Wᵀ + b` for a few rows of `x` at a time.
//!
//! The weight matrix is packed once, at load, into panels of [`TILE`] output
//! columns: panel `p` holds, for each input `k`, the weights of outputs
//! `p·TILE .. p·TILE+TILE` side by side. A panel is read front to back, once
//! per tile of up to [`ROWS`] input rows, and stays in cache between tiles.
//! The tile's accumulators (`ROWS × TILE` floats, twelve AVX2 registers) never
//! leave registers while a panel streams past: each step loads two vectors of
//! weights, broadcasts one input per row and does twelve multiply-adds.

use crate::dispatch::mul_add;

/// Output columns computed together.
pub(crate) const TILE: usize = 16;
/// Input rows computed together.
pub(crate) const ROWS: usize = 6;

#[derive(Debug)]
pub(crate) struct Linear {
    inputs: usize,
    outputs: usize,
    /// `panels[p * inputs + k][t]` is `W[p * TILE + t][k]`; columns past
    /// `outputs` in the last panel are zero.
    panels: Vec<[f32; TILE]>,
    bias: Vec<f32>,
}

impl Linear {
    /// `weight` is row-major `[outputs][inputs]`, as PyTorch stores it.
    pub(crate) fn new(weight: &[f32], bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        assert_eq!(weight.len(), outputs * inputs, "weight shape");
        assert_eq!(bias.len(), outputs, "bias shape");
        let panel_count = outputs.div_ceil(TILE);
        let mut panels = vec![[0.0f32; TILE]; panel_count * inputs];
        for (o, row) in weight.chunks_exact(inputs).enumerate() {
            let (p, t) = (o / TILE, o % TILE);
            for (k, w) in row.iter().enumerate() {
                panels[p * inputs + k][t] = *w;
            }
        }
        Self {
            inputs,
            outputs,
            panels,
            bias,
        }
    }

    /// Several linear layers over the same input as one: their outputs side
    /// by side (query, key and value in one pass).
    pub(crate) fn concat(parts: &[(&[f32], Vec<f32>, usize)], inputs: usize) -> Self {
        let weight: Vec<f32> = parts
            .iter()
            .flat_map(|(w, _, _)| w.iter().copied())
            .collect();
        let bias: Vec<f32> = parts
            .iter()
            .flat_map(|(_, b, _)| b.iter().copied())
            .collect();
        let outputs = parts.iter().map(|(_, _, o)| o).sum();
        Self::new(&weight, bias, outputs, inputs)
    }

    #[cfg(test)]
    pub(crate) fn outputs(&self) -> usize {
        self.outputs
    }

    /// `out[r] = x[r] · Wᵀ + b` for each of the `x.len() / inputs` rows.
    /// `scratch` holds the rows regrouped by tile, and is reused between calls.
    #[inline(always)]
    pub(crate) fn forward<const FMA: bool>(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let rows = x.len() / self.inputs;
        debug_assert_eq!(out.len(), rows * self.outputs);
        // Rows in tiles of ROWS (the last may be shorter), each stored
        // input-major: tile[k * m + r] = x[r][k].
        scratch.clear();
        scratch.resize(rows * self.inputs, 0.0);
        let mut start = 0;
        while start < rows {
            let m = (rows - start).min(ROWS);
            let tile = &mut scratch[start * self.inputs..(start + m) * self.inputs];
            for r in 0..m {
                let row = &x[(start + r) * self.inputs..(start + r + 1) * self.inputs];
                for (k, v) in row.iter().enumerate() {
                    tile[k * m + r] = *v;
                }
            }
            start += m;
        }

        for (p, panel) in self.panels.chunks_exact(self.inputs).enumerate() {
            let first = p * TILE;
            let bias = &self.bias[first..first + (self.outputs - first).min(TILE)];
            let mut start = 0;
            while start < rows {
                let m = (rows - start).min(ROWS);
                let tile = &scratch[start * self.inputs..(start + m) * self.inputs];
                let out = &mut out[start * self.outputs..(start + m) * self.outputs];
                let out = Columns {
                    rows: out,
                    stride: self.outputs,
                    first,
                    bias,
                };
                match m {
                    1 => out.store(multiply::<1, FMA>(panel, tile)),
                    2 => out.store(multiply::<2, FMA>(panel, tile)),
                    3 => out.store(multiply::<3, FMA>(panel, tile)),
                    4 => out.store(multiply::<4, FMA>(panel, tile)),
                    5 => out.store(multiply::<5, FMA>(panel, tile)),
                    _ => out.store(multiply::<ROWS, FMA>(panel, tile)),
                }
                start += m;
            }
        }
    }
}

/// One panel's columns of one tile's output rows.
struct Columns<'a> {
    rows: &'a mut [f32],
    stride: usize,
    first: usize,
    /// The bias of the panel's columns (fewer than TILE in a last panel).
    bias: &'a [f32],
}

impl Columns<'_> {
    #[inline(always)]
    fn store<const M: usize>(self, sums: [[f32; TILE]; M]) {
        for (r, sums) in sums.iter().enumerate() {
            let out = &mut self.rows[r * self.stride + self.first..][..self.bias.len()];
            for ((o, s), b) in out.iter_mut().zip(sums).zip(self.bias) {
                *o = s + b;
            }
        }
    }
}

/// One panel times one tile of `M` rows: `M × TILE` dot products over the
/// panel's inputs.
#[inline(always)]
fn multiply<const M: usize, const FMA: bool>(
    panel: &[[f32; TILE]],
    tile: &[f32],
) -> [[f32; TILE]; M] {
    let (tile, _) = tile.as_chunks::<M>();
    let mut acc = [[0.0f32; TILE]; M];
    for (w, x) in panel.iter().zip(tile) {
        for r in 0..M {
            for t in 0..TILE {
                acc[r][t] = mul_add::<FMA>(x[r], w[t], acc[r][t]);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(weight: &[f32], bias: &[f32], x: &[f32], outputs: usize, inputs: usize) -> Vec<f32> {
        let rows = x.len() / inputs;
        let mut out = vec![0.0; rows * outputs];
        for r in 0..rows {
            for o in 0..outputs {
                let mut s = bias[o] as f64;
                for k in 0..inputs {
                    s += x[r * inputs + k] as f64 * weight[o * inputs + k] as f64;
                }
                out[r * outputs + o] = s as f32;
            }
        }
        out
    }

    #[test]
    fn matches_the_naive_product_for_every_tile_shape() {
        // Outputs that fill panels exactly and that leave a partial one;
        // row counts that fill tiles exactly and leave every remainder.
        for (outputs, inputs) in [(32, 24), (37, 19), (5, 8), (20, 600)] {
            let weight: Vec<f32> = (0..outputs * inputs)
                .map(|i| ((i * 7919) % 113) as f32 / 113.0 - 0.5)
                .collect();
            let bias: Vec<f32> = (0..outputs).map(|o| o as f32 * 0.01).collect();
            let linear = Linear::new(&weight, bias.clone(), outputs, inputs);
            for rows in 1..=14 {
                let x: Vec<f32> = (0..rows * inputs)
                    .map(|i| ((i * 104_729) % 97) as f32 / 97.0 - 0.3)
                    .collect();
                let want = naive(&weight, &bias, &x, outputs, inputs);
                let mut got = vec![f32::NAN; rows * outputs];
                let mut scratch = Vec::new();
                linear.forward::<true>(&x, &mut got, &mut scratch);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{outputs}x{inputs}, {rows} rows, at {i}: {g} vs {w}"
                    );
                }
                let mut plain = vec![f32::NAN; rows * outputs];
                linear.forward::<false>(&x, &mut plain, &mut scratch);
                for (g, w) in plain.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()));
                }
            }
        }
    }

    #[test]
    fn concatenated_layers_are_side_by_side() {
        let a: Vec<f32> = (0..6).map(|i| i as f32).collect(); // 2 outputs × 3 inputs
        let b: Vec<f32> = (0..3).map(|i| -(i as f32)).collect(); // 1 output × 3 inputs
        let both = Linear::concat(&[(&a, vec![0.5, 0.5], 2), (&b, vec![1.0], 1)], 3);
        assert_eq!(both.outputs(), 3);
        let mut out = vec![0.0; 3];
        both.forward::<true>(&[1.0, 1.0, 1.0], &mut out, &mut Vec::new());
        assert_eq!(out, vec![3.5, 12.5, -2.0]);
    }
}
