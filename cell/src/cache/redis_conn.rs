//! A Redis connection that is made on first use and remade after failures,
//! so a cell starts and keeps answering while Redis is away.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use super::CacheError;

#[derive(Clone)]
pub struct RedisConn {
    client: redis::Client,
    timeout: Duration,
    manager: Arc<Mutex<Option<ConnectionManager>>>,
}

impl RedisConn {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            client,
            timeout,
            manager: Arc::default(),
        })
    }

    /// A multiplexed connection; reconnects by itself after it was made once.
    pub async fn get(&self) -> Result<ConnectionManager, CacheError> {
        let mut slot = self.manager.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let manager = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| CacheError::Timeout(self.timeout))??;
        *slot = Some(manager.clone());
        Ok(manager)
    }
}
