//! The control plane's admin API as the provider calls it: JSON in and
//! out, the operator token on every call, and the API's own error message
//! kept for the diagnostic.

use serde::de::DeserializeOwned;

/// An admin API call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The API answered with an error: its status and message.
    #[error("{message} ({status})")]
    Api {
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("cannot reach the control plane at {base}: {source}")]
    Unreachable {
        base: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from the control plane: {0}")]
    Unexpected(String),
}

impl AdminError {
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            AdminError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(reqwest::StatusCode::NOT_FOUND)
    }

    pub fn message(&self) -> String {
        match self {
            AdminError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Admin {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            auth: format!("Bearer {token}"),
        }
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, AdminError> {
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
            .map_err(|source| AdminError::Unreachable {
                base: self.base.clone(),
                source,
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AdminError::Unexpected(e.to_string()))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(AdminError::Api { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| AdminError::Unexpected(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, AdminError> {
        self.call(reqwest::Method::POST, path, body).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, AdminError> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), AdminError> {
        self.call::<serde_json::Value>(reqwest::Method::DELETE, path, None)
            .await
            .map(drop)
    }
}
