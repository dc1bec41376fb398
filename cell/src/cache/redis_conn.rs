//! The cache's Redis connection: one code path for a single Redis and a Redis
//! Cluster. The connection is made on first use and remade after failures, so
//! a cell starts and keeps answering while Redis is away.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use super::CacheError;

/// Where the cache lives.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// A connection to either kind of deployment. Clones share the connection.
#[derive(Clone)]
pub enum CacheConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for CacheConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            CacheConn::Single(c) => c.req_packed_command(cmd),
            CacheConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            CacheConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            CacheConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            CacheConn::Single(c) => c.get_db(),
            CacheConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Lazily connected, shared handle.
#[derive(Clone)]
pub struct RedisConn {
    target: RedisTarget,
    timeout: Duration,
    current: Arc<ArcSwapOption<CacheConn>>,
    connecting: Arc<Mutex<()>>,
}

impl RedisConn {
    pub fn new(target: RedisTarget, timeout: Duration) -> Result<Self, CacheError> {
        // Parse now so that a malformed URL fails at start, not at first use.
        match &target {
            RedisTarget::Single(url) => {
                redis::Client::open(url.as_str())?;
            }
            RedisTarget::Cluster(urls) => {
                ClusterClient::new(urls.iter().map(String::as_str))?;
            }
        }
        Ok(Self {
            target,
            timeout,
            current: Arc::default(),
            connecting: Arc::default(),
        })
    }

    /// The shared connection; the hot path is one atomic load.
    pub async fn get(&self) -> Result<CacheConn, CacheError> {
        if let Some(c) = self.current.load_full() {
            return Ok(CacheConn::clone(&c));
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok(CacheConn::clone(&c));
        }
        let conn = tokio::time::timeout(self.timeout, self.open(Some(self.timeout)))
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))??;
        self.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Runs a Redis call within the timeout. After a Redis error the shared
    /// connection is dropped, so the next call makes a new one.
    pub async fn bounded<T, E: Into<CacheError>>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let e = e.into();
                if matches!(e, CacheError::Redis(_)) {
                    self.reset();
                }
                Err(e)
            }
            Err(_) => Err(CacheError::Timeout(self.timeout)),
        }
    }

    /// Forgets the shared connection so the next call makes a new one.
    pub fn reset(&self) {
        self.current.store(None);
    }

    /// A connection of its own, for blocking reads (up to `longest_block`)
    /// that must not hold up the shared one.
    pub async fn dedicated(&self, longest_block: Duration) -> Result<CacheConn, CacheError> {
        tokio::time::timeout(self.timeout, self.open(Some(longest_block + self.timeout)))
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))?
    }

    async fn open(&self, response_timeout: Option<Duration>) -> Result<CacheConn, CacheError> {
        match &self.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(response_timeout)
                    .set_number_of_retries(1);
                Ok(CacheConn::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisTarget::Cluster(urls) => {
                let mut builder = ClusterClient::builder(urls.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .retries(2);
                if let Some(t) = response_timeout {
                    builder = builder.response_timeout(t);
                }
                Ok(CacheConn::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }
}
