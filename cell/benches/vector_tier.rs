//! Semantic-cache vector tier: lookup latency at 10k, 100k and 1M entries in
//! one cell, with the entries in one tenant (the worst case: every lookup
//! scans them all) and spread over tenants of 1,000 entries each.
//!
//! `cargo bench -p cell --bench vector_tier [-- SIZES...]`

use std::time::Instant;

use cell::cache::VectorTier;

const DIMS: usize = 384;
const QUERIES: usize = 2000;

/// A deterministic pseudo-random unit vector.
fn unit(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..DIMS)
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
    let noise = unit(seed);
    let mut out: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.33 * b).collect();
    let n = out.iter().map(|a| a * a).sum::<f32>().sqrt();
    out.iter_mut().for_each(|a| *a /= n);
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn run(entries: usize, tenant_size: usize) {
    let tier = VectorTier::new(DIMS);
    let tenants = entries.div_ceil(tenant_size);
    for t in 0..tenants {
        let rows: Vec<(String, u64, Vec<f32>)> = (0..tenant_size.min(entries - t * tenant_size))
            .map(|i| {
                let id = (t * tenant_size + i) as u64;
                (format!("{id:016x}"), id, unit(id))
            })
            .collect();
        tier.install(&format!("t{t}"), rows);
    }
    let started = Instant::now();
    for t in 0..tenants {
        tier.partition_now(&format!("t{t}"));
    }
    let build = started.elapsed();
    // Each query is a near-duplicate (cosine ≈ 0.95) of a stored entry, which
    // must come back first: what a cache hit needs.
    let mut micros = Vec::with_capacity(QUERIES);
    let mut found = 0;
    for q in 0..QUERIES {
        let source = (q as u64 * 7919) % entries as u64;
        let query = near(&unit(source), 10_000_000 + q as u64);
        let tenant = format!("t{}", source as usize / tenant_size);
        let started = Instant::now();
        let (_, hits) = tier.search(&tenant, &query, 0.5, 3);
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        found += usize::from(
            hits.first()
                .is_some_and(|h| h.1 == format!("{source:016x}")),
        );
    }
    micros.sort_by(f64::total_cmp);
    println!(
        "{entries:>8} entries, {tenant_size:>8} per tenant: p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs  recall {:.3}  partition build {:>6.1} s  memory {:.0} MiB",
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        micros[micros.len() - 1],
        found as f64 / QUERIES as f64,
        build.as_secs_f64(),
        tier.bytes() as f64 / (1024.0 * 1024.0),
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        sizes
    };
    for &n in &sizes {
        run(n, n);
        run(n, 1000.min(n));
    }
}
