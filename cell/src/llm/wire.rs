//! What every provider client does the same way: send within the attempt's
//! timeout, read the body, and sort failures into `ProviderError`s.

use std::time::Duration;

use axum::body::Bytes;

use super::ProviderError;

/// A provider's raw answer.
pub struct Exchange {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

/// Sends `request` and reads the whole answer, both within `timeout`.
pub async fn exchange(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<Exchange, ProviderError> {
    let timed_out = || ProviderError::Timeout {
        provider: provider.to_owned(),
        after: timeout,
    };
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
        Ok(Err(e)) => {
            return Err(ProviderError::Connect {
                provider: provider.to_owned(),
                message: e.to_string(),
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| ProviderError::Connect {
            provider: provider.to_owned(),
            message: e.to_string(),
        })?;
    Ok(Exchange {
        status,
        headers,
        body,
    })
}

/// `retry-after-ms` (Azure) or `retry-after` in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    read("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| read("retry-after").map(Duration::from_secs_f64))
}

/// The start of an unreadable error body, for the error message.
pub fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// Sends `request` for a streamed answer: returns the response once its
/// headers say success; otherwise reads the error body and hands it to
/// `error_message` for the error.
pub async fn open_stream(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
    error_message: fn(&[u8]) -> String,
) -> Result<reqwest::Response, ProviderError> {
    let timed_out = || ProviderError::Timeout {
        provider: provider.to_owned(),
        after: timeout,
    };
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
        Ok(Err(e)) => {
            return Err(ProviderError::Connect {
                provider: provider.to_owned(),
                message: e.to_string(),
            });
        }
        Ok(Ok(r)) => r,
    };
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let wait = retry_after(response.headers());
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(ProviderError::Status {
        provider: provider.to_owned(),
        status,
        message: error_message(&body),
        retry_after: wait,
    })
}

/// `{"data": [{"embedding": [...], "index": n}]}`, OpenAI's embeddings
/// answer (Azure OpenAI's too), in input order.
pub fn parse_openai_embeddings(
    provider: &str,
    body: &[u8],
) -> Result<Vec<Vec<f32>>, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        embedding: Vec<f32>,
        #[serde(default)]
        index: usize,
    }
    let mut answer: Answer = serde_json::from_slice(body).map_err(|e| ProviderError::Decode {
        provider: provider.to_owned(),
        message: e.to_string(),
    })?;
    answer.data.sort_by_key(|i| i.index);
    Ok(answer.data.into_iter().map(|i| i.embedding).collect())
}
