//! The etcd connection every component shares, with the retry policy that
//! etcd-client lacks: it does not fail over between endpoints or retry by
//! itself, so calls that fail with `Unavailable` or a transport error are
//! retried here with backoff until a deadline.

use std::future::Future;
use std::time::Duration;

use common::config::ConfigErrors;
use etcd_client::{Client, ConnectOptions};
use serde::Deserialize;

use crate::model::Keys;

/// Connection settings for etcd.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// Deadline for one call including its retries.
    pub request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    #[error("etcd rejected the request: {0}")]
    Rejected(String),
    #[error("record at {key} is not valid JSON: {message}")]
    Corrupt { key: String, message: String },
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Rejected(e.to_string())
        }
    }
}

fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::WatchError(_) | etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// `etcd:` section shared by every service's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_prefix() -> String {
    "/cellnet/".to_owned()
}

/// Long enough for a loaded etcd on a small machine, short enough to notice.
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

impl RawEtcd {
    /// Checks the section, recording problems under `path`.
    pub fn validate(&self, path: &str, errors: &mut ConfigErrors) -> (EtcdSettings, Keys) {
        errors.check(
            !self.endpoints.is_empty(),
            format!("{path}.endpoints"),
            "must list at least one etcd endpoint",
        );
        for (i, e) in self.endpoints.iter().enumerate() {
            errors.check(
                e.starts_with("http://") || e.starts_with("https://"),
                format!("{path}.endpoints[{i}]"),
                format!("must be an http:// or https:// URL, got {e:?}"),
            );
        }
        errors.check(
            self.prefix.starts_with('/'),
            format!("{path}.prefix"),
            "must start with '/'",
        );
        errors.check(
            !self.request_timeout.is_zero(),
            format!("{path}.request_timeout"),
            "must be greater than zero",
        );
        (
            EtcdSettings {
                endpoints: self.endpoints.clone(),
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
            },
            Keys::new(&self.prefix),
        )
    }
}

/// A cheap-to-clone handle on etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    settings: EtcdSettings,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("endpoints", &self.settings.endpoints)
            .finish()
    }
}

impl Store {
    /// Connects lazily: the channel is built now, failures surface on calls.
    pub async fn connect(settings: EtcdSettings) -> Result<Self, StoreError> {
        // No per-request timeout on the channel: long-lived calls (watch, lease
        // keep-alive, election campaign) must not be cut by it. Deadlines are
        // applied per call in `retrying`. Pings no more often than every 10 s:
        // etcd refuses clients that ping more often than its
        // --grpc-keepalive-min-time (5 s by default) while no data flows, and
        // closes the connection, so an idle watch would be cut every few
        // seconds.
        let options = ConnectOptions::new()
            .with_connect_timeout(settings.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&settings.endpoints, Some(options)).await?;
        Ok(Self { client, settings })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, or the
    /// request timeout passes.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = tokio::time::timeout_at(deadline, op(self.client.clone())).await;
            let err = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => StoreError::from(e),
                Err(_) => StoreError::Unavailable(format!("{what}: deadline exceeded")),
            };
            if !err.is_retryable() || tokio::time::Instant::now() + backoff >= deadline {
                return Err(err);
            }
            tracing::debug!(what, error = %err, "etcd call failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

impl Store {
    /// Writes `value` at `key` unless the key exists; returns whether it wrote.
    pub async fn create_if_absent(
        &self,
        what: &str,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let resp = self
            .retrying(what, |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }
}

impl Store {
    /// Writes `value` at `key` if the key is still at `revision` (its
    /// mod revision, or 0 for absent); returns the new store revision, or
    /// `None` if someone wrote in between.
    pub async fn put_if_revision(
        &self,
        what: &str,
        key: &str,
        value: &[u8],
        revision: i64,
    ) -> Result<Option<i64>, StoreError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let compare = if revision == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, revision)
        };
        let resp = self
            .retrying(what, |mut c| {
                let txn = Txn::new()
                    .when([compare.clone()])
                    .and_then([TxnOp::put(key, value, None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(revision)))
    }
}

impl Store {
    /// Deletes `key` if it is still at `revision` (its mod revision);
    /// returns whether it deleted.
    pub async fn delete_if_revision(
        &self,
        what: &str,
        key: &str,
        revision: i64,
    ) -> Result<bool, StoreError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let resp = self
            .retrying(what, |mut c| {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
                    .and_then([TxnOp::delete(key, None)]);
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }
}

/// Parses a JSON record read from etcd.
pub fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

/// Serialises a record for etcd.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain records cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
