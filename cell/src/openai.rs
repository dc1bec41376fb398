//! The OpenAI-compatible surface, so that the official SDKs work with only a
//! new base URL and API key:
//!
//! - `POST /v1/chat/completions`: the last user message is the question; it
//!   goes through the same pipeline as `/v1/query` (cache, retrieval over the
//!   tenant's documents, providers, fallbacks). Earlier turns and client
//!   system messages are not passed to the LLM: the cell's own prompt, which
//!   keeps document text as data, stays in charge. `"stream": true` answers
//!   as server-sent `chat.completion.chunk` events ending in `data: [DONE]`.
//!   The answer is produced whole and then streamed in pieces.
//!   Responses carry a `cellnet` object with citations, cache outcome,
//!   provider, region and fallback.
//! - `POST /v1/embeddings`: the cell's embedding model, float or base64.
//! - `GET /v1/models`: the chat models of the cell's providers and the
//!   embedding model.

use std::convert::Infallible;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::api::AppState;
use crate::cache::Usage;
use crate::embed::embed_off_runtime;
use crate::pipeline::{LiveAnswer, QueryRequest, QueryResponse, RequestContext, Streamed};

/// Most inputs in one embeddings request (OpenAI's own limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Inputs embedded per batch on the blocking pool.
const EMBEDDING_BATCH: usize = 64;
/// The embedding model's input limit in tokens, special tokens included.
const MAX_EMBEDDING_TOKENS: usize = crate::embed::minilm::MAX_TOKENS;
/// Words per streamed chunk.
const WORDS_PER_CHUNK: usize = 4;

/// An error in OpenAI's shape: the SDKs read `error.message`, `error.type`,
/// `error.param` and `error.code`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    fn unknown_model(model: &str, known: &[String]) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model {model:?} does not exist here; models are: {}",
                known.join(", ")
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }})),
        )
            .into_response()
    }
}

fn from_json_rejection(e: axum::extract::rejection::JsonRejection) -> Response {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return crate::error::CellError::from(e).into_response();
    }
    ApiError::invalid(e.body_text(), None).into_response()
}

fn now_secs() -> u64 {
    control_plane::model::now_ms() / 1000
}

/// Chat models of this cell's providers, in preference order, without repeats.
pub fn chat_models(state: &AppState) -> Vec<String> {
    let mut models: Vec<String> = Vec::new();
    for p in &state.orchestrator.providers {
        if !models.iter().any(|m| m == p.model()) {
            models.push(p.model().to_owned());
        }
    }
    models
}

pub async fn list_models(State(state): State<AppState>) -> Response {
    let created = now_secs();
    let data: Vec<Value> = chat_models(&state)
        .into_iter()
        .chain(std::iter::once(
            state.ingestor.embedder.model_name().to_owned(),
        ))
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "cellnet"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    // Sampling parameters (temperature, top_p, max_tokens, seed, user, …)
    // are accepted and left to the cell's own settings.
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<MessageContent>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl MessageContent {
    fn text(&self) -> Result<String, ApiError> {
        match self {
            MessageContent::Text(t) => Ok(t.clone()),
            MessageContent::Parts(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push(t.as_str()),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                format!(
                                    "message content parts of type {kind:?} are not supported; send text"
                                ),
                                Some("messages"),
                            ));
                        }
                    }
                }
                Ok(out.join("\n"))
            }
        }
    }
}

/// The question a chat request asks: its last user message.
fn question(messages: &[ChatMessage]) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    for m in messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::invalid(
                format!("unknown message role {:?}", m.role),
                Some("messages"),
            ));
        }
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .ok_or_else(|| ApiError::invalid("no message has the role \"user\"", Some("messages")))?;
    let text = match &last_user.content {
        Some(c) => c.text()?,
        None => String::new(),
    };
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the last user message has no text",
            Some("messages"),
        ));
    }
    Ok(text)
}

