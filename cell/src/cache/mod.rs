//! The semantic cache: answers already given to a tenant, found again by the
//! exact normalised question or by a close embedding that the verification
//! guard accepts. Entries live in Redis under keys tagged per tenant
//! (`{t:<tenant>}`), so a Redis Cluster keeps a tenant's entries on one shard;
//! the same code runs against a single Redis and a Cluster. Redis 7.0 has no
//! vector search, so the vector tier is an in-process index per tenant
//! (`index`), loaded from Redis at start and kept in step with every other
//! cell through a Redis stream of inserts and evictions (`sync`).
//!
//! Every lookup takes a tenant and reads only that tenant's keys and index.
//! Entries carry the tenant's knowledge version and their age: an entry from
//! an older version, or older than the TTL, is never a hit; it stays in Redis
//! for a grace period so the stale-answer fallback can still offer it.

pub mod eval;
pub mod guard;
mod index;
mod ivf;
pub mod judge;
mod keys;
mod redis_conn;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::CellMetrics;
use guard::Rejection;
pub use index::VectorTier;
use judge::{Judgement, judge};
pub use keys::CacheKeys;
pub use redis_conn::{CacheConn, RedisConn, RedisTarget};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cache entry {0} is unreadable")]
    Corrupt(String),
    #[error(
        "the tenant's documents changed while Redis was away; its cache is bypassed until Redis confirms the change"
    )]
    VersionPending,
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError::Redis(e.to_string())
    }
}

/// Cache behaviour.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Default cosine similarity at or above which a stored question is a
    /// candidate; a tenant may override it.
    pub threshold: f32,
    /// Age after which an entry is no longer a hit.
    pub ttl: Duration,
    /// How long past the TTL an entry stays available to the stale fallback.
    pub stale_grace: Duration,
    /// Bound on every Redis round trip; past it the cache is bypassed.
    pub timeout: Duration,
    /// Entries kept per tenant; the oldest go first.
    pub max_entries_per_tenant: usize,
    /// Memory the cell's vector tier may hold; the oldest entries cell-wide go first.
    pub memory_budget_bytes: usize,
}

/// A cited passage of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub document_id: String,
    pub chunk: u32,
    pub score: f32,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

/// What is stored for an answered question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub provider: String,
    pub region: String,
    pub model: String,
    pub usage: Usage,
    /// How well the answer was supported by its passages (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groundedness: Option<f32>,
    /// The answer's sentences with the passages that support each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentences: Vec<crate::pipeline::grounding::SentenceSupport>,
}

/// A stored entry as read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The question as asked (the guard needs its casing).
    pub query: String,
    pub answer: CachedAnswer,
    pub created_at_ms: u64,
    pub knowledge_version: u64,
}

/// How a lookup ended.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit {
        entry: Entry,
        similarity: f32,
        exact: bool,
    },
    Miss {
        /// Similarity of the closest entry, if the tenant has any.
        best_similarity: Option<f32>,
        /// Candidates above the threshold that the guard refused.
        rejected: Vec<Rejection>,
    },
}

/// Candidates above the threshold checked by the guard, best first: if the
/// closest differs in a detail, a slightly less close one may not.
const GUARDED_CANDIDATES: usize = 3;
/// Entries evicted at once when the memory budget is exceeded, so eviction
/// does not run on every store.
const EVICTION_BATCH: usize = 64;

/// Lower-case, single-spaced, without trailing punctuation: the form the exact
/// tier hashes and the guard compares.
pub fn normalise(query: &str) -> String {
    let joined = query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    joined
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_owned()
}

