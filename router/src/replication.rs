//! Writes reach every member of a tenant's replica set. The router sends a
//! write to all live members at once and acknowledges when they all have it;
//! a member that is down (or fails) gets a durable hint instead: the request
//! is appended to a Redis stream for that cell and replayed, in order, once
//! the cell is alive again. Writes are idempotent (documents are replaced
//! whole), so a replayed or repeated hint changes nothing.

use std::time::Duration;

use axum::body::Bytes;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::redis_conn::{ConnError, LazyRedis};

/// Most hints replayed per cell in one round.
const REPLAY_BATCH: usize = 100;
/// How long one router holds the right to replay a cell's hints. The lock
/// lapses by itself if that router dies mid-round; a round stops taking new
/// hints once half of it has passed.
const REPLAY_LEASE: Duration = Duration::from_secs(30);
/// Deletes the replay lock only if it is still the caller's.
const UNLOCK: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// A write that a replica has not yet received.
#[derive(Debug, Clone)]
pub struct Hint {
    pub tenant: String,
    pub method: String,
    pub path_and_query: String,
    pub request_id: String,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error("no hint store is configured (router config: redis.url)")]
    NoStore,
    #[error("hint store: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("hint store did not answer in time")]
    Timeout,
}

/// The hint store: one Redis stream per cell.
#[derive(Clone)]
pub struct Hints {
    redis: Option<LazyRedis>,
    timeout: Duration,
}

fn stream(cell: &str) -> String {
    control_plane::model::hint_stream(cell)
}

fn replay_lock(cell: &str) -> String {
    format!("cn:hints:{cell}:replaying")
}

/// The right to replay one cell's hints, held by one router at a time:
/// were two routers to replay the same stream, one could deliver an old
/// write after the other had delivered a newer one (a document deleted,
/// then brought back).
#[derive(Debug)]
pub struct ReplayLock {
    cell: String,
    token: String,
    taken: tokio::time::Instant,
}

impl ReplayLock {
    /// Whether there is time left to replay another hint under this lock.
    pub fn has_time(&self) -> bool {
        self.taken.elapsed() < REPLAY_LEASE / 2
    }

    /// How long a replay may still take and end before the lease lapses.
    pub fn time_left(&self) -> Duration {
        REPLAY_LEASE.saturating_sub(self.taken.elapsed())
    }
}

impl Hints {
    /// Hints kept in `redis`; without one, none can be recorded.
    pub fn new(redis: Option<LazyRedis>, timeout: Duration) -> Self {
        Self { redis, timeout }
    }

    async fn conn(&self) -> Result<ConnectionManager, HintError> {
        let redis = self.redis.as_ref().ok_or(HintError::NoStore)?;
        redis.get(self.timeout).await.map_err(|e| match e {
            ConnError::Redis(e) => HintError::Redis(e),
            ConnError::Timeout => HintError::Timeout,
        })
    }

    /// Durably records that `cell` must still receive `hint`.
    pub async fn record(&self, cell: &str, hint: &Hint) -> Result<(), HintError> {
        let mut conn = self.conn().await?;
        let fields: [(&str, &[u8]); 5] = [
            ("t", hint.tenant.as_bytes()),
            ("m", hint.method.as_bytes()),
            ("p", hint.path_and_query.as_bytes()),
            ("r", hint.request_id.as_bytes()),
            ("b", hint.body.as_ref()),
        ];
        let add = conn.xadd::<_, _, _, _, String>(stream(cell), "*", &fields);
        tokio::time::timeout(self.timeout, add)
            .await
            .map_err(|_| HintError::Timeout)??;
        Ok(())
    }

    /// Hints waiting for `cell`.
    pub async fn pending(&self, cell: &str) -> Result<usize, HintError> {
        let mut conn = self.conn().await?;
        Ok(conn.xlen(stream(cell)).await?)
    }

    /// The oldest hints for `cell`, with their stream ids.
    pub async fn oldest(&self, cell: &str) -> Result<Vec<(String, Hint)>, HintError> {
        let mut conn = self.conn().await?;
        let reply: redis::streams::StreamRangeReply = conn
            .xrange_count(stream(cell), "-", "+", REPLAY_BATCH)
            .await?;
        let mut out = Vec::new();
        for entry in reply.ids {
            let field = |name: &str| -> Vec<u8> {
                entry
                    .map
                    .get(name)
                    .and_then(|v| redis::from_redis_value::<Vec<u8>>(v.clone()).ok())
                    .unwrap_or_default()
            };
            let text = |name: &str| String::from_utf8_lossy(&field(name)).into_owned();
            out.push((
                entry.id.clone(),
                Hint {
                    tenant: text("t"),
                    method: text("m"),
                    path_and_query: text("p"),
                    request_id: text("r"),
                    body: Bytes::from(field("b")),
                },
            ));
        }
        Ok(out)
    }

    /// Takes the right to replay `cell`'s hints, or `None` while another
    /// router holds it.
    pub async fn lock_replay(&self, cell: &str) -> Result<Option<ReplayLock>, HintError> {
        let mut conn = self.conn().await?;
        let token = uuid::Uuid::new_v4().to_string();
        let taken = tokio::time::Instant::now();
        let mut command = redis::cmd("SET");
        command
            .arg(replay_lock(cell))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(REPLAY_LEASE.as_millis() as u64);
        let set = command.query_async::<Option<String>>(&mut conn);
        let set = tokio::time::timeout(self.timeout, set)
            .await
            .map_err(|_| HintError::Timeout)??;
        Ok(set.map(|_| ReplayLock {
            cell: cell.to_owned(),
            token,
            taken,
        }))
    }

    /// Gives the replay right back, unless it has lapsed and another router
    /// holds it now.
    pub async fn unlock_replay(&self, lock: ReplayLock) -> Result<(), HintError> {
        let mut conn = self.conn().await?;
        let script = redis::Script::new(UNLOCK);
        let mut call = script.key(replay_lock(&lock.cell));
        call.arg(&lock.token);
        tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut conn))
            .await
            .map_err(|_| HintError::Timeout)??;
        Ok(())
    }

    /// Forgets a delivered hint.
    pub async fn delivered(&self, cell: &str, id: &str) -> Result<(), HintError> {
        let mut conn = self.conn().await?;
        let _: usize = conn.xdel(stream(cell), &[id]).await?;
        Ok(())
    }
}
