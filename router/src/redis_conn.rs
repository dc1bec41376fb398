//! One Redis connection for the router, opened on first use and kept
//! (it reconnects by itself), shared by the hint store and the rate limiter.
//! Its driving task runs on the runtime the connection was made from
//! (the control runtime), whichever worker first asks for it.

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
    /// Where the connection's task is spawned: the runtime it was opened
    /// from, which outlives any one worker's. Outside a runtime, whichever
    /// runtime first asks.
    runtime: Option<tokio::runtime::Handle>,
}

impl LazyRedis {
    pub fn open(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// The connection, opened within `timeout` if this is the first use.
    pub async fn get(&self, timeout: Duration) -> Result<ConnectionManager, ConnError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = ConnectionManager::new(self.client.clone());
        let mut connecting = match &self.runtime {
            Some(runtime) => runtime.spawn(connect),
            None => tokio::spawn(connect),
        };
        let c = match tokio::time::timeout(timeout, &mut connecting).await {
            Ok(Ok(connected)) => connected?,
            // The runtime it was made from is shutting down.
            Ok(Err(stopped)) => {
                return Err(redis::RedisError::from(std::io::Error::other(stopped)).into());
            }
            Err(_) => {
                connecting.abort();
                return Err(ConnError::Timeout);
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }
}