#[derive(Debug, Serialize)]
struct OpenAiUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<&Usage> for OpenAiUsage {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// What the pipeline adds beyond OpenAI's fields.
fn extension(answer: &QueryResponse) -> Value {
    json!({
        "citations": answer.citations,
        "cache": answer.cache,
        "similarity": answer.similarity,
        "fallback": answer.fallback,
        "provider": answer.provider,
        "region": answer.region,
        "cost_usd": answer.cost_usd,
        "groundedness": answer.groundedness,
        "low_groundedness": answer.low_groundedness,
        "intent": answer.intent,
        "cell": answer.cell,
    })
}

pub async fn chat_completions(
    State(state): State<AppState>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    body: Result<Json<ChatCompletionRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return from_json_rejection(e),
    };
    let models = chat_models(&state);
    if !models.contains(&req.model) {
        return ApiError::unknown_model(&req.model, &models).into_response();
    }
    if req.n.is_some_and(|n| n != 1) {
        return ApiError::invalid("only n = 1 is supported", Some("n")).into_response();
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return ApiError::invalid(
            "tools are not supported: answers come from the tenant's documents",
            Some("tools"),
        )
        .into_response();
    }
    let query = match question(&req.messages) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let id = format!("chatcmpl-{}", ctx.request_id);
    let created = now_secs();
    let request = QueryRequest {
        query,
        top_k: None,
        filter: None,
    };
    if req.stream.unwrap_or(false) {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        return match state.orchestrator.query_stream(&ctx, request).await {
            Err(e) => e.into_response(),
            Ok(Streamed::Whole(answer)) => {
                let model = answer.model.clone().unwrap_or_else(|| req.model.clone());
                let tokens = answer.tokens_spent();
                let mut response = stream_answer(id, created, model, answer, include_usage);
                response.headers_mut().insert(
                    common::headers::USAGE_TOKENS,
                    HeaderValue::from(u64::from(tokens)),
                );
                response
            }
            Ok(Streamed::Live(live)) => {
                let model = state.orchestrator.providers[live.index].model().to_owned();
                stream_live(state, ctx, id, created, model, live, include_usage)
            }
        };
    }
    let answer = match state.orchestrator.query(&ctx, request).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let model = answer.model.clone().unwrap_or_else(|| req.model.clone());
    let tokens = answer.tokens_spent();
    let mut response = Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": Value::Null,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.answer, "refusal": Value::Null},
            "logprobs": Value::Null,
            "finish_reason": "stop",
        }],
        "usage": OpenAiUsage::from(&answer.usage),
        "cellnet": extension(&answer),
    }))
    .into_response();
    response.headers_mut().insert(
        common::headers::USAGE_TOKENS,
        HeaderValue::from(u64::from(tokens)),
    );
    response
}

