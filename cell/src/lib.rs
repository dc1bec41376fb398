//! One cell: the RAG orchestrator over its own semantic-cache shard (Redis),
//! vector shard (Qdrant's embedded engine) and in-process embedder, calling
//! LLM providers across regions. Modules follow the request path.

pub mod api;
pub mod cache;
pub mod config;
pub mod embed;
pub mod error;
pub mod ingest;
pub mod llm;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod server;
pub mod simd;
pub mod vector;