/// Names an entry: the digest of its normalised question.
pub fn digest(normalised: &str) -> String {
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_vector(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The cell's semantic cache.
#[derive(Clone)]
pub struct SemanticCache {
    redis: RedisConn,
    keys: CacheKeys,
    settings: CacheSettings,
    tier: Arc<VectorTier>,
    /// This cell's id, stamped on the events it publishes.
    origin: String,
    /// Tenants whose documents changed while the version bump could not
    /// reach Redis. Their cache is bypassed until a bump succeeds, so an
    /// answer from before the change is never served as a hit.
    unbumped: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    metrics: Arc<CellMetrics>,
}

impl SemanticCache {
    pub fn new(
        redis: RedisConn,
        settings: CacheSettings,
        dims: usize,
        origin: &str,
        metrics: Arc<CellMetrics>,
    ) -> Self {
        Self {
            redis,
            keys: CacheKeys,
            settings,
            tier: Arc::new(VectorTier::new(dims)),
            origin: origin.to_owned(),
            unbumped: Arc::default(),
            metrics,
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    pub fn tier(&self) -> &VectorTier {
        &self.tier
    }

    /// A cache call within the Redis timeout (its error type fixed for
    /// `?` inside async blocks).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        self.redis.bounded(call).await
    }

    fn is_unbumped(&self, tenant: &str) -> bool {
        self.unbumped.lock().is_ok_and(|s| s.contains(tenant))
    }

    /// The tenant's knowledge version (0 before its first ingestion).
    pub async fn knowledge_version(&self, tenant: &str) -> Result<u64, CacheError> {
        if self.is_unbumped(tenant) {
            // Finish the bump that failed before answering from the cache.
            return match self.bump_knowledge_version(tenant).await {
                Ok(v) => Ok(v),
                Err(_) => Err(CacheError::VersionPending),
            };
        }
        self.bounded(async {
            let mut conn = self.redis.get().await?;
            let v: Option<u64> = conn.get(self.keys.version(tenant)).await?;
            Ok(v.unwrap_or(0))
        })
        .await
    }

    /// Marks every cached answer of `tenant` as out of date; called after its
    /// documents change.
    pub async fn bump_knowledge_version(&self, tenant: &str) -> Result<u64, CacheError> {
        let bumped = self
            .bounded(async {
                let mut conn = self.redis.get().await?;
                let v: u64 = conn.incr(self.keys.version(tenant), 1).await?;
                Ok(v)
            })
            .await;
        if let Ok(mut pending) = self.unbumped.lock() {
            match &bumped {
                Ok(_) => pending.remove(tenant),
                Err(_) => pending.insert(tenant.to_owned()),
            };
        }
        bumped
    }

    /// Loads `tenant`'s entries from Redis into the vector tier.
    pub(crate) async fn load_tenant(
        &self,
        conn: &mut CacheConn,
        tenant: &str,
    ) -> Result<(), CacheError> {
        let ids: Vec<String> = conn.zrange(self.keys.ids(tenant), 0, -1).await?;
        let mut entries = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for batch in ids.chunks(512) {
            let mut pipe = redis::pipe();
            for id in batch {
                pipe.cmd("HMGET")
                    .arg(self.keys.entry(tenant, id))
                    .arg("created")
                    .arg("embedding");
            }
            let rows: Vec<(Option<u64>, Option<Vec<u8>>)> = pipe.query_async(conn).await?;
            for (id, row) in batch.iter().zip(rows) {
                match row {
                    (Some(created), Some(bytes)) => {
                        entries.push((id.clone(), created, bytes_vector(&bytes)))
                    }
                    // Expired in Redis: drop it from the id set too.
                    _ => gone.push(id.clone()),
                }
            }
        }
        if !gone.is_empty() {
            let _: () = conn.zrem(self.keys.ids(tenant), &gone).await?;
        }
        self.tier.install(tenant, entries);
        Ok(())
    }

    /// Loads every tenant that has entries (at start, and after the event
    /// stream was lost).
    pub async fn load_all(&self) -> Result<usize, CacheError> {
        let mut conn = self.redis.get().await?;
        let tenants: Vec<String> = conn.smembers(self.keys.tenants()).await?;
        for tenant in &tenants {
            self.load_tenant(&mut conn, tenant).await?;
        }
        Ok(tenants.len())
    }

    async fn read_entry(
        &self,
        conn: &mut CacheConn,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Entry>, CacheError> {
        let raw: Option<Vec<u8>> = conn.hget(self.keys.entry(tenant, id), "entry").await?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| CacheError::Corrupt(id.to_owned())),
        }
    }

    fn is_fresh(&self, entry: &Entry, knowledge_version: u64) -> bool {
        let age = control_plane::model::now_ms().saturating_sub(entry.created_at_ms);
        entry.knowledge_version == knowledge_version
            && u128::from(age) < self.settings.ttl.as_millis()
    }

    /// The exact tier alone, before any embedding: the tenant's knowledge
    /// version and, if the same question (normalised) has a fresh answer, that
    /// answer. One round trip.
    pub async fn lookup_exact(
        &self,
        tenant: &str,
        query: &str,
    ) -> Result<(u64, Option<Entry>), CacheError> {
        if self.is_unbumped(tenant) {
            self.knowledge_version(tenant).await?;
        }
        self.bounded(async {
            let id = digest(&normalise(query));
            let mut conn = self.redis.get().await?;
            let (version, raw): (Option<u64>, Option<Vec<u8>>) = redis::pipe()
                .get(self.keys.version(tenant))
                .hget(self.keys.entry(tenant, &id), "entry")
                .query_async(&mut conn)
                .await?;
            let version = version.unwrap_or(0);
            let entry = match raw {
                Some(bytes) => Some(
                    serde_json::from_slice::<Entry>(&bytes)
                        .map_err(|_| CacheError::Corrupt(id.clone()))?,
                ),
                None => None,
            };
            Ok((version, entry.filter(|e| self.is_fresh(e, version))))
        })
        .await
    }

    /// Finds a fresh answer for `query` (embedded as `embedding`) among
    /// `tenant`'s entries: the exact tier, then the vector tier.
    pub async fn lookup(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        knowledge_version: u64,
        threshold: f32,
    ) -> Result<Lookup, CacheError> {
        let exact = self
            .bounded(async {
                let mut conn = self.redis.get().await?;
                self.read_entry(&mut conn, tenant, &digest(&normalise(query)))
                    .await
            })
            .await?;
        if let Some(entry) = exact
            && self.is_fresh(&entry, knowledge_version)
        {
            return Ok(Lookup::Hit {
                entry,
                similarity: 1.0,
                exact: true,
            });
        }
        self.lookup_similar(tenant, query, embedding, knowledge_version, threshold)
            .await
    }

    /// The vector tier: the closest entries above `threshold` that the guard
    /// accepts.
    pub async fn lookup_similar(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        knowledge_version: u64,
        threshold: f32,
    ) -> Result<Lookup, CacheError> {
        self.bounded(async {
            let mut conn = self.redis.get().await?;
            if !self.tier.has_tenant(tenant) {
                self.load_tenant(&mut conn, tenant).await?;
            }
            let (best_similarity, candidates) =
                self.tier
                    .search(tenant, embedding, threshold, GUARDED_CANDIDATES);
            let mut rejected = Vec::new();
            for (_, id) in candidates {
                let Some(entry) = self.read_entry(&mut conn, tenant, &id).await? else {
                    self.tier.remove(tenant, &id);
                    continue;
                };
                if !self.is_fresh(&entry, knowledge_version) {
                    continue;
                }
                let Some(stored) = self.tier.vector_of(tenant, &id) else {
                    continue;
                };
                match judge(&entry.query, &stored, query, embedding, threshold) {
                    Judgement::Hit { similarity, exact } => {
                        return Ok(Lookup::Hit {
                            entry,
                            similarity,
                            exact,
                        });
                    }
                    Judgement::Rejected { reason, .. } => rejected.push(reason),
                    Judgement::Below { .. } => {}
                }
            }
            Ok(Lookup::Miss {
                best_similarity,
                rejected,
            })
        })
        .await
    }

    /// The tenant's best entry for `query` whatever its version or age, for
    /// the stale-answer fallback. The guard still applies: a stale answer to
    /// a different question is no answer.
    pub async fn stale_candidate(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        threshold: f32,
    ) -> Result<Option<(Entry, f32)>, CacheError> {
        self.bounded(async {
            let normalised = normalise(query);
            let mut conn = self.redis.get().await?;
            if let Some(entry) = self
                .read_entry(&mut conn, tenant, &digest(&normalised))
                .await?
            {
                return Ok(Some((entry, 1.0)));
            }
            if !self.tier.has_tenant(tenant) {
                self.load_tenant(&mut conn, tenant).await?;
            }
            let (_, candidates) =
                self.tier
                    .search(tenant, embedding, threshold, GUARDED_CANDIDATES);
            for (_, id) in candidates {
                let Some(entry) = self.read_entry(&mut conn, tenant, &id).await? else {
                    continue;
                };
                let Some(stored) = self.tier.vector_of(tenant, &id) else {
                    continue;
                };
                if let Judgement::Hit { similarity, .. } =
                    judge(&entry.query, &stored, query, embedding, threshold)
                {
                    return Ok(Some((entry, similarity)));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Stores an answer for `tenant`, then enforces the tenant's cap and the
    /// cell's memory budget.
    pub async fn store(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        mut entry: Entry,
    ) -> Result<(), CacheError> {
        self.bounded(async {
            let normalised = normalise(query);
            entry.query = query.trim().to_owned();
            let id = digest(&normalised);
            let keep = (self.settings.ttl + self.settings.stale_grace)
                .as_secs()
                .max(1) as i64;
            let body = serde_json::to_vec(&entry).map_err(|_| CacheError::Corrupt(id.clone()))?;
            let entry_key = self.keys.entry(tenant, &id);
            let mut conn = self.redis.get().await?;
            let mut pipe = redis::pipe();
            // One tenant's keys share a hash slot, so this transaction is
            // valid on a Cluster too.
            pipe.atomic()
                .cmd("HSET")
                .arg(&entry_key)
                .arg("entry")
                .arg(body)
                .arg("embedding")
                .arg(vector_bytes(embedding))
                .arg("created")
                .arg(entry.created_at_ms)
                .ignore()
                .expire(&entry_key, keep)
                .ignore()
                .zadd(self.keys.ids(tenant), &id, entry.created_at_ms)
                .ignore()
                .zcard(self.keys.ids(tenant));
            let (count,): (usize,) = pipe.query_async(&mut conn).await?;
            let _: () = conn.sadd(self.keys.tenants(), tenant).await?;
            sync::publish(
                &mut conn,
                &self.keys,
                &self.origin,
                sync::Op::Insert,
                tenant,
                &id,
            )
            .await?;
            self.tier
                .upsert(tenant, &id, entry.created_at_ms, embedding);

            if count > self.settings.max_entries_per_tenant {
                let excess = count - self.settings.max_entries_per_tenant;
                let oldest: Vec<(String, f64)> =
                    conn.zpopmin(self.keys.ids(tenant), excess as isize).await?;
                for (old, _) in oldest {
                    self.evict(&mut conn, tenant, &old).await?;
                }
            }
            while self.tier.bytes() > self.settings.memory_budget_bytes {
                let victims = self.tier.oldest(EVICTION_BATCH);
                if victims.is_empty() {
                    break;
                }
                for (t, old, _) in victims {
                    let _: () = conn.zrem(self.keys.ids(&t), &old).await?;
                    self.evict(&mut conn, &t, &old).await?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn evict(&self, conn: &mut CacheConn, tenant: &str, id: &str) -> Result<(), CacheError> {
        let _: () = conn.del(self.keys.entry(tenant, id)).await?;
        self.tier.remove(tenant, id);
        sync::publish(conn, &self.keys, &self.origin, sync::Op::Evict, tenant, id).await?;
        self.metrics.cache_evictions.inc();
        Ok(())
    }

    /// Removes every cached answer of `tenant`; returns how many there were.
    pub async fn purge(&self, tenant: &str) -> Result<usize, CacheError> {
        self.bounded(async {
            let mut conn = self.redis.get().await?;
            let ids: Vec<String> = conn.zrange(self.keys.ids(tenant), 0, -1).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.del(self.keys.entry(tenant, id)).ignore();
            }
            pipe.del(self.keys.ids(tenant)).ignore();
            let () = pipe.query_async(&mut conn).await?;
            let _: () = conn.srem(self.keys.tenants(), tenant).await?;
            self.tier.drop_tenant(tenant);
            sync::publish(
                &mut conn,
                &self.keys,
                &self.origin,
                sync::Op::Purge,
                tenant,
                "",
            )
            .await?;
            Ok(ids.len())
        })
        .await
    }

    /// Applies one event from the stream to the vector tier.
    pub(crate) async fn apply(
        &self,
        conn: &mut CacheConn,
        op: sync::Op,
        tenant: &str,
        id: &str,
    ) -> Result<(), CacheError> {
        match op {
            sync::Op::Insert => {
                if !self.tier.has_tenant(tenant) {
                    return self.load_tenant(conn, tenant).await;
                }
                let row: (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
                    .arg(self.keys.entry(tenant, id))
                    .arg("created")
                    .arg("embedding")
                    .query_async(conn)
                    .await?;
                if let (Some(created), Some(bytes)) = row {
                    self.tier.upsert(tenant, id, created, &bytes_vector(&bytes));
                }
            }
            sync::Op::Evict => self.tier.remove(tenant, id),
            sync::Op::Purge => self.tier.drop_tenant(tenant),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalise("  What IS the   price? "), "what is the price");
        assert_eq!(normalise("Price!!"), "price");
    }

    #[test]
    fn vector_bytes_round_trip() {
        let v = vec![0.25f32, -1.5, 3.0];
        assert_eq!(bytes_vector(&vector_bytes(&v)), v);
    }
}
