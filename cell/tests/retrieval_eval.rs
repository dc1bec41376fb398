//! Retrieval quality on the evaluation set in `tests/data/retrieval/`: the
//! corpus is chunked, embedded and stored as in ingestion, then each
//! question is retrieved with vectors only and with BM25 fused by reciprocal
//! rank. Reports hit@5 and MRR (over the first 10 distinct documents) overall
//! and per kind of question, and fails below the bars.
//!
//! `cargo test -p cell --release --test retrieval_eval -- --nocapture`
//! (`EVAL_RANKS=1` also prints the rank of every question in both modes)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;

use cell::embed::{Embedder, MiniLm};
use cell::ingest::chunker::{ChunkLimits, chunk};
use cell::vector::fusion::collapse_near_duplicates;
use cell::vector::{ChunkRecord, MetadataFilter, Retrieval, VectorShard};
use serde_json::Value;

const TENANT: &str = "larkspur";
/// Distinct documents looked at for MRR.
const DEPTH: usize = 10;

#[derive(Default, Clone, Copy)]
struct Score {
    questions: usize,
    hits_at_5: usize,
    reciprocal_ranks: f64,
}

impl Score {
    fn add(&mut self, rank: Option<usize>) {
        self.questions += 1;
        if let Some(r) = rank {
            if r <= 5 {
                self.hits_at_5 += 1;
            }
            self.reciprocal_ranks += 1.0 / r as f64;
        }
    }

    fn hit_at_5(&self) -> f64 {
        self.hits_at_5 as f64 / self.questions as f64
    }

    fn mrr(&self) -> f64 {
        self.reciprocal_ranks / self.questions as f64
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn retrieval_quality_on_the_evaluation_set() {
    let model = MiniLm::load(&cell::config::default_model_dir())
        .expect("model files (scripts/fetch-model.sh)");
    let dir = tempfile::tempdir().unwrap();
    let shard = VectorShard::open(dir.path(), model.dimensions()).unwrap();

    let corpus = lines(include_str!("data/retrieval/corpus.jsonl"));
    for doc in &corpus {
        let text = format!(
            "{}. {}",
            doc["title"].as_str().unwrap(),
            doc["text"].as_str().unwrap()
        );
        let pieces: Vec<String> = chunk(&text, ChunkLimits::default(), &|s: &str| {
            model.count_tokens(s)
        })
        .into_iter()
        .map(|c| c.text)
        .collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let vectors = model.embed_batch(&refs).unwrap();
        let chunks = pieces
            .into_iter()
            .zip(vectors)
            .map(|(text, vector)| ChunkRecord { text, vector })
            .collect();
        shard
            .replace_document(
                TENANT,
                doc["id"].as_str().unwrap(),
                &serde_json::json!({}),
                chunks,
            )
            .unwrap();
    }

    let questions = lines(include_str!("data/retrieval/questions.jsonl"));
    let no_filter = MetadataFilter::default();
    let mut scores: BTreeMap<(&str, String), Score> = BTreeMap::new();
    let mut vector_misses = Vec::new();
    for q in &questions {
        let question = q["question"].as_str().unwrap();
        let relevant: Vec<&str> = q["relevant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let kind = q["kind"].as_str().unwrap().to_owned();
        let vector = model.embed_batch(&[question]).unwrap().remove(0);
        for (mode, text) in [("vector", None), ("hybrid", Some(question))] {
            let hits = shard
                .search(
                    TENANT,
                    &Retrieval {
                        vector: &vector,
                        text,
                        limit: DEPTH * 2,
                        score_floor: Some(cell::config::DEFAULT_SCORE_FLOOR),
                        filter: &no_filter,
                        exact: false,
                    },
                )
                .unwrap();
            let hits = collapse_near_duplicates(hits, DEPTH * 2);
            let mut documents: Vec<&str> = Vec::new();
            for h in &hits {
                if !documents.contains(&h.document_id.as_str()) {
                    documents.push(&h.document_id);
                }
            }
            documents.truncate(DEPTH);
            let rank = documents
                .iter()
                .position(|d| relevant.contains(d))
                .map(|p| p + 1);
            if std::env::var("EVAL_RANKS").is_ok() {
                println!("RANK {mode} {rank:?} {question}");
            }
            scores.entry((mode, "all".into())).or_default().add(rank);
            scores.entry((mode, kind.clone())).or_default().add(rank);
            if mode == "vector" && rank.is_none_or(|r| r > 5) {
                vector_misses.push(format!(
                    "{question} -> {:?}",
                    &documents[..documents.len().min(3)]
                ));
            }
        }
    }

    println!(
        "retrieval eval: {} documents, {} questions",
        corpus.len(),
        questions.len()
    );
    println!("{:<8} {:<11} {:>6} {:>7}", "mode", "kind", "hit@5", "MRR");
    for ((mode, kind), s) in &scores {
        println!(
            "{mode:<8} {kind:<11} {:>6.3} {:>7.3}   ({} questions)",
            s.hit_at_5(),
            s.mrr(),
            s.questions
        );
    }
    println!("vector-only misses at 5:");
    for m in &vector_misses {
        println!("  {m}");
    }

    let vector = scores[&("vector", "all".to_owned())];
    let hybrid = scores[&("hybrid", "all".to_owned())];
    assert!(
        vector.hit_at_5() >= 0.80,
        "vector hit@5 {:.3}",
        vector.hit_at_5()
    );
    assert!(
        hybrid.hit_at_5() >= 0.80,
        "hybrid hit@5 {:.3}",
        hybrid.hit_at_5()
    );
    // Exact identifiers are what lexical retrieval is for.
    let vector_ids = scores[&("vector", "identifier".to_owned())];
    let hybrid_ids = scores[&("hybrid", "identifier".to_owned())];
    assert!(
        hybrid_ids.mrr() >= vector_ids.mrr(),
        "hybrid MRR on identifiers {:.3} below vector-only {:.3}",
        hybrid_ids.mrr(),
        vector_ids.mrr()
    );
}
