//! Embedders turn text into unit vectors. The cell's default is
//! all-MiniLM-L6-v2 run in-process; remote embedders plug in behind the same
//! trait.

pub mod batch;
pub mod minilm;
pub mod remote;

use std::sync::Arc;

pub use batch::QueryEmbedder;
pub use minilm::MiniLm;

/// Dimensions of all-MiniLM-L6-v2's sentence embeddings.
pub const MINILM_DIMENSIONS: usize = 384;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot load the embedding model from {path}: {message}")]
    Load { path: String, message: String },
    #[error("embedding failed: {0}")]
    Inference(String),
}

/// Text → L2-normalised vectors.
pub trait Embedder: Send + Sync + 'static {
    /// The model's name, as the OpenAI-compatible API lists it.
    fn model_name(&self) -> &str {
        minilm::MODEL_ID
    }
    fn dimensions(&self) -> usize;
    /// Embeds a batch; blocking and CPU-bound, so callers run it off the async runtime.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Tokens in `text` as the model counts them (no special tokens).
    fn count_tokens(&self, text: &str) -> usize;
}

/// Embeds on the blocking pool so inference never stalls the async runtime.
pub async fn embed_off_runtime(
    embedder: Arc<dyn Embedder>,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        embedder.embed_batch(&refs)
    })
    .await
    .map_err(|e| EmbedError::Inference(format!("embedding task failed: {e}")))?
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
