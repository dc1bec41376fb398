//! OpenAI-compatible chat completions (OpenAI itself, vLLM, Ollama, the
//! llama.cpp server): `POST {base_url}/chat/completions` with an optional
//! bearer key; the same request, answer and error bodies as OpenAI's API.

use std::time::Duration;

use serde_json::json;

use super::azure::{openai_error_message, parse_chat_completion};
use super::http::ProviderHttp;
use super::wire::exchange;
use super::{ChatRequest, Completion, ProviderError};
use crate::config::Secret;

#[derive(Debug)]
pub struct OpenAiCompatible {
    pub name: String,
    pub region: String,
    /// Up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
    pub http: ProviderHttp,
}

impl OpenAiCompatible {
    pub fn url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    pub fn request_body(&self, request: &ChatRequest) -> serde_json::Value {
        json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        })
    }

    pub async fn chat(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<Completion, ProviderError> {
        let mut outgoing = self
            .http
            .client()
            .post(self.url())
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&self.request_body(request));
        if let Some(key) = &self.api_key {
            outgoing = outgoing.bearer_auth(key.expose());
        }
        let body = exchange(&self.name, self.timeout, outgoing)
            .await?
            .success(&self.name, openai_error_message)?;
        parse_chat_completion(&self.name, &body, &self.model)
    }

    /// Embeddings from `{base_url}/embeddings` with this model.
    pub async fn embed(
        &self,
        texts: &[&str],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut outgoing = self
            .http
            .client()
            .post(format!(
                "{}/embeddings",
                self.base_url.trim_end_matches('/')
            ))
            .json(&json!({"model": self.model, "input": texts, "dimensions": dimensions}));
        if let Some(key) = &self.api_key {
            outgoing = outgoing.bearer_auth(key.expose());
        }
        let body = exchange(&self.name, self.timeout, outgoing)
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
        let mut body = self.request_body(request);
        body["stream"] = true.into();
        body["stream_options"] = json!({"include_usage": true});
        let mut outgoing = self
            .http
            .client()
            .post(self.url())
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&body);
        if let Some(key) = &self.api_key {
            outgoing = outgoing.bearer_auth(key.expose());
        }
        let response =
            super::wire::open_stream(&self.name, self.timeout, outgoing, openai_error_message)
                .await?;
        Ok(super::stream::openai_events(self.name.clone(), response))
    }
}
