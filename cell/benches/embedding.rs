//! all-MiniLM-L6-v2 as the cell runs it (tokenizer and `encoder`): single-query
//! latency and batch throughput.
//!
//! `cargo bench -p cell --bench embedding`

use std::time::Instant;

use cell::embed::{Embedder, MiniLm};

const QUERIES: &[&str] = &[
    "What does make up start?",
    "How long do I have to request a refund?",
    "Which plans include single sign-on for administrators?",
    "Where do orders ship from, and how long does standard delivery take inside the EU?",
];

fn main() -> anyhow::Result<()> {
    let model = MiniLm::load(&cell::config::default_model_dir())?;
    // Warm up.
    for q in QUERIES {
        model.embed_batch(&[q])?;
    }
    let mut micros = Vec::new();
    for i in 0..400 {
        let q = QUERIES[i % QUERIES.len()];
        let started = Instant::now();
        model.embed_batch(&[q])?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let p = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] / 1000.0;
    println!("single query: p50 {:.2} ms  p99 {:.2} ms", p(0.5), p(0.99));

    // Batches of ingestion-sized chunks (about 200 tokens each).
    let chunk = "Refunds are paid back to the original payment method within five business days, \
        and customers can request one within thirty days of purchase. "
        .repeat(6);
    for batch in [1usize, 8, 32] {
        let texts: Vec<&str> = vec![chunk.as_str(); batch];
        let started = Instant::now();
        let rounds = (64 / batch).max(2);
        for _ in 0..rounds {
            model.embed_batch(&texts)?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batch {batch:>2} × {} tokens: {:.1} chunks/s",
            model.count_tokens(&chunk),
            (rounds * batch) as f64 / secs
        );
    }
    Ok(())
}
