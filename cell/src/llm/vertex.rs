//! Vertex AI Gemini client, per the public REST reference:
//! `POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! with an OAuth bearer token; `contents` / `parts` / `role`,
//! `systemInstruction`, `generationConfig` in; `candidates`, `usageMetadata`,
//! `modelVersion` out; errors as `{"error": {"code", "message", "status"}}`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::http::ProviderHttp;
use super::oauth::OAuthTokens;
use super::wire::{exchange, snippet};
use super::{ChatRequest, Completion, ProviderError};
use crate::cache::Usage;

#[derive(Debug)]
pub struct VertexAi {
    pub name: String,
    pub region: String,
    /// `https://{location}-aiplatform.googleapis.com` unless overridden.
    pub endpoint: String,
    pub project: String,
    pub location: String,
    pub model: String,
    pub auth: OAuthTokens,
    pub timeout: Duration,
    pub http: ProviderHttp,
}

/// The public endpoint of a Vertex AI location.
pub fn default_endpoint(location: &str) -> String {
    format!("https://{location}-aiplatform.googleapis.com")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    total_token_count: u32,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    message: String,
    #[serde(default)]
    status: Option<String>,
}

/// The `generateContent` body for one chat request.
pub fn request_body(request: &ChatRequest) -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": request.user}]}],
        "systemInstruction": {"parts": [{"text": request.system}]},
        "generationConfig": {
            "temperature": request.temperature,
            "maxOutputTokens": request.max_tokens,
            "candidateCount": 1,
        },
    })
}

/// A `generateContent` answer as a `Completion`. An answer without text
/// (blocked by safety filters, or cut before any text) is an error: the
/// next provider may answer.
pub fn parse_response(
    provider: &str,
    body: &[u8],
    default_model: &str,
) -> Result<Completion, ProviderError> {
    let decode = |message: String| ProviderError::Decode {
        provider: provider.to_owned(),
        message,
    };
    let parsed: GenerateContentResponse =
        serde_json::from_slice(body).map_err(|e| decode(e.to_string()))?;
    let Some(candidate) = parsed.candidates.into_iter().next() else {
        let why = parsed
            .prompt_feedback
            .and_then(|f| {
                f.get("blockReason")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "no reason given".into());
        return Err(decode(format!("no candidates in the response ({why})")));
    };
    let text: String = candidate
        .content
        .map(|c| c.parts.into_iter().filter_map(|p| p.text).collect())
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(decode(format!(
            "the candidate has no text (finishReason {})",
            candidate.finish_reason.as_deref().unwrap_or("missing")
        )));
    }
    let usage = parsed
        .usage_metadata
        .map(|u| Usage {
            prompt_tokens: u.prompt_token_count,
            completion_tokens: u.candidates_token_count,
            total_tokens: u.total_token_count,
        })
        .unwrap_or_default();
    Ok(Completion {
        content: text,
        model: parsed
            .model_version
            .unwrap_or_else(|| default_model.to_owned()),
        usage,
    })
}

/// The message of a Google API error body, with its status name.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<GoogleErrorBody>(body) {
        Ok(b) => match b.error.status {
            Some(status) => format!("{status}: {}", b.error.message),
            None => b.error.message,
        },
        Err(_) => snippet(body),
    }
}

impl VertexAi {
    async fn token(&self) -> Result<crate::config::Secret, ProviderError> {
        self.auth
            .token(&self.http.client(), self.timeout)
            .await
            // Another region (or a moment later) may well get one.
            .map_err(|message| ProviderError::Connect {
                provider: self.name.clone(),
                message: format!("no access token: {message}"),
            })
    }

    pub fn url(&self) -> String {
        format!(
            "{}/v1/projects/{}/locations/{}/publishers/google/models/{}:generateContent",
            self.endpoint.trim_end_matches('/'),
            self.project,
            self.location,
            self.model
        )
    }

    pub async fn chat(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<Completion, ProviderError> {
        let token = self.token().await?;
        let outgoing = self
            .http
            .client()
            .post(self.url())
            .bearer_auth(token.expose())
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&request_body(request));
        let body = exchange(&self.name, self.timeout, outgoing)
            .await?
            .success(&self.name, error_message)?;
        parse_response(&self.name, &body, &self.model)
    }

    /// Embeddings through `:predict` on a text-embedding model:
    /// `{"instances": [{"content"}], "parameters": {"outputDimensionality"}}`
    /// → `{"predictions": [{"embeddings": {"values": [...]}}]}`.
    pub async fn embed(
        &self,
        texts: &[&str],
        dimensions: usize,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            predictions: Vec<Prediction>,
        }
        #[derive(Deserialize)]
        struct Prediction {
            embeddings: Values,
        }
        #[derive(Deserialize)]
        struct Values {
            values: Vec<f32>,
        }
        let token = self.token().await?;
        let url = self.url().replace(":generateContent", ":predict");
        let instances: Vec<Value> = texts.iter().map(|t| json!({"content": t})).collect();
        let outgoing = self
            .http
            .client()
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({
                "instances": instances,
                "parameters": {"outputDimensionality": dimensions},
            }));
        let body = exchange(&self.name, self.timeout, outgoing)
            .await?
            .success(&self.name, error_message)?;
        let parsed: Answer = serde_json::from_slice(&body).map_err(|e| ProviderError::Decode {
            provider: self.name.clone(),
            message: e.to_string(),
        })?;
        Ok(parsed
            .predictions
            .into_iter()
            .map(|p| p.embeddings.values)
            .collect())
    }

    /// The same request through `:streamGenerateContent?alt=sse`.
    pub async fn chat_stream(
        &self,
        request: &ChatRequest,
        request_id: &str,
    ) -> Result<super::stream::TokenStream, ProviderError> {
        let token = self.token().await?;
        let url = self
            .url()
            .replace(":generateContent", ":streamGenerateContent?alt=sse");
        let outgoing = self
            .http
            .client()
            .post(url)
            .bearer_auth(token.expose())
            .header(common::headers::REQUEST_ID, request_id)
            .headers(common::telemetry::trace_headers(&tracing::Span::current()))
            .json(&request_body(request));
        let response =
            super::wire::open_stream(&self.name, self.timeout, outgoing, error_message).await?;
        Ok(super::stream::vertex_events(self.name.clone(), response))
    }
}
