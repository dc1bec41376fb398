//! Embedding through a provider's embeddings API (Azure OpenAI, Vertex AI
//! `:predict`, OpenAI-compatible `/embeddings`) behind the same trait as the
//! local model. Vectors are asked for at the shard's dimensions and
//! normalised here, so cosine similarity means the same as locally. Token
//! counts for chunking still come from the local tokenizer.

use std::path::Path;

use tokenizers::Tokenizer;

use super::{EmbedError, Embedder};
use crate::llm::AnyProvider;

pub struct RemoteEmbedder {
    provider: AnyProvider,
    dimensions: usize,
    tokenizer: Tokenizer,
    runtime: tokio::runtime::Handle,
}

impl RemoteEmbedder {
    /// `model_dir` holds the tokenizer used to size chunks.
    pub fn new(
        provider: AnyProvider,
        dimensions: usize,
        model_dir: &Path,
    ) -> Result<Self, EmbedError> {
        let path = model_dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| EmbedError::Load {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            provider,
            dimensions,
            tokenizer,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

impl Embedder for RemoteEmbedder {
    fn model_name(&self) -> &str {
        self.provider.model()
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Called on the blocking pool (as every `embed_batch` is), so waiting
    /// on the runtime for the HTTP call is allowed here.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let vectors = self
            .runtime
            .block_on(self.provider.embed(texts, self.dimensions))
            .map_err(|e| EmbedError::Inference(e.to_string()))?;
        if vectors.len() != texts.len() {
            return Err(EmbedError::Inference(format!(
                "{} returned {} embeddings for {} inputs",
                self.provider.name(),
                vectors.len(),
                texts.len()
            )));
        }
        vectors
            .into_iter()
            .map(|mut v| {
                if v.len() != self.dimensions {
                    return Err(EmbedError::Inference(format!(
                        "{} returned {} dimensions, not {}",
                        self.provider.name(),
                        v.len(),
                        self.dimensions
                    )));
                }
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                Ok(v)
            })
            .collect()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().len())
            .unwrap_or_else(|_| text.split_whitespace().count())
    }
}
