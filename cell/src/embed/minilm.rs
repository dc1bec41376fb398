//! all-MiniLM-L6-v2 in pure Rust: the tokenizer from Hugging Face's
//! `tokenizers`, the BERT forward pass, mean pooling and L2 normalisation
//! from the workspace's `encoder`; 384 dimensions. The files come from a
//! local folder filled at set-up (`scripts/fetch-model.sh`); nothing is
//! fetched at run time.

use std::path::Path;

use encoder::{BertConfig, BertEncoder};
use tokenizers::{Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, MINILM_DIMENSIONS};

/// The model's positional limit as trained for sentence embeddings.
pub const MAX_TOKENS: usize = 256;
/// The model's name as the OpenAI-compatible API lists it.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2";

pub struct MiniLm {
    encoder: BertEncoder,
    /// Cuts each text at [`MAX_TOKENS`]; never pads, as every text is
    /// encoded on its own.
    tokenizer: Tokenizer,
    /// A second tokenizer without truncation, for counting.
    counter: Tokenizer,
    /// Threads a batch of texts is spread over.
    threads: usize,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm").finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let fail = |message: String| EmbedError::Load {
            path: dir.display().to_string(),
            message,
        };
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| fail(format!("config.json: {e}")))?;
        let config = BertConfig::from_json(&config_text).map_err(|e| fail(e.to_string()))?;
        if config.hidden_size != MINILM_DIMENSIONS {
            return Err(fail(format!(
                "config.json: hidden_size {} is not {MINILM_DIMENSIONS}",
                config.hidden_size
            )));
        }
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to a fixed 128 tokens.
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let encoder = BertEncoder::from_safetensors(&weights, &config)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            encoder,
            tokenizer,
            counter,
            threads,
        })
    }
}

impl Embedder for MiniLm {
    fn dimensions(&self) -> usize {
        MINILM_DIMENSIONS
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = match texts {
            // One text skips the batch path and its thread pool.
            [text] => self.tokenizer.encode(*text, true).map(|e| vec![e]),
            _ => self.tokenizer.encode_batch(texts.to_vec(), true),
        }
        .map_err(|e| EmbedError::Inference(format!("tokenizing: {e}")))?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        // One short query is fastest on the calling thread alone.
        let threads = if texts.len() == 1 { 1 } else { self.threads };
        self.encoder
            .embed_many(&ids, threads)
            .map_err(|e| EmbedError::Inference(e.to_string()))
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.counter
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or_else(|_| text.split_whitespace().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    fn model() -> Option<MiniLm> {
        let dir = crate::config::default_model_dir();
        if !dir.join("model.safetensors").exists() {
            panic!(
                "model files missing in {} (run scripts/fetch-model.sh)",
                dir.display()
            );
        }
        Some(MiniLm::load(&dir).unwrap())
    }

    #[test]
    fn matches_reference_embedding() {
        let m = model().unwrap();
        let v = m.embed_batch(&["This is an example sentence"]).unwrap();
        assert_eq!(v[0].len(), 384);
        let expected = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374];
        for (got, want) in v[0].iter().zip(expected) {
            assert!((got - want).abs() < 2e-3, "got {:?}", &v[0][..5]);
        }
        let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    /// Embeddings of all-MiniLM-L6-v2 recorded with candle's BERT (f32), the
    /// cell's embedder before `encoder`: short and long questions, one word,
    /// non-ASCII text and a text cut at 256 tokens.
    #[test]
    fn matches_recorded_reference_embeddings() {
        let m = model().unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/minilm_reference.jsonl"
        );
        let lines = std::fs::read_to_string(path).unwrap();
        let mut references = Vec::new();
        for line in lines.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = record["text"].as_str().unwrap().to_owned();
            let vector: Vec<f32> = serde_json::from_value(record["embedding"].clone()).unwrap();
            references.push((text, vector));
        }
        assert!(references.len() >= 10);
        let texts: Vec<&str> = references.iter().map(|(t, _)| t.as_str()).collect();
        let batched = m.embed_batch(&texts).unwrap();
        for ((text, want), in_batch) in references.iter().zip(&batched) {
            let alone = &m.embed_batch(&[text]).unwrap()[0];
            for got in [alone, in_batch] {
                let worst = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-5, "{text:?}: off by {worst}");
            }
        }
    }

    #[test]
    fn similar_and_unrelated_pairs() {
        let m = model().unwrap();
        let v = m
            .embed_batch(&[
                "What is the price?",
                "Tell me the price?",
                "The cat sleeps on the warm windowsill.",
            ])
            .unwrap();
        let same = cosine(&v[0], &v[1]);
        let unrelated = cosine(&v[0], &v[2]);
        assert!((same - 0.86).abs() < 0.03, "paraphrase cosine {same}");
        assert!(unrelated < 0.2, "unrelated cosine {unrelated}");
    }

    #[test]
    fn batching_does_not_change_results() {
        let m = model().unwrap();
        let alone = m.embed_batch(&["short"]).unwrap();
        let batched = m
            .embed_batch(&[
                "short",
                "a much longer sentence that forces padding of the first",
            ])
            .unwrap();
        for (a, b) in alone[0].iter().zip(&batched[0]) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
