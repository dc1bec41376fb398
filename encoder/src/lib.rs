//! BERT sentence embeddings on the CPU, built for the latency of one short
//! query: a question of ten tokens is a matrix of ten rows, where general
//! matrix libraries spend more time scheduling threads and allocating
//! tensors than multiplying. Here one text is one forward pass on the
//! calling thread, through weights packed once at load for that shape
//! ([`linear`]), with every loop compiled for AVX2 and FMA when the CPU has
//! them ([`dispatch`]).
//!
//! The encoder takes token ids and returns the mean of the last hidden
//! states, L2-normalised: the sentence-transformers pooling of models such as
//! all-MiniLM-L6-v2. Tokenising is the caller's.

mod dispatch;
mod linear;
mod math;
mod model;

pub use model::{BertConfig, BertEncoder};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("config.json: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("no tokens to encode")]
    Empty,
    #[error("{tokens} tokens exceed the model's {limit} positions")]
    TooLong { tokens: usize, limit: usize },
    #[error("token id {id} is outside the model's vocabulary of {vocabulary}")]
    UnknownToken { id: u32, vocabulary: usize },
}
