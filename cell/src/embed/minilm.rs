//! all-MiniLM-L6-v2 in pure Rust with candle: BERT forward pass, mean pooling
//! under the attention mask, L2 normalisation, 384 dimensions. The files come
//! from a local folder filled at set-up (`scripts/fetch-model.sh`); nothing is
//! fetched at run time.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, MINILM_DIMENSIONS};

/// The model's positional limit as trained for sentence embeddings.
pub const MAX_TOKENS: usize = 256;
/// The model's name as the OpenAI-compatible API lists it.
pub const MODEL_ID: &str = "all-MiniLM-L6-v2";

pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    /// A second tokenizer without padding or truncation, for counting.
    counter: Tokenizer,
    device: Device,
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
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| fail(format!("config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let mut counter = tokenizer.clone();
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every input to a fixed 128 tokens; pad a
        // batch only to its longest member instead, and cut at the model's limit.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("tokenizer.json: {e}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| fail(format!("model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| fail(format!("weights: {e}")))?;
        Ok(Self {
            model,
            tokenizer,
            counter,
            device,
        })
    }

    fn forward(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let ids: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_ids(), &self.device))
            .collect::<candle_core::Result<_>>()?;
        let masks: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<candle_core::Result<_>>()?;
        let input_ids = Tensor::stack(&ids, 0)?;
        let attention_mask = Tensor::stack(&masks, 0)?;
        let token_type_ids = input_ids.zeros_like()?;
        let hidden = self
            .model
            .forward(&input_ids, &token_type_ids, Some(&attention_mask))?;
        // Mean over real tokens only: padding must not pull the average.
        let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
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
        self.forward(texts)
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
