//! Azure OpenAI chat completions, as the public REST reference defines them:
//! `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! with an `api-key` header (or an Entra bearer token), and Azure's error body
//! `{"error": {"code": …, "message": …}}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Simulator;
use super::extractive::{Reply, reply};
use super::faults::Verdict;

#[derive(Debug, Deserialize)]
pub struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

pub fn text_of(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        // Array-of-parts form: [{"type": "text", "text": "…"}].
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub async fn chat_completions(
    State(sim): State<Arc<Simulator>>,
    Path((region, deployment)): Path<(String, String)>,
    Query(version): Query<ApiVersion>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(region_state) = sim.regions.get(&region) else {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    };
    if version.api_version.as_deref().is_none_or(str::is_empty) {
        return azure_error(StatusCode::NOT_FOUND, "404", "Resource not found");
    }
    if !sim.authorised(&headers) {
        return azure_error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        );
    }
    if !region_state.config.deployments.contains(&deployment) {
        return azure_error(
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        );
    }
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return azure_error(StatusCode::BAD_REQUEST, "BadRequest", &e.body_text());
        }
    };
    if request.messages.is_empty() {
        return azure_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "'messages' is a required property",
        );
    }
    let _in_flight = super::InFlight::enter(&region_state.in_flight);
    match super::face_faults(region_state).await {
        Verdict::Serve | Verdict::Hang => {}
        Verdict::Outage => {
            return azure_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unable to process your request. Please try again later.",
            );
        }
        Verdict::Error => {
            return azure_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "The server had an error while processing your request. Sorry about that!",
            );
        }
        Verdict::Throttle(after) => {
            let mut response = azure_error(
                StatusCode::TOO_MANY_REQUESTS,
                "429",
                &format!(
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {} seconds.",
                    version.api_version.as_deref().unwrap_or_default(),
                    after.as_secs().max(1)
                ),
            );
            let headers = response.headers_mut();
            if let Ok(v) = after.as_secs().max(1).to_string().parse() {
                headers.insert("retry-after", v);
            }
            if let Ok(v) = after.as_millis().to_string().parse() {
                headers.insert("retry-after-ms", v);
            }
            return response;
        }
    }

    let prompt_text: Vec<String> = request
        .messages
        .iter()
        .map(|m| text_of(&m.content))
        .collect();
    let user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .unwrap_or_default();
    let Reply {
        content,
        prompt_tokens,
        completion_tokens,
    } = reply(
        &prompt_text,
        &user,
        request.max_tokens,
        region_state.faults().confabulate,
    );
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    tracing::info!(%region, %deployment, %request_id, "chat completion");
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens
    });
    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        return super::sse_response(
            super::openai_chunks(&deployment, &content, include_usage.then_some(usage)),
            region_state.faults().cut_after_chunks,
        );
    }
    (
        [("apim-request-id", uuid::Uuid::new_v4().to_string())],
        Json(json!({
            "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            "object": "chat.completion",
            "created": created,
            "model": deployment,
            "system_fingerprint": "fp_sim",
            "choices": [{
                "index": 0,
                "finish_reason": "stop",
                "logprobs": null,
                "message": {"role": "assistant", "content": content}
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        })),
    )
        .into_response()
}

pub async fn stats(State(sim): State<Arc<Simulator>>) -> Json<serde_json::Value> {
    let regions: serde_json::Map<String, serde_json::Value> = sim
        .regions
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                json!({
                    "requests": r.requests.load(Ordering::Relaxed),
                    "failed": r.failed.load(Ordering::Relaxed),
                    "in_flight": r.in_flight.load(Ordering::Relaxed),
                }),
            )
        })
        .collect();
    Json(json!({ "regions": regions }))
}
