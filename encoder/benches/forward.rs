//! One forward pass of all-MiniLM-L6-v2 at the token counts of a short
//! question, a long question and an ingestion chunk, on one thread.
//!
//! `cargo bench -p encoder --bench forward` (the model folder is
//! `$CELLNET_MODEL_DIR`, or the one `make setup` fills).

use std::path::PathBuf;
use std::time::Instant;

use encoder::{BertConfig, BertEncoder};

fn model_dir() -> PathBuf {
    std::env::var_os("CELLNET_MODEL_DIR").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/cellnet/models/all-MiniLM-L6-v2")
        },
        PathBuf::from,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = model_dir();
    let config = BertConfig::from_json(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let encoder =
        BertEncoder::from_safetensors(&std::fs::read(dir.join("model.safetensors"))?, &config)?;
    for tokens in [10usize, 24, 200] {
        // [CLS], ordinary word pieces, [SEP].
        let ids: Vec<u32> = std::iter::once(101)
            .chain((0..tokens - 2).map(|i| 2000 + (i as u32 * 37) % 20000))
            .chain(std::iter::once(102))
            .collect();
        let rounds = if tokens > 100 { 60 } else { 400 };
        for _ in 0..rounds / 10 {
            encoder.embed(&ids)?;
        }
        let mut micros = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            encoder.embed(&ids)?;
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
        micros.sort_by(f64::total_cmp);
        let p = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] / 1000.0;
        println!(
            "{tokens:>3} tokens: p50 {:.2} ms  p99 {:.2} ms",
            p(0.5),
            p(0.99)
        );
    }
    Ok(())
}
