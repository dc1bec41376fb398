//! OpenAI-compatible chat completions (`POST /v1/chat/completions`, bearer
//! key, `model` in the body), as OpenAI, vLLM, Ollama and the llama.cpp
//! server serve them; OpenAI's error body
//! `{"error": {"message", "type", "param", "code"}}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::azure::text_of;
use super::extractive::{Reply, reply};
use super::faults::Verdict;
use super::{InFlight, Simulator, face_faults};

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    role: String,
    #[serde(default)]
    content: serde_json::Value,
}

pub(super) fn openai_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})),
    )
        .into_response()
}

pub async fn chat_completions(
    State(sim): State<Arc<Simulator>>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(region_state) = sim.regions.get(&region) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            "Not found",
        );
    };
    if !sim.authorised(&headers) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        );
    }
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &e.body_text(),
            );
        }
    };
    if !region_state.config.deployments.contains(&request.model) {
        return openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            &format!("The model `{}` does not exist.", request.model),
        );
    }
    if request.messages.is_empty() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "messages must not be empty",
        );
    }
    let _in_flight = InFlight::enter(&region_state.in_flight);
    match face_faults(region_state).await {
        Verdict::Serve | Verdict::Hang => {}
        Verdict::Outage => {
            return openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                None,
                "The server is overloaded or not ready yet.",
            );
        }
        Verdict::Error => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "The server had an error while processing your request.",
            );
        }
        Verdict::Throttle(after) => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached for requests.",
            );
            if let Ok(v) = after.as_secs().max(1).to_string().parse() {
                response.headers_mut().insert("retry-after", v);
            }
            return response;
        }
    }
    let user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .unwrap_or_default();
    let prompt_text: Vec<String> = request
        .messages
        .iter()
        .map(|m| text_of(&m.content))
        .collect();
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
    if request.stream == Some(true) {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.get("include_usage"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let usage = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        });
        return super::sse_response(
            super::openai_chunks(&request.model, &content, include_usage.then_some(usage)),
            region_state.faults().cut_after_chunks,
        );
    }
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
    .into_response()
}
