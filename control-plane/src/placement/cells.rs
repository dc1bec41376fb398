//! The leader's calls to cells while it moves a tenant: count, export,
//! import and delete the tenant's points, signed as a router signs them
//! (cells accept tenant context only with that signature).

use std::time::Duration;

use crate::watch::ClusterView;

/// How long one call to a cell may take before the step is retried. An
/// export of a large tenant streams for longer than that: it is bounded by
/// the time between two reads instead.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one import may wait for a destination that is building its index.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum CellCallError {
    #[error("cell {0} is not known or has no endpoint")]
    Unknown(String),
    #[error("no signing key has been issued yet")]
    NoSigningKey,
    #[error("cell {cell}: {message}")]
    Failed { cell: String, message: String },
}

/// A client for the cells' tenant-scoped point API.
#[derive(Clone)]
pub struct CellApi {
    http: reqwest::Client,
}

impl Default for CellApi {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .read_timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }
}

impl CellApi {
    async fn call(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, CellCallError> {
        let endpoint = view
            .cells
            .get(cell)
            .and_then(|c| c.endpoint())
            .ok_or_else(|| CellCallError::Unknown(cell.to_owned()))?
            .trim_end_matches('/')
            .to_owned();
        let key = view
            .cell_auth_key
            .clone()
            .ok_or(CellCallError::NoSigningKey)?;
        let request_id = format!("move-{tenant}-{}", hex::encode(rand::random::<[u8; 8]>()));
        let timestamp = common::signing::now_secs();
        let signature = common::signing::sign(
            &key,
            &common::signing::SignedParts {
                method: method.as_str(),
                path_and_query: path,
                tenant,
                request_id: &request_id,
                timestamp,
                body: &body,
            },
        );
        let failed = |message: String| CellCallError::Failed {
            cell: cell.to_owned(),
            message,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{endpoint}{path}"));
        match (&method, path) {
            // An export streams: only the time between two reads is bounded.
            (&reqwest::Method::GET, "/v1/points") => {}
            // A cell holds writes while it builds its vector index, which for
            // a large shard takes a minute or more: an import waits for it.
            (&reqwest::Method::POST, "/v1/points") => request = request.timeout(IMPORT_TIMEOUT),
            _ => request = request.timeout(CALL_TIMEOUT),
        }
        let resp = request
            .header(common::headers::TENANT, tenant)
            .header(common::headers::REQUEST_ID, &request_id)
            .header(common::signing::TIMESTAMP_HEADER, timestamp)
            .header(common::signing::SIGNATURE_HEADER, signature)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(failed(format!("{path}: HTTP {status}: {text}")));
        }
        Ok(resp)
    }

    /// The tenant's points on `cell`.
    pub async fn count(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
    ) -> Result<u64, CellCallError> {
        let resp = self
            .call(
                view,
                cell,
                tenant,
                reqwest::Method::GET,
                "/v1/points/count",
                Vec::new(),
            )
            .await?;
        number(resp, cell, "points").await
    }

    /// Deletes every point of the tenant on `cell`.
    pub async fn delete_all(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
    ) -> Result<(), CellCallError> {
        self.call(
            view,
            cell,
            tenant,
            reqwest::Method::DELETE,
            "/v1/documents",
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// Deletes one document of the tenant (every chunk of it) on `cell`.
    pub async fn delete_document(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
        document: &str,
    ) -> Result<(), CellCallError> {
        let path = format!("/v1/documents/{}", percent_encode(document));
        self.call(
            view,
            cell,
            tenant,
            reqwest::Method::DELETE,
            &path,
            Vec::new(),
        )
        .await?;
        Ok(())
    }

    /// Imports JSON lines of exported points; returns how many were written.
    pub async fn import(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
        lines: Vec<u8>,
    ) -> Result<u64, CellCallError> {
        let resp = self
            .call(
                view,
                cell,
                tenant,
                reqwest::Method::POST,
                "/v1/points",
                lines,
            )
            .await?;
        number(resp, cell, "imported").await
    }

    /// Streams the tenant's points on `cell` as JSON lines, read one at a
    /// time as they arrive.
    pub async fn export(
        &self,
        view: &ClusterView,
        cell: &str,
        tenant: &str,
    ) -> Result<Lines, CellCallError> {
        let resp = self
            .call(
                view,
                cell,
                tenant,
                reqwest::Method::GET,
                "/v1/points",
                Vec::new(),
            )
            .await?;
        Ok(Lines {
            cell: cell.to_owned(),
            resp,
            pending: Vec::new(),
            done: false,
        })
    }
}

/// An export being read.
pub struct Lines {
    cell: String,
    resp: reqwest::Response,
    pending: Vec<u8>,
    done: bool,
}

impl Lines {
    /// The next line (with its newline), or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, CellCallError> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.len() > 1 {
                    return Ok(Some(line));
                }
                continue;
            }
            if self.done {
                if !self.pending.iter().all(u8::is_ascii_whitespace) {
                    return Err(self.failed("export ended inside a line".into()));
                }
                return Ok(None);
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(e) => return Err(self.failed(format!("export cut short: {e}"))),
            }
        }
    }

    fn failed(&self, message: String) -> CellCallError {
        CellCallError::Failed {
            cell: self.cell.clone(),
            message,
        }
    }
}

/// A count in a cell's JSON answer.
async fn number(resp: reqwest::Response, cell: &str, field: &str) -> Result<u64, CellCallError> {
    let body: serde_json::Value = resp.json().await.map_err(|e| CellCallError::Failed {
        cell: cell.to_owned(),
        message: e.to_string(),
    })?;
    Ok(body[field].as_u64().unwrap_or(0))
}

/// A path segment with everything but unreserved characters percent-encoded.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
