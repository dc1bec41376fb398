//! LLM providers and the order the cell tries them in. Each provider-region is
//! one `Provider`; the cell walks its configured list and moves to the next
//! region on errors that another region may not have.

pub mod azure;
pub mod health;
pub mod http;
pub mod oauth;
pub mod openai_compatible;
pub mod resilience;
pub mod stream;
pub mod vertex;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Usage;

/// A chat request as the pipeline builds it.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub system: String,
    pub user: String,
    pub max_tokens: u32,
    pub temperature: f32,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub model: String,
    pub usage: Usage,
}

/// Where a provider error came from and whether another attempt may help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: timed out after {after:?}")]
    Timeout { provider: String, after: Duration },
    #[error("{provider}: cannot connect: {message}")]
    Connect { provider: String, message: String },
    #[error("{provider}: HTTP {status}: {message}")]
    Status {
        provider: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{provider}: unreadable response: {message}")]
    Decode { provider: String, message: String },
}

impl ProviderError {
    /// The error's class, for `error.type` on spans: `timeout`,
    /// `connect_error`, `decode_error` or the HTTP status.
    pub fn kind(&self) -> std::borrow::Cow<'static, str> {
        match self {
            ProviderError::Timeout { .. } => "timeout".into(),
            ProviderError::Connect { .. } => "connect_error".into(),
            ProviderError::Status { status, .. } => status.to_string().into(),
            ProviderError::Decode { .. } => "decode_error".into(),
        }
    }

    /// Whether the same request may succeed elsewhere or later: timeouts,
    /// connection failures, 408, 429 and 5xx. A 400 or 401 will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Timeout { .. } | ProviderError::Connect { .. } => true,
            ProviderError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            ProviderError::Decode { .. } => false,
        }
    }
}

/// One provider-region. An enum rather than a trait object: the set of wire
/// formats is closed and known, and calls need no boxed futures.
#[derive(Clone)]
pub enum AnyProvider {
    Azure(Arc<azure::AzureOpenAi>),
    Vertex(Arc<vertex::VertexAi>),
    OpenAiCompatible(Arc<openai_compatible::OpenAiCompatible>),
}

impl AnyProvider {
    pub fn name(&self) -> &str {
        match self {
            AnyProvider::Azure(p) => p.name(),
            AnyProvider::Vertex(p) => &p.name,
            AnyProvider::OpenAiCompatible(p) => &p.name,
        }
    }

    /// The provider in OpenTelemetry GenAI terms (`gen_ai.provider.name`).
    pub fn system(&self) -> &'static str {
        match self {
            AnyProvider::Azure(_) => "azure.ai.openai",
            AnyProvider::Vertex(_) => "gcp.vertex_ai",
            AnyProvider::OpenAiCompatible(_) => "openai",
        }
    }

    pub fn region(&self) -> &str {
        match self {
            AnyProvider::Azure(p) => p.region(),
            AnyProvider::Vertex(p) => &p.region,
            AnyProvider::OpenAiCompatible(p) => &p.region,
        }
    }

    /// The per-attempt timeout configured for this provider-region.
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            AnyProvider::Azure(p) => p.timeout,
            AnyProvider::Vertex(p) => p.timeout,
            AnyProvider::OpenAiCompatible(p) => p.timeout,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            AnyProvider::Azure(p) => p.deployment(),
            AnyProvider::Vertex(p) => &p.model,
            AnyProvider::OpenAiCompatible(p) => &p.model,
        }
    }

    pub async fn chat(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<Completion, ProviderError> {
        match self {
            AnyProvider::Azure(p) => p.chat(request, request_id).await,
            AnyProvider::Vertex(p) => p.chat(request, request_id).await,
            AnyProvider::OpenAiCompatible(p) => p.chat(request, request_id).await,
        }
    }

    /// Embeddings of `texts`, `dimensions` long, in input order.
    pub async fn embed(
        &self,
        texts: &[&str],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        match self {
            AnyProvider::Azure(p) => p.embed(texts, dimensions).await,
            AnyProvider::Vertex(p) => p.embed(texts, dimensions).await,
            AnyProvider::OpenAiCompatible(p) => p.embed(texts, dimensions).await,
        }
    }

    /// A streamed completion; errors before the stream starts come back here.
    pub async fn chat_stream(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<stream::TokenStream, ProviderError> {
        match self {
            AnyProvider::Azure(p) => p.chat_stream(request, request_id).await,
            AnyProvider::Vertex(p) => p.chat_stream(request, request_id).await,
            AnyProvider::OpenAiCompatible(p) => p.chat_stream(request, request_id).await,
        }
    }
}
