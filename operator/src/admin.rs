//! The control plane's admin API, as the operator uses it: register a cell,
//! read what the control plane knows of it, drain it, remove it.

use std::time::Duration;

use common::config::Secret;
use control_plane::admin::CellSummary;
use serde::Deserialize;
use serde_json::json;

/// An admin call slower than this is a failure; the reconcile is retried.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the control plane at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the control plane refused {what} ({status}): {message}")]
    Refused {
        what: &'static str,
        status: u16,
        message: String,
    },
}

#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

#[derive(Deserialize)]
struct CellList {
    cells: Vec<CellSummary>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

impl AdminClient {
    pub fn new(url: &str, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        }
    }

    async fn send(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AdminError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|source| AdminError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error.message)
            .unwrap_or(text);
        Err(AdminError::Refused {
            what,
            status,
            message,
        })
    }

    /// The control plane's record of `id`, if it has one.
    pub async fn cell(&self, id: &str) -> Result<Option<CellSummary>, AdminError> {
        let what = "listing cells";
        let response = self
            .send(what, self.http.get(format!("{}/admin/cells", self.url)))
            .await?;
        let list: CellList = response.json().await.map_err(|e| AdminError::Unreachable {
            url: self.url.clone(),
            source: e,
        })?;
        Ok(list.cells.into_iter().find(|c| c.id == id))
    }

    /// Registers the cell (joining); `false` if it already was.
    pub async fn register(
        &self,
        id: &str,
        region: &str,
        endpoint: &str,
        template: &str,
    ) -> Result<bool, AdminError> {
        let body = json!({"id": id, "region": region, "endpoint": endpoint, "template": template});
        let request = self
            .http
            .post(format!("{}/admin/cells", self.url))
            .json(&body);
        match self.send("registering the cell", request).await {
            Ok(_) => Ok(true),
            Err(AdminError::Refused { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Asks the leader to move every tenant off the cell.
    pub async fn drain(&self, id: &str) -> Result<(), AdminError> {
        let request = self
            .http
            .post(format!("{}/admin/cells/{id}/drain", self.url));
        self.send("draining the cell", request).await.map(drop)
    }

    /// Marks a cell that holds no tenant removed.
    pub async fn remove(&self, id: &str) -> Result<(), AdminError> {
        let request = self.http.delete(format!("{}/admin/cells/{id}", self.url));
        self.send("removing the cell", request).await.map(drop)
    }
}
