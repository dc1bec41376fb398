//! One forward pass, compiled twice: for the baseline the binary targets and
//! for x86-64-v3 (AVX2 and FMA), chosen when the process starts.
//!
//! Only code inlined into [`Pass::run`] is compiled for AVX2, so every helper
//! on the hot path is `#[inline(always)]`. `FMA` tells the pass whether
//! `f32::mul_add` is one instruction; without FMA it would be a call into
//! libm, so the baseline copy multiplies and adds instead.

/// Work that runs with the best instruction set the CPU offers.
pub(crate) trait Pass {
    type Output;
    fn run<const FMA: bool>(self) -> Self::Output;
}

struct WithFma<P, const FMA: bool>(P);

impl<P: Pass, const FMA: bool> pulp::WithSimd for WithFma<P, FMA> {
    type Output = P::Output;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Self::Output {
        self.0.run::<FMA>()
    }
}

pub(crate) fn dispatch<P: Pass>(pass: P) -> P::Output {
    #[cfg(target_arch = "x86_64")]
    if let Some(v3) = pulp::x86::V3::try_new() {
        return pulp::Simd::vectorize(v3, WithFma::<P, true>(pass));
    }
    pulp::WithSimd::with_simd(
        WithFma::<P, { cfg!(target_feature = "fma") }>(pass),
        pulp::Scalar::new(),
    )
}

/// `a * b + c`, fused where the pass was compiled with FMA.
#[inline(always)]
pub(crate) fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}
