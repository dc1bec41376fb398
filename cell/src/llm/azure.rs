//! Azure OpenAI chat completions client, per the public REST reference:
//! `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`,
//! `api-key` header, `{"error": {"code", "message"}}` error bodies, and
//! `retry-after` / `retry-after-ms` on 429.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

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
    pub api_key: Secret,
    pub timeout: Duration,
    pub http: reqwest::Client,
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

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    read("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| read("retry-after").map(Duration::from_secs_f64))
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
        let send = self
            .http
            .post(self.url())
            .header("api-key", self.api_key.expose())
            .header(common::headers::REQUEST_ID, request_id)
            .json(&body)
            .send();
        let response = match tokio::time::timeout(self.timeout, send).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    provider: self.name.clone(),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(ProviderError::Timeout {
                    provider: self.name.clone(),
                    after: self.timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(ProviderError::Connect {
                    provider: self.name.clone(),
                    message: e.to_string(),
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let bytes = tokio::time::timeout(self.timeout, response.bytes())
            .await
            .map_err(|_| ProviderError::Timeout {
                provider: self.name.clone(),
                after: self.timeout,
            })?
            .map_err(|e| ProviderError::Connect {
                provider: self.name.clone(),
                message: e.to_string(),
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(ProviderError::Status {
                provider: self.name.clone(),
                status: status.as_u16(),
                message,
                retry_after: wait,
            });
        }
        let parsed: ChatResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode {
                provider: self.name.clone(),
                message: e.to_string(),
            })?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| ProviderError::Decode {
                provider: self.name.clone(),
                message: "no choices in the response".to_owned(),
            })?;
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
            model: parsed.model.unwrap_or_else(|| self.deployment.clone()),
            usage,
        })
    }
}
