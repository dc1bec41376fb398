//! Embeddings endpoints in the three wire formats: Azure OpenAI
//! (`/openai/deployments/{d}/embeddings`), OpenAI-compatible
//! (`/v1/embeddings`) and Vertex AI (`…/models/{m}:predict`). The vectors are
//! hashed bags of words, normalised: texts sharing words are close, so
//! retrieval over them behaves sensibly, and the same text always gets the
//! same vector.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::faults::Verdict;
use super::{InFlight, Region, Simulator, face_faults};

/// Default length when a request does not ask for one.
const DEFAULT_DIMENSIONS: usize = 1536;

/// A deterministic embedding of `text`.
pub fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let len = dimensions.max(1);
    let mut v = vec![0f32; len];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        word.to_lowercase().hash(&mut h);
        let h = h.finish();
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        v[(h % len as u64) as usize] += sign;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[derive(Debug, Deserialize)]
pub struct OpenAiEmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    input: Value,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn inputs(input: &Value) -> Option<Vec<String>> {
    match input {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    super::openai::openai_error(status, "invalid_request_error", None, message)
}

async fn faults_as(region: &Region) -> Option<(StatusCode, &'static str)> {
    match face_faults(region).await {
        Verdict::Serve | Verdict::Hang => None,
        Verdict::Outage => Some((StatusCode::SERVICE_UNAVAILABLE, "unavailable")),
        Verdict::Error => Some((StatusCode::INTERNAL_SERVER_ERROR, "internal error")),
        Verdict::Throttle(_) => Some((StatusCode::TOO_MANY_REQUESTS, "rate limited")),
    }
}

fn openai_answer(model: &str, texts: &[String], dimensions: usize) -> Response {
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed(t, dimensions)}))
        .collect();
    let tokens: u32 = texts
        .iter()
        .map(|t| super::extractive::count_tokens(t))
        .sum();
    Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

async fn openai_format(
    sim: &Simulator,
    region: &str,
    model: &str,
    headers: &HeaderMap,
    body: Result<Json<OpenAiEmbeddingsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(region_state) = sim.regions.get(region) else {
        return openai_error(StatusCode::NOT_FOUND, "Resource not found");
    };
    if !sim.authorised(headers) {
        return openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.");
    }
    if !region_state.config.deployments.iter().any(|d| d == model) {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist."),
        );
    }
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => return openai_error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let Some(texts) = inputs(&request.input).filter(|t| !t.is_empty()) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "input must be a string or an array of strings",
        );
    };
    let _in_flight = InFlight::enter(&region_state.in_flight);
    if let Some((status, message)) = faults_as(region_state).await {
        return openai_error(status, message);
    }
    openai_answer(
        model,
        &texts,
        request.dimensions.unwrap_or(DEFAULT_DIMENSIONS),
    )
}

pub async fn azure_embeddings(
    State(sim): State<Arc<Simulator>>,
    Path((region, deployment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<OpenAiEmbeddingsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    openai_format(&sim, &region, &deployment, &headers, body).await
}

pub async fn openai_embeddings(
    State(sim): State<Arc<Simulator>>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Result<Json<OpenAiEmbeddingsRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let model = match &body {
        Ok(Json(r)) => r.model.clone().unwrap_or_default(),
        Err(_) => String::new(),
    };
    openai_format(&sim, &region, &model, &headers, body).await
}

/// Vertex AI `:predict` on a text-embedding model.
pub async fn vertex_predict(region: &Region, model: &str, body: Value) -> Response {
    let Some(instances) = body["instances"].as_array() else {
        return super::vertex::google_error(StatusCode::BAD_REQUEST, "instances must be a list");
    };
    let texts: Option<Vec<String>> = instances
        .iter()
        .map(|i| i["content"].as_str().map(str::to_owned))
        .collect();
    let Some(texts) = texts.filter(|t| !t.is_empty()) else {
        return super::vertex::google_error(
            StatusCode::BAD_REQUEST,
            "every instance needs a content string",
        );
    };
    let dimensions = body["parameters"]["outputDimensionality"]
        .as_u64()
        .map_or(768, |d| d as usize);
    let _in_flight = InFlight::enter(&region.in_flight);
    if let Some((status, message)) = faults_as(region).await {
        return super::vertex::google_error(status, message);
    }
    let predictions: Vec<Value> = texts
        .iter()
        .map(|t| {
            json!({"embeddings": {
                "values": embed(t, dimensions),
                "statistics": {"token_count": super::extractive::count_tokens(t), "truncated": false}
            }})
        })
        .collect();
    tracing::info!(%model, n = texts.len(), "predict");
    Json(json!({"predictions": predictions, "metadata": {"billableCharacterCount": texts.iter().map(String::len).sum::<usize>()}}))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_words_bring_texts_closer() {
        let a = embed("orders ship from Lyon", 384);
        let b = embed("where do orders ship from", 384);
        let c = embed("refunds within thirty days", 384);
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        assert!(dot(&a, &b) > dot(&a, &c));
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(embed("same text", 64), embed("same text", 64));
    }
}