/// Relays a provider's stream as it arrives. The answer's end is
/// postprocessed like a whole one (citations, cache store) and sent in the
/// last chunk. If the provider fails after its first text, the stream ends
/// with an explicit error event and no `[DONE]`: never a silently
/// truncated answer. (Its tokens are counted by the cell's metrics; the
/// router's quota sees only whole answers.)
fn stream_live(
    state: AppState,
    ctx: RequestContext,
    id: String,
    created: u64,
    model: String,
    live: LiveAnswer,
    include_usage: bool,
) -> Response {
    use crate::llm::stream::StreamEvent;
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": Value::Null,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        })
    };
    let idle = state.orchestrator.providers[live.index].timeout();
    // The task carries the query's span: what happens after the first token
    // stays in the request's trace.
    let query_span = live.spans.query.clone();
    tokio::spawn(async move {
        let LiveAnswer {
            ask,
            index,
            first,
            mut rest,
            spans,
        } = live;
        let send = |v: Value| {
            let tx = tx.clone();
            async move { tx.send(format!("data: {v}\n\n")).await.is_ok() }
        };
        if !send(chunk(json!({"role": "assistant", "content": ""}), None)).await {
            return;
        }
        let mut text = first.clone();
        if !send(chunk(json!({"content": first}), None)).await {
            return;
        }
        loop {
            let event = match tokio::time::timeout(idle, rest.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => Err(crate::llm::ProviderError::Connect {
                    provider: state.orchestrator.providers[index].name().to_owned(),
                    message: "the stream ended early".into(),
                }),
                Err(_) => Err(crate::llm::ProviderError::Timeout {
                    provider: state.orchestrator.providers[index].name().to_owned(),
                    after: idle,
                }),
            };
            match event {
                Ok(StreamEvent::Delta(piece)) => {
                    text.push_str(&piece);
                    if !send(chunk(json!({"content": piece}), None)).await {
                        return;
                    }
                }
                Ok(StreamEvent::Done { usage, model: used }) => {
                    let answer = state
                        .orchestrator
                        .finish_stream(&ctx, ask, index, (text, usage, used), &spans)
                        .await;
                    let mut last = chunk(json!({}), Some("stop"));
                    last["cellnet"] = extension(&answer);
                    if !send(last).await {
                        return;
                    }
                    if include_usage {
                        let mut usage_chunk = chunk(json!({}), None);
                        usage_chunk["choices"] = json!([]);
                        usage_chunk["usage"] = json!(OpenAiUsage::from(&answer.usage));
                        if !send(usage_chunk).await {
                            return;
                        }
                    }
                    let usage_comment = format!(
                        "{}{}\n\n",
                        common::headers::USAGE_TOKENS_SSE_COMMENT,
                        answer.tokens_spent()
                    );
                    if tx.send(usage_comment).await.is_err() {
                        return;
                    }
                    let _ = tx.send("data: [DONE]\n\n".to_owned()).await;
                    return;
                }
                Err(e) => {
                    spans.interrupted(&e);
                    tracing::warn!(error = %e, "provider stream failed after its first text");
                    state.orchestrator.provider_stats.record(
                        state.orchestrator.providers[index].name(),
                        crate::llm::health::AttemptOutcome::Failed,
                    );
                    let _ = send(json!({"error": {
                        "message": "the answer was interrupted: the LLM provider failed mid-stream; retry the request",
                        "type": "upstream_error",
                        "param": Value::Null,
                        "code": "stream_interrupted",
                    }}))
                    .await;
                    return;
                }
            }
        }
    }.instrument(query_span));
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, Infallible>(axum::body::Bytes::from(frame)), rx))
    });
    let mut response = Response::new(Body::from_stream(frames));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Splits `text` into pieces of a few words, keeping every character.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                words += 1;
                in_word = false;
                if words == WORDS_PER_CHUNK {
                    out.push(&text[start..i]);
                    start = i;
                    words = 0;
                }
            }
        } else {
            in_word = true;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn stream_answer(
    id: String,
    created: u64,
    model: String,
    answer: QueryResponse,
    include_usage: bool,
) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": Value::Null,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        })
    };
    let mut events: Vec<Value> = Vec::new();
    events.push(chunk(json!({"role": "assistant", "content": ""}), None));
    for piece in pieces(&answer.answer) {
        events.push(chunk(json!({"content": piece}), None));
    }
    let mut last = chunk(json!({}), Some("stop"));
    last["cellnet"] = extension(&answer);
    events.push(last);
    if include_usage {
        events.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": Value::Null,
            "choices": [],
            "usage": OpenAiUsage::from(&answer.usage),
        }));
    }
    let frames = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .chain(std::iter::once("data: [DONE]\n\n".to_owned()))
        .map(|s| Ok::<_, Infallible>(axum::body::Bytes::from(s)));
    let mut response = Response::new(Body::from_stream(futures::stream::iter(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    /// Token arrays and anything else.
    Other(serde::de::IgnoredAny),
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Json<EmbeddingsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return from_json_rejection(e),
    };
    match embed(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn embed(state: &AppState, req: EmbeddingsRequest) -> Result<Response, ApiError> {
    let embedding_model = state.ingestor.embedder.model_name().to_owned();
    let embedding_model = embedding_model.as_str();
    if req.model != embedding_model {
        return Err(ApiError::unknown_model(
            &req.model,
            &[embedding_model.to_owned()],
        ));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
                Some("encoding_format"),
            ));
        }
    };
    let embedder = state.ingestor.embedder.clone();
    let dimensions = embedder.dimensions();
    if let Some(d) = req.dimensions
        && d != dimensions
    {
        return Err(ApiError::invalid(
            format!("{embedding_model} has {dimensions} dimensions; it cannot give {d}"),
            Some("dimensions"),
        ));
    }
    let inputs = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Other(_) => {
            return Err(ApiError::invalid(
                "input must be a string or an array of strings; token arrays are not supported",
                Some("input"),
            ));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::invalid(
            format!("input must hold 1 to {MAX_EMBEDDING_INPUTS} strings"),
            Some("input"),
        ));
    }
    let mut prompt_tokens = 0usize;
    for (i, text) in inputs.iter().enumerate() {
        if text.is_empty() {
            return Err(ApiError::invalid(
                format!("input[{i}] is empty"),
                Some("input"),
            ));
        }
        // Two special tokens frame every input.
        let tokens = embedder.count_tokens(text) + 2;
        if tokens > MAX_EMBEDDING_TOKENS {
            return Err(ApiError::invalid(
                format!(
                    "input[{i}] has {tokens} tokens; {embedding_model} takes at most {MAX_EMBEDDING_TOKENS}"
                ),
                Some("input"),
            ));
        }
        prompt_tokens += tokens;
    }
    let mut data = Vec::with_capacity(inputs.len());
    for batch in inputs.chunks(EMBEDDING_BATCH) {
        let vectors = embed_off_runtime(embedder.clone(), batch.to_vec())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "embedding failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "the embedding model failed".into(),
                    kind: "server_error",
                    param: None,
                    code: None,
                }
            })?;
        for v in vectors {
            let index = data.len();
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
        }
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": embedding_model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_every_character() {
        for text in [
            "",
            "one",
            "one two three four five six seven eight nine",
            "  leading and trailing  ",
            "multi\nline\ttext with ünïcödé ✓ words",
        ] {
            assert_eq!(pieces(text).concat(), text);
        }
        assert_eq!(pieces("a b c d e f").len(), 2);
    }

    fn messages(v: Value) -> Vec<ChatMessage> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let m = messages(json!([
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "first?"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}]},
        ]));
        assert_eq!(question(&m).unwrap(), "second\npart");
    }

    #[test]
    fn chat_requests_without_a_usable_question_are_refused() {
        assert!(question(&[]).is_err());
        assert!(question(&messages(json!([{"role": "system", "content": "x"}]))).is_err());
        assert!(question(&messages(json!([{"role": "user", "content": "  "}]))).is_err());
        assert!(question(&messages(json!([{"role": "wizard", "content": "x"}]))).is_err());
        let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert!(question(&messages(image)).is_err());
    }
}
