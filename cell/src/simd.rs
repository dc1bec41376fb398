//! Hot numeric loops compiled for the CPU they run on. Binaries are built
//! for baseline x86-64 (SSE2), so that they run on any x86-64 machine; a
//! loop given to [`vectorized`] is compiled a second time with AVX2 and FMA
//! enabled, and that copy runs when the CPU has them.
//!
//! The loop is a type implementing [`pulp::WithSimd`] whose `with_simd` is
//! `#[inline(always)]`, as is everything it calls in its inner loop: only
//! code inlined into the AVX2 copy is compiled for AVX2. (A closure is not
//! reliably inlined, so it may silently stay on the baseline.)

/// Runs `op`, compiled with the best instruction set this CPU offers.
#[inline(always)]
pub fn vectorized<Op: pulp::WithSimd>(op: Op) -> Op::Output {
    pulp::Arch::new().dispatch(op)
}
