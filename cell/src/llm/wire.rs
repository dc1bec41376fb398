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

/// Sends `request`; the response once its headers are in, within `timeout`.
async fn send(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    let timed_out = || ProviderError::Timeout {
        provider: provider.to_owned(),
        after: timeout,
    };
    match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => Err(timed_out()),
        Ok(Err(e)) => Err(ProviderError::Connect {
            provider: provider.to_owned(),
            message: e.to_string(),
        }),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Sends `request` and reads the whole answer, both within `timeout`.
pub async fn exchange(
    provider: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<Exchange, ProviderError> {
    let response = send(provider, timeout, request).await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .map_err(|_| ProviderError::Timeout {
            provider: provider.to_owned(),
            after: timeout,
        })?
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

impl Exchange {
    /// The answer itself when it is a success; otherwise its error, with
    /// the message `error_message` reads from the provider's error body.
    pub fn success(
        self,
        provider: &str,
        error_message: fn(&[u8]) -> String,
    ) -> Result<Bytes, ProviderError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(self.into_error(provider, error_message))
        }
    }

    fn into_error(self, provider: &str, error_message: fn(&[u8]) -> String) -> ProviderError {
        ProviderError::Status {
            provider: provider.to_owned(),
            status: self.status.as_u16(),
            message: error_message(&self.body),
            retry_after: retry_after(&self.headers),
        }
    }
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
    let response = send(provider, timeout, request).await?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Err(Exchange {
        status,
        headers,
        body,
    }
    .into_error(provider, error_message))
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
