//! Ingestion end to end against the raw embedder: the same documents are
//! (1) only embedded, chunk texts in batches of 32 straight into the model,
//! and (2) ingested as the cell does it, 16 documents per write: chunked with
//! the tokenizer, embedded, and written durably (BM25 vector, payload,
//! flush) to a fresh vector shard. Reports chunks/s of both and the ratio.
//!
//! `cargo bench -p cell --bench ingestion [-- DOCUMENTS]` (default 200)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "bench code: a panic is a failed run"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cell::cache::{CacheSettings, RedisConn, RedisTarget, SemanticCache};
use cell::embed::{Embedder, MiniLm};
use cell::ingest::chunker::{ChunkLimits, chunk};
use cell::ingest::{DocumentInput, Ingestor};
use cell::metrics::CellMetrics;
use cell::vector::VectorShard;

const CORPUS: &str = include_str!("../tests/data/retrieval/corpus.jsonl");
const DOCUMENTS_PER_WRITE: usize = 16;
const EMBED_BATCH: usize = 32;

/// `n` documents of several paragraphs each, from the evaluation corpus.
fn documents(n: usize) -> Vec<DocumentInput> {
    let texts: Vec<String> = CORPUS
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    (0..n)
        .map(|i| DocumentInput {
            id: format!("doc-{i}"),
            text: (0..4)
                .map(|j| format!("Part {j} of note {i}. {}", texts[(i * 7 + j) % texts.len()]))
                .collect::<Vec<_>>()
                .join("\n\n"),
            metadata: None,
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let model: Arc<dyn Embedder> =
        Arc::new(MiniLm::load(&cell::config::default_model_dir()).expect("model files"));
    let docs = documents(n);

    // (1) The raw embedder on the same chunks.
    let chunks: Vec<String> = docs
        .iter()
        .flat_map(|d| {
            chunk(&d.text, ChunkLimits::default(), &|s: &str| {
                model.count_tokens(s)
            })
            .into_iter()
            .map(|c| c.text)
        })
        .collect();
    let started = Instant::now();
    for batch in chunks.chunks(EMBED_BATCH) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        model.embed_batch(&refs).unwrap();
    }
    let raw = chunks.len() as f64 / started.elapsed().as_secs_f64();

    // (2) The cell's ingestion path.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shard = VectorShard::open(dir.path(), model.dimensions()).unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(CellMetrics::register(&mut registry));
    // Never connected: storing documents does not touch the cache.
    let redis = RedisConn::new(
        RedisTarget::Single("redis://127.0.0.1:1".into()),
        Duration::from_millis(100),
    )
    .unwrap();
    let ingestor = Ingestor {
        cell_id: "bench".into(),
        embedder: model.clone(),
        shard: Arc::new(shard),
        cache: SemanticCache::new(
            redis,
            CacheSettings {
                threshold: 0.92,
                ttl: Duration::from_secs(60),
                stale_grace: Duration::from_secs(60),
                timeout: Duration::from_millis(100),
                max_entries_per_tenant: 10,
                memory_budget_bytes: 1 << 20,
            },
            model.dimensions(),
            "bench",
            metrics.clone(),
        ),
        max_documents: DOCUMENTS_PER_WRITE,
        limits: ChunkLimits::default(),
        metrics,
    };
    let started = Instant::now();
    let stored: usize = runtime.block_on(async {
        let mut total = 0;
        for batch in docs.chunks(DOCUMENTS_PER_WRITE) {
            let written = ingestor.store("bench", batch.to_vec()).await.unwrap();
            total += written.iter().map(|d| d.chunks).sum::<usize>();
        }
        total
    });
    let end_to_end = stored as f64 / started.elapsed().as_secs_f64();
    assert_eq!(stored, chunks.len());

    println!(
        "ingestion: {n} documents, {} chunks of at most {} tokens",
        chunks.len(),
        ChunkLimits::default().max_tokens
    );
    println!("  raw embedder (batches of {EMBED_BATCH}): {raw:.1} chunks/s");
    println!(
        "  end to end (chunk, embed, BM25, durable write; {DOCUMENTS_PER_WRITE} documents per write): {end_to_end:.1} chunks/s"
    );
    println!("  ratio: {:.0} %", 100.0 * end_to_end / raw);
}
