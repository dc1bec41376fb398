//! One way to call the control plane's admin API: every command sends
//! through `Admin::call` and reads the answer, or the API's error message,
//! the same way.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Deserialize)]
pub struct ErrorBody {
    pub error: ErrorMessage,
}

#[derive(Deserialize)]
pub struct ErrorMessage {
    pub message: String,
}

/// The admin API at one base URL, with the operator token.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Admin {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
        }
    }

    /// Sends `method path` (with a JSON body if given) and reads the answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {}", self.base))?;
        read(resp).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<T> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

async fn read<T: DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    serde_json::from_slice(&body).context("unexpected response from the control plane")
}
