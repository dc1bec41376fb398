//! The cache's Redis connection: one code path for a single Redis and a Redis
//! Cluster. The connection is made on first use and remade after failures, so
//! a cell starts and keeps answering while Redis is away.
//!
//! A connection is driven by a task on the runtime that made it, and the cell
//! serves each connection on a worker thread with a single-threaded runtime of
//! its own: with one shared connection, every cache lookup would wake another
//! thread to send the command and again to deliver the reply. So each such
//! runtime gets a connection of its own, kept in its thread's table. Tasks on
//! a multi-threaded runtime move between its threads; they share one.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use common::workers::on_a_runtime_of_its_own;

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

/// Lazily connected handle; clones share its connections.
#[derive(Clone)]
pub struct RedisConn {
    target: RedisTarget,
    timeout: Duration,
    /// Names this handle (and its clones) in each thread's table.
    handle: u64,
    /// Bumped by `reset`: a connection made before is remade.
    generation: Arc<AtomicU64>,
    /// The connection of multi-threaded runtimes.
    shared: Arc<ArcSwapOption<RuntimeConn>>,
    connecting: Arc<Mutex<()>>,
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0);

/// A connection made for one handle, by one thread or runtime.
struct RuntimeConn {
    handle: u64,
    generation: u64,
    conn: CacheConn,
}

thread_local! {
    static THREAD_CONNS: RefCell<Vec<RuntimeConn>> = const { RefCell::new(Vec::new()) };
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
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            generation: Arc::default(),
            shared: Arc::default(),
            connecting: Arc::default(),
        })
    }

    /// The calling runtime's connection, made on first use; the hot path is
    /// a look in a table of this thread's own.
    pub async fn get(&self) -> Result<CacheConn, CacheError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        // Runtimes connect one at a time, so that a burst of requests on a
        // cold cell makes one connection per runtime, not one per request.
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let conn = tokio::time::timeout(self.timeout, self.open(Some(self.timeout)))
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))??;
        let made = RuntimeConn {
            handle: self.handle,
            generation,
            conn: conn.clone(),
        };
        if on_a_runtime_of_its_own() {
            THREAD_CONNS.with_borrow_mut(|conns| {
                conns.retain(|c| c.handle != self.handle);
                conns.push(made);
            });
        } else {
            self.shared.store(Some(Arc::new(made)));
        }
        Ok(conn)
    }

    fn current(&self) -> Option<CacheConn> {
        let generation = self.generation.load(Ordering::Acquire);
        let current = |c: &RuntimeConn| c.handle == self.handle && c.generation == generation;
        if on_a_runtime_of_its_own() {
            THREAD_CONNS
                .with_borrow(|conns| conns.iter().find(|c| current(c)).map(|c| c.conn.clone()))
        } else {
            self.shared
                .load()
                .as_deref()
                .filter(|c| current(c))
                .map(|c| c.conn.clone())
        }
    }

    /// Runs a Redis call within the timeout. After a Redis error every
    /// connection is dropped, so the next call on each runtime makes a new one.
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

    /// Forgets every connection so the next call on each runtime makes a new
    /// one.
    pub fn reset(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
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
