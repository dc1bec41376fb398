//! One Redis connection for the router, opened on first use and kept
//! (it reconnects by itself), shared by the hint store and the rate limiter.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out connecting")]
    Timeout,
}

#[derive(Clone)]
pub struct LazyRedis {
    client: redis::Client,
    conn: Arc<Mutex<Option<ConnectionManager>>>,
}

impl LazyRedis {
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Arc::default(),
        })
    }

    /// The connection, opened within `timeout` if this is the first use.
    pub async fn get(&self, timeout: Duration) -> Result<ConnectionManager, ConnError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(timeout, ConnectionManager::new(self.client.clone()))
            .await
            .map_err(|_| ConnError::Timeout)??;
        *slot = Some(c.clone());
        Ok(c)
    }
}
