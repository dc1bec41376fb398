//! Streamed completions: server-sent events from the providers, read as a
//! stream of text deltas ending in `Done`. A stream that ends without its
//! end marker (`data: [DONE]` for OpenAI formats, a `finishReason` for Vertex
//! AI) is an error, never a silently shorter answer.

use std::pin::Pin;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;

use super::{ProviderError, wire::snippet};
use crate::cache::Usage;

/// One step of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Delta(String),
    Done { usage: Usage, model: Option<String> },
}

pub type TokenStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// Splits a byte stream into the `data:` payloads of its events.
pub fn sse_data<S>(bytes: S) -> impl Stream<Item = Result<String, String>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(bytes), Vec::<u8>::new(), false),
        |(mut bytes, mut buffer, ended)| async move {
            if ended {
                return None;
            }
            loop {
                if let Some(end) = find_event_end(&buffer) {
                    let event: Vec<u8> = buffer.drain(..end.0 + end.1).collect();
                    let text = String::from_utf8_lossy(&event[..end.0]).into_owned();
                    let data: Vec<&str> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    return Some((Ok(data.join("\n")), (bytes, buffer, false)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e.to_string()), (bytes, buffer, true))),
                    None => return None,
                }
            }
        },
    )
}

/// Where the first event in `buffer` ends: (its length, the separator's).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<OpenAiChoice>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    #[serde(default)]
    delta: Option<OpenAiDelta>,
}

#[derive(Deserialize)]
struct OpenAiDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

/// OpenAI-format chunks (Azure OpenAI, OpenAI-compatible servers).
pub fn openai_events(provider: String, response: reqwest::Response) -> TokenStream {
    let data = sse_data(response.bytes_stream());
    let state = (
        Box::pin(data),
        provider,
        Usage::default(),
        None::<String>,
        false,
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut data, provider, mut usage, mut model, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let cut = |message: String| ProviderError::Connect {
                    provider: provider.clone(),
                    message,
                };
                let payload = match data.next().await {
                    None => {
                        let e = cut("the stream ended before [DONE]".into());
                        return Some((Err(e), (data, provider, usage, model, true)));
                    }
                    Some(Err(e)) => {
                        let e = cut(format!("the stream broke: {e}"));
                        return Some((Err(e), (data, provider, usage, model, true)));
                    }
                    Some(Ok(p)) => p,
                };
                if payload.trim() == "[DONE]" {
                    let done = StreamEvent::Done {
                        usage,
                        model: model.clone(),
                    };
                    return Some((Ok(done), (data, provider, usage, model, true)));
                }
                let chunk: OpenAiChunk = match serde_json::from_str(&payload) {
                    Ok(c) => c,
                    Err(e) => {
                        let e = ProviderError::Decode {
                            provider: provider.clone(),
                            message: format!("{e}: {}", snippet(payload.as_bytes())),
                        };
                        return Some((Err(e), (data, provider, usage, model, true)));
                    }
                };
                if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
                    model = Some(m);
                }
                if let Some(u) = chunk.usage {
                    usage = Usage {
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        total_tokens: u.total_tokens,
                    };
                }
                let text: String = chunk
                    .choices
                    .into_iter()
                    .filter_map(|c| c.delta.and_then(|d| d.content))
                    .collect();
                if !text.is_empty() {
                    return Some((
                        Ok(StreamEvent::Delta(text)),
                        (data, provider, usage, model, false),
                    ));
                }
            }
        },
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VertexChunk {
    #[serde(default)]
    candidates: Vec<VertexCandidate>,
    #[serde(default)]
    usage_metadata: Option<VertexUsage>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VertexCandidate {
    #[serde(default)]
    content: Option<VertexContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct VertexContent {
    #[serde(default)]
    parts: Vec<VertexPart>,
}

#[derive(Deserialize)]
struct VertexPart {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VertexUsage {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    total_token_count: u32,
}

/// Vertex AI `streamGenerateContent?alt=sse` chunks: each a
/// `GenerateContentResponse`; the last carries `finishReason` and usage.
pub fn vertex_events(provider: String, response: reqwest::Response) -> TokenStream {
    let data = sse_data(response.bytes_stream());
    let state = (
        Box::pin(data),
        provider,
        Usage::default(),
        None::<String>,
        false,
        false,
    );
    Box::pin(futures::stream::unfold(
        state,
        |(mut data, provider, mut usage, mut model, mut finished, done)| async move {
            if done {
                return None;
            }
            loop {
                let payload = match data.next().await {
                    None if finished => {
                        let done = StreamEvent::Done {
                            usage,
                            model: model.clone(),
                        };
                        return Some((Ok(done), (data, provider, usage, model, true, true)));
                    }
                    None => {
                        let e = ProviderError::Connect {
                            provider: provider.clone(),
                            message: "the stream ended without a finishReason".into(),
                        };
                        return Some((Err(e), (data, provider, usage, model, true, true)));
                    }
                    Some(Err(e)) => {
                        let e = ProviderError::Connect {
                            provider: provider.clone(),
                            message: format!("the stream broke: {e}"),
                        };
                        return Some((Err(e), (data, provider, usage, model, true, true)));
                    }
                    Some(Ok(p)) => p,
                };
                let chunk: VertexChunk = match serde_json::from_str(&payload) {
                    Ok(c) => c,
                    Err(e) => {
                        let e = ProviderError::Decode {
                            provider: provider.clone(),
                            message: format!("{e}: {}", snippet(payload.as_bytes())),
                        };
                        return Some((Err(e), (data, provider, usage, model, true, true)));
                    }
                };
                if let Some(m) = chunk.model_version {
                    model = Some(m);
                }
                if let Some(u) = chunk.usage_metadata {
                    usage = Usage {
                        prompt_tokens: u.prompt_token_count,
                        completion_tokens: u.candidates_token_count,
                        total_tokens: u.total_token_count,
                    };
                }
                let mut text = String::new();
                for c in chunk.candidates {
                    finished |= c.finish_reason.is_some();
                    if let Some(content) = c.content {
                        text.extend(content.parts.into_iter().filter_map(|p| p.text));
                    }
                }
                if !text.is_empty() {
                    return Some((
                        Ok(StreamEvent::Delta(text)),
                        (data, provider, usage, model, finished, false),
                    ));
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_at_blank_lines_of_either_kind() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some((7, 2)));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some((7, 4)));
        assert_eq!(find_event_end(b"data: a\n"), None);
    }
}
