//! Vertex AI `generateContent`, as the public REST reference defines it:
//! `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! with an OAuth bearer token; Google's error body
//! `{"error": {"code", "message", "status"}}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extractive::{Reply, reply};
use super::faults::Verdict;
use super::{InFlight, Simulator, face_faults};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(default)]
    system_instruction: Option<Content>,
    #[serde(default)]
    generation_config: Option<GenerationConfig>,
}

#[derive(Debug, Deserialize)]
pub struct Content {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default)]
    max_output_tokens: Option<u32>,
}

pub fn google_error(status: StatusCode, message: &str) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}})),
    )
        .into_response()
}

fn text(content: &Content) -> String {
    content
        .parts
        .iter()
        .filter_map(|p| p.text.as_deref())
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn generate_content(
    State(sim): State<Arc<Simulator>>,
    Path((region, project, location, model_action)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(region_state) = sim.regions.get(&region) else {
        return google_error(StatusCode::NOT_FOUND, "Requested entity was not found.");
    };
    let (model, streamed) = match model_action.split_once(':') {
        Some((model, "generateContent")) => (model, false),
        Some((model, "streamGenerateContent")) => (model, true),
        Some((model, "predict")) => {
            if !sim.authorised(&headers) {
                return google_error(
                    StatusCode::UNAUTHORIZED,
                    "Request had invalid authentication credentials.",
                );
            }
            if !region_state.config.deployments.iter().any(|d| d == model) {
                return google_error(StatusCode::NOT_FOUND, "Publisher model not found.");
            }
            let body = match body {
                Ok(Json(v)) => v,
                Err(e) => return google_error(StatusCode::BAD_REQUEST, &e.body_text()),
            };
            return super::embeddings::vertex_predict(region_state, model, body).await;
        }
        _ => {
            return google_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "The method {model_action:?} is not served here; use :generateContent, :streamGenerateContent or :predict."
                ),
            );
        }
    };
    if !sim.authorised(&headers) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if !region_state.config.deployments.iter().any(|d| d == model) {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!(
                "Publisher Model `projects/{project}/locations/{location}/publishers/google/models/{model}` was not found or your project does not have access to it."
            ),
        );
    }
    let request: GenerateContentRequest = match body
        .map_err(|e| e.body_text())
        .and_then(|Json(v)| serde_json::from_value(v).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(message) => return google_error(StatusCode::BAD_REQUEST, &message),
    };
    if request.contents.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "Unable to submit request because it must include at least one parts field.",
        );
    }
    if let Some(bad) = request
        .contents
        .iter()
        .filter_map(|c| c.role.as_deref())
        .find(|r| *r != "user" && *r != "model")
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            &format!("Please use a valid role: user, model. Got {bad:?}."),
        );
    }
    let _in_flight = InFlight::enter(&region_state.in_flight);
    match face_faults(region_state).await {
        Verdict::Serve | Verdict::Hang => {}
        Verdict::Outage => {
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
            );
        }
        Verdict::Error => {
            return google_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error encountered.",
            );
        }
        Verdict::Throttle(_) => {
            // Vertex AI sends no Retry-After with its 429s.
            return google_error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Resource exhausted. Please try again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details. (model {model})"
                ),
            );
        }
    }
    let user = request
        .contents
        .iter()
        .rev()
        .find(|c| c.role.as_deref().unwrap_or("user") == "user")
        .map(text)
        .unwrap_or_default();
    let prompt_text: Vec<String> = request
        .contents
        .iter()
        .chain(request.system_instruction.as_ref())
        .map(text)
        .collect();
    let Reply {
        content,
        prompt_tokens,
        completion_tokens,
    } = reply(
        &prompt_text,
        &user,
        request.generation_config.and_then(|g| g.max_output_tokens),
        region_state.faults().confabulate,
    );
    tracing::info!(%region, %model, streamed, "generate content");
    let usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": completion_tokens,
        "totalTokenCount": prompt_tokens + completion_tokens
    });
    if streamed {
        // With alt=sse each event is a GenerateContentResponse; the last one
        // carries finishReason and the usage.
        let parts = super::pieces(&content);
        let last = parts.len().saturating_sub(1);
        let frames = parts
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut candidate =
                    json!({"content": {"role": "model", "parts": [{"text": piece}]}});
                let mut frame = json!({"modelVersion": model});
                if i == last {
                    candidate["finishReason"] = "STOP".into();
                    frame["usageMetadata"] = usage.clone();
                }
                frame["candidates"] = json!([candidate]);
                frame.to_string()
            })
            .collect();
        return super::sse_response(frames, region_state.faults().cut_after_chunks);
    }
    Json(json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": content}]},
            "finishReason": "STOP",
            "avgLogprobs": -0.12
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": completion_tokens,
            "totalTokenCount": prompt_tokens + completion_tokens
        },
        "modelVersion": model,
        "createTime": chrono_like_now(),
        "responseId": uuid::Uuid::new_v4().simple().to_string(),
    }))
    .into_response()
}

/// Now as an RFC 3339 timestamp in UTC, without a date-time crate.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = chrono_like_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
