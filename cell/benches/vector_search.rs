//! The vector shard at scale: loads N 384-d vectors into one tenant of a
//! fresh shard (optimising along the way when the cell would), builds the
//! index as the cell does after a bulk load, then
//! measures search latency (p50/p99 over 1,000 queries, one thread),
//! recall@10 against exact search (over the first 200), and the process's
//! memory.
//!
//! The vectors are clustered like sentence embeddings (2,000 topics, each
//! point a noisy copy of its topic), not uniform noise, on which no graph
//! index is meaningful; queries are fresh points of the same topics.
//!
//! `cargo bench -p cell --bench vector_search -- [POINTS] [--template NAME]`
//! (POINTS defaults to 100000; NAME is a cell template: small, standard, large)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "bench code: a panic is a failed run"
)]

use std::time::Instant;

use cell::vector::{ExportedPoint, MetadataFilter, Retrieval, VectorShard};

const DIMS: usize = 384;
const TOPICS: u64 = 2_000;
const QUERIES: usize = 1_000;
/// Queries also answered exactly, for recall (exact search scans everything).
const RECALL_QUERIES: usize = 200;
const K: usize = 10;
const BATCH: usize = 10_000;

/// Deterministic pseudo-random numbers in [-0.5, 0.5).
fn noise(seed: u64) -> impl Iterator<Item = f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    })
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

/// Point `i`: its topic's centre plus noise (cosine to the centre ≈ 0.75).
fn point(i: u64) -> Vec<f32> {
    let topic = i % TOPICS;
    let centre: Vec<f32> = noise(topic + 1).take(DIMS).collect();
    let jitter: Vec<f32> = noise(i + 1_000_003).take(DIMS).collect();
    normalise(
        centre
            .iter()
            .zip(&jitter)
            .map(|(c, j)| c + 0.9 * j)
            .collect(),
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// (anonymous, file-backed) resident memory of this process, in MiB.
fn resident_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let points: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let template = args
        .iter()
        .position(|a| a == "--template")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("standard");
    let settings = cell::config::index_settings(
        &common::template::CellTemplate::load(template)
            .unwrap_or_else(|e| panic!("{e}"))
            .vector,
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let (anon_before, _) = resident_mib();
    let shard = VectorShard::open_with(dir.path(), DIMS, settings).expect("shard");
    let started = Instant::now();
    for start in (0..points).step_by(BATCH) {
        let batch: Vec<ExportedPoint> = (start..(start + BATCH).min(points))
            .map(|i| ExportedPoint {
                document_id: format!("doc-{i}"),
                chunk: 0,
                text: format!("topic {} item {i}", i as u64 % TOPICS),
                metadata: serde_json::json!({}),
                vector: point(i as u64),
            })
            .collect();
        shard.import("bench", batch).expect("import");
        // As the cell's background task does during a long bulk load.
        if shard.optimization_due(false) {
            shard.optimize().expect("optimize");
        }
    }
    let load = started.elapsed();
    let started = Instant::now();
    shard.optimize().expect("optimize");
    let index = started.elapsed();
    let (indexed, stored) = shard.indexed_share();
    let (anon_after, file_after) = resident_mib();

    let no_filter = MetadataFilter::default();
    let queries: Vec<Vec<f32>> = (0..QUERIES as u64)
        .map(|q| point(10_000_000_000 + q))
        .collect();
    let search = |v: &[f32], exact: bool| {
        shard
            .search(
                "bench",
                &Retrieval {
                    vector: v,
                    text: None,
                    limit: K,
                    score_floor: None,
                    filter: &no_filter,
                    exact,
                },
            )
            .expect("search")
    };
    // Warm up.
    for q in queries.iter().take(50) {
        search(q, false);
    }
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut found = 0usize;
    for (i, q) in queries.iter().enumerate() {
        let started = Instant::now();
        let approximate = search(q, false);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        if i < RECALL_QUERIES {
            let exact = search(q, true);
            found += approximate
                .iter()
                .filter(|h| exact.iter().any(|e| e.document_id == h.document_id))
                .count();
        }
    }
    latencies.sort_by(f64::total_cmp);
    let recall = found as f64 / (RECALL_QUERIES * K) as f64;
    println!(
        "vector search: {points} points, template {template} (m {}, ef_construct {}, ef {}, int8 quantization {}, vectors on disk {})",
        settings.hnsw_m,
        settings.hnsw_ef_construct,
        settings.hnsw_ef,
        settings.scalar_quantization,
        settings.vectors_on_disk
    );
    println!(
        "  load {:.1} s ({:.0} points/s, with the optimisations due meanwhile), final index build {:.1} s, indexed vectors {indexed} of {stored}",
        load.as_secs_f64(),
        points as f64 / load.as_secs_f64(),
        index.as_secs_f64()
    );
    println!(
        "  search p50 {:.2} ms, p99 {:.2} ms, recall@{K} {:.3} (over {RECALL_QUERIES} queries)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        recall
    );
    println!(
        "  memory: anonymous {:.0} MiB ({:.0} MiB per million vectors), file-backed resident {:.0} MiB",
        anon_after - anon_before,
        (anon_after - anon_before) * 1_000_000.0 / points as f64,
        file_after
    );
}
