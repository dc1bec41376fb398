//! The element-wise and row-wise steps of a BERT layer, written so that the
//! compiler turns them into vector code: sums run in eight independent
//! lanes (floating-point addition is not reassociated for us), and `exp` is
//! computed in a few multiply-adds instead of a call into libm.

use crate::dispatch::mul_add;

const LANES: usize = 8;

/// Sum of `xs`, in eight lanes.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let (chunks, tail) = xs.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for chunk in chunks {
        for l in 0..LANES {
            lanes[l] += chunk[l];
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// Dot product of two equally long slices, in eight lanes.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            lanes[l] = mul_add::<FMA>(x[l], y[l], lanes[l]);
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + tail
}

/// `y += a * x`.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = mul_add::<FMA>(a, *x, *y);
    }
}

/// Normalises `row` to zero mean and unit variance, then scales and shifts
/// it by the layer's weights.
#[inline(always)]
pub(crate) fn layer_norm<const FMA: bool>(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    for x in row.iter_mut() {
        *x -= mean;
    }
    let variance = dot::<FMA>(row, row) / n;
    let scale = 1.0 / (variance + eps).sqrt();
    for ((x, w), b) in row.iter_mut().zip(weight).zip(bias) {
        *x = mul_add::<FMA>(*x * scale, *w, *b);
    }
}

/// `e^x` within two units in the last place for x in [-87, 88], clamped
/// outside: Cody–Waite reduction to r in [-ln2/2, ln2/2], a degree-7
/// polynomial, and the power of two built from its exponent bits.
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f32) -> f32 {
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = mul_add::<FMA>(x, std::f32::consts::LOG2_E, ROUND) - ROUND;
    let r = mul_add::<FMA>(-n, LN2_LO, mul_add::<FMA>(-n, LN2_HI, x));
    let mut p = 1.0 / 5040.0;
    p = mul_add::<FMA>(p, r, 1.0 / 720.0);
    p = mul_add::<FMA>(p, r, 1.0 / 120.0);
    p = mul_add::<FMA>(p, r, 1.0 / 24.0);
    p = mul_add::<FMA>(p, r, 1.0 / 6.0);
    p = mul_add::<FMA>(p, r, 0.5);
    p = mul_add::<FMA>(p, r, 1.0);
    p = mul_add::<FMA>(p, r, 1.0);
    let two_to_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * two_to_n
}

/// The error function, within 1.5e-7 (Abramowitz and Stegun 7.1.26) plus
/// the rounding of f32 arithmetic.
#[inline(always)]
pub(crate) fn erf<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / mul_add::<FMA>(0.327_591_1, a, 1.0);
    let mut p = 1.061_405_4;
    p = mul_add::<FMA>(p, t, -1.453_152_1);
    p = mul_add::<FMA>(p, t, 1.421_413_7);
    p = mul_add::<FMA>(p, t, -0.284_496_74);
    p = mul_add::<FMA>(p, t, 0.254_829_6);
    let y = 1.0 - p * t * exp::<FMA>(-a * a);
    y.copysign(x)
}

/// GELU as BERT defines it, with the exact error function (not the tanh
/// approximation).
#[inline(always)]
pub(crate) fn gelu_in_place<const FMA: bool>(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = 0.5 * *x * (1.0 + erf::<FMA>(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of `xs` in place.
#[inline(always)]
pub(crate) fn softmax_in_place<const FMA: bool>(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in xs.iter_mut() {
        *x = exp::<FMA>(*x - max);
    }
    let total = sum(xs);
    let inverse = 1.0 / total;
    for x in xs.iter_mut() {
        *x *= inverse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            worst = worst.max(ulps(exp::<true>(x), x.exp()));
            worst = worst.max(ulps(exp::<false>(x), x.exp()));
            x += 0.0137;
        }
        assert!(worst <= 2, "worst error {worst} ulps");
        assert_eq!(exp::<true>(0.0), 1.0);
        assert_eq!(exp::<true>(-1000.0), exp::<true>(-87.0));
        assert!(exp::<true>(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_matches_reference_values() {
        // erf at these points, to ten digits.
        let reference: [(f32, f64); 8] = [
            (0.0, 0.0),
            (0.1, 0.112_462_916_0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (1.5, 0.966_105_146_5),
            (2.0, 0.995_322_265_0),
            (3.0, 0.999_977_909_5),
            (6.0, 1.0),
        ];
        for (x, want) in reference {
            let (up, down) = (f64::from(erf::<true>(x)), f64::from(erf::<true>(-x)));
            assert!((up - want).abs() < 5e-7, "erf({x}) = {up}");
            assert!((down + want).abs() < 5e-7, "erf(-{x}) = {down}");
        }
    }

    #[test]
    fn gelu_is_exact_not_tanh() {
        let mut xs = [-3.0f32, -1.0, 0.0, 0.5, 1.0, 2.0];
        gelu_in_place::<true>(&mut xs);
        // x · Φ(x), from the exact normal distribution.
        let want = [
            -0.004_049_7,
            -0.158_655_25,
            0.0,
            0.345_731_35,
            0.841_344_7,
            1.954_499_7,
        ];
        for (got, want) in xs.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{xs:?}");
        }
    }

    #[test]
    fn sums_and_dots_cover_the_tail() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.0 + (i % 3) as f32).collect();
            let want_sum: f32 = a.iter().sum();
            let want_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((sum(&a) - want_sum).abs() < 1e-3, "sum at {n}");
            assert!((dot::<true>(&a, &b) - want_dot).abs() < 1e-3, "dot at {n}");
            assert!((dot::<false>(&a, &b) - want_dot).abs() < 1e-3, "dot at {n}");
        }
    }

    #[test]
    fn layer_norm_and_softmax() {
        let mut row = [1.0f32, 2.0, 3.0, 4.0];
        layer_norm::<true>(&mut row, &[1.0; 4], &[0.5; 4], 1e-12);
        let mean: f32 = row.iter().sum::<f32>() / 4.0;
        let var: f32 = row.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6 && (var - 1.0).abs() < 1e-5);

        let mut xs = [1.0f32, 2.0, 3.0, 1000.0];
        softmax_in_place::<true>(&mut xs);
        assert!((xs[3] - 1.0).abs() < 1e-6 && xs[0] >= 0.0);
        let mut xs = [0.0f32, 1.0f32.ln(), 2.0f32.ln()];
        softmax_in_place::<true>(&mut xs);
        assert!((xs[2] - 0.5).abs() < 1e-6 && (xs[0] - 0.25).abs() < 1e-6);
    }
}
