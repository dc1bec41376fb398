//! Azure OpenAI chat completions client, per the public REST reference:
//! `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`,
//! `api-key` header, `{"error": {"code", "message"}}` error bodies, and
//! `retry-after` / `retry-after-ms` on 429.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::http::ProviderHttp;
use super::wire::{exchange, snippet};
use super::{ChatRequest, Completion, ProviderError};
use crate::cache::Usage;
use crate::config::Secret;

/// The GA API version this client speaks.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

#[derive(Debug)]
pub struct AzureOpenAi {
    pub name: String,
    pub region: String,
    pub endpoint: String,
    pub deployment: String,
    pub api_version: String,
    pub auth: AzureAuth,
    pub timeout: Duration,
    pub http: ProviderHttp,
}

/// How requests authenticate: a resource key (`api-key`) or an Entra ID
/// bearer token.
#[derive(Debug)]
pub enum AzureAuth {
    ApiKey(Secret),
    Entra(super::oauth::OAuthTokens),
}

#[derive(Deserialize)]
struct ChatResponse {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

impl AzureOpenAi {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    async fn authorised(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(match &self.auth {
            AzureAuth::ApiKey(key) => request.header("api-key", key.expose()),
            AzureAuth::Entra(tokens) => {
                let token = tokens
                    .token(&self.http.client(), self.timeout)
                    .await
                    .map_err(|message| ProviderError::Connect {
                        provider: self.name.clone(),
                        message: format!("no Entra token: {message}"),
                    })?;
                request.bearer_auth(token.expose())
            }
        })
    }

    fn url(&self) -> String {
        format!(
            "{}/openai/deployments/{}/chat/completions?api-version={}",
            self.endpoint.trim_end_matches('/'),
            self.deployment,
            self.api_version
        )
    }

    pub async fn chat(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<Completion, ProviderError> {
        let body = json!({
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        let request = self
            .authorised(self.http.client().post(self.url()))
            .await?
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&body);
        let body = exchange(&self.name, self.timeout, request)
            .await?
            .success(&self.name, openai_error_message)?;
        parse_chat_completion(&self.name, &body, &self.deployment)
    }

    /// Embeddings from this deployment (an embedding model), `dimensions` long.
    pub async fn embed(
        &self,
        texts: &[&str],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let url = format!(
            "{}/openai/deployments/{}/embeddings?api-version={}",
            self.endpoint.trim_end_matches('/'),
            self.deployment,
            self.api_version
        );
        let request = self
            .authorised(self.http.client().post(url))
            .await?
            .json(&json!({"input": texts, "dimensions": dimensions}));
        let body = exchange(&self.name, self.timeout, request)
            .await?
            .success(&self.name, openai_error_message)?;
        super::wire::parse_openai_embeddings(&self.name, &body)
    }

    /// The same request, streamed (`"stream": true`, usage in the last chunk).
    pub async fn chat_stream(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<super::stream::TokenStream, ProviderError> {
        let body = json!({
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let outgoing = self
            .authorised(self.http.client().post(self.url()))
            .await?
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&body);
        let response =
            super::wire::open_stream(&self.name, self.timeout, outgoing, openai_error_message)
                .await?;
        Ok(super::stream::openai_events(self.name.clone(), response))
    }
}

/// An OpenAI-format chat completion (Azure OpenAI and OpenAI-compatible
/// servers answer alike) as a `Completion`.
pub fn parse_chat_completion(
    provider: &str,
    body: &[u8],
    default_model: &str,
) -> Result<Completion, ProviderError> {
    let decode = |message: String| ProviderError::Decode {
        provider: provider.to_owned(),
        message,
    };
    let parsed: ChatResponse = serde_json::from_slice(body).map_err(|e| decode(e.to_string()))?;
    let content = parsed
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.message.content)
        .ok_or_else(|| decode("no choices in the response".to_owned()))?;
    let usage = parsed
        .usage
        .map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        })
        .unwrap_or_default();
    Ok(Completion {
        content,
        model: parsed.model.unwrap_or_else(|| default_model.to_owned()),
        usage,
    })
}

/// `{"error": {"message": …}}`, the error body of OpenAI and Azure OpenAI.
pub fn openai_error_message(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| snippet(body))
}
