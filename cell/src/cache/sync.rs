//! Keeps every cell's vector tier in step with Redis. Each insert, eviction
//! and purge is appended to one Redis stream; every cell tails it on a
//! connection of its own and applies what it reads. A stream (not pub/sub)
//! because it works unchanged on a Redis Cluster and lets a cell resume from
//! the last event it saw. If the tail is lost, the cell reloads every index
//! from Redis and continues from the newest event, so it recovers by itself.

use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::{StreamMaxlen, StreamReadOptions, StreamReadReply};
use tokio::task::JoinHandle;

use super::{CacheConn, CacheError, CacheKeys, SemanticCache};

/// Events kept in the stream: enough for a cell that blinked to catch up.
const STREAM_MAXLEN: usize = 100_000;
/// Longest blocking read; bounds how long shutdown or a dead connection waits.
const BLOCK: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Evict,
    Purge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Evict => "evict",
            Op::Purge => "purge",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "insert" => Some(Op::Insert),
            "evict" => Some(Op::Evict),
            "purge" => Some(Op::Purge),
            _ => None,
        }
    }
}

pub(super) async fn publish(
    conn: &mut CacheConn,
    keys: &CacheKeys,
    origin: &str,
    op: Op,
    tenant: &str,
    id: &str,
) -> Result<(), CacheError> {
    let _: String = conn
        .xadd_maxlen(
            keys.events(),
            StreamMaxlen::Approx(STREAM_MAXLEN),
            "*",
            &[
                ("op", op.as_str()),
                ("t", tenant),
                ("id", id),
                ("from", origin),
            ],
        )
        .await?;
    Ok(())
}

/// The id of the newest event, or `0-0` for an empty stream.
async fn newest(conn: &mut CacheConn, keys: &CacheKeys) -> Result<String, CacheError> {
    let reply: redis::streams::StreamRangeReply =
        conn.xrevrange_count(keys.events(), "+", "-", 1).await?;
    Ok(reply
        .ids
        .first()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "0-0".to_owned()))
}

impl SemanticCache {
    /// Loads every tenant's index, then follows the event stream until the
    /// task is dropped. Failures are retried with backoff; queries meanwhile
    /// run on the indexes as they are.
    pub fn start_sync(&self) -> JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match cache.follow().await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(error = %e, "cache sync lost, reloading when Redis answers");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    async fn follow(&self) -> Result<(), CacheError> {
        let mut tail = self.redis.dedicated(BLOCK).await?;
        // Note the position first, then load: events after it are replayed,
        // so nothing between the two is missed (applying twice is harmless).
        let mut last = newest(&mut tail, &self.keys).await?;
        let mut conn = self.redis.dedicated(BLOCK).await?;
        let tenants = {
            let ids: Vec<String> = conn.smembers(self.keys.tenants()).await?;
            for t in &ids {
                self.load_tenant(&mut conn, t).await?;
            }
            ids.len()
        };
        tracing::info!(tenants, "cache vector tier loaded");
        let options = StreamReadOptions::default()
            .block(BLOCK.as_millis() as usize)
            .count(512);
        loop {
            let reply: Option<StreamReadReply> = tail
                .xread_options(&[self.keys.events()], &[&last], &options)
                .await?;
            let Some(reply) = reply else { continue };
            for key in reply.keys {
                for event in key.ids {
                    last = event.id.clone();
                    let field = |name: &str| -> Option<String> {
                        event
                            .map
                            .get(name)
                            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                    };
                    let (Some(op), Some(tenant)) =
                        (field("op").as_deref().and_then(Op::parse), field("t"))
                    else {
                        continue;
                    };
                    let id = field("id").unwrap_or_default();
                    self.apply(&mut conn, op, &tenant, &id).await?;
                }
            }
        }
    }
}
