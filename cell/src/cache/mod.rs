//! The semantic cache: answers already given to a tenant, found again by the
//! exact normalised question or by a close embedding. Entries live in Redis
//! under keys tagged per tenant (`{t:<tenant>}`), so a Redis Cluster keeps a
//! tenant's entries on one shard. Redis 7.0 has no vector search, so the
//! vector tier is an in-process index per tenant, loaded from Redis on the
//! tenant's first lookup and extended on every store.
//!
//! Every lookup takes a tenant and reads only that tenant's keys and index.
//! Entries carry the tenant's knowledge version; an entry from an older
//! version is never served as a hit.

mod keys;
mod redis_conn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;

use crate::embed::cosine;
pub use keys::CacheKeys;
pub use redis_conn::RedisConn;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cache entry {0} is unreadable")]
    Corrupt(String),
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        CacheError::Redis(e.to_string())
    }
}

/// Cache behaviour.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Cosine similarity at or above which a stored question counts as the same.
    pub threshold: f32,
    pub ttl: Duration,
    /// Bound on every Redis round trip; past it the cache is bypassed.
    pub timeout: Duration,
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
}

/// A stored entry as read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
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
    Miss,
}

/// Lower-case, single-spaced, without trailing punctuation: the form the exact
/// tier hashes.
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

fn digest(normalised: &str) -> String {
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

#[derive(Debug, Default)]
struct TenantIndex {
    /// (entry id, embedding).
    entries: Vec<(String, Vec<f32>)>,
}

/// The cell's semantic cache.
#[derive(Clone)]
pub struct SemanticCache {
    redis: RedisConn,
    keys: CacheKeys,
    settings: CacheSettings,
    /// Vector tier: tenant → index over that tenant's entries only.
    indexes: Arc<RwLock<HashMap<String, Arc<RwLock<TenantIndex>>>>>,
}

impl SemanticCache {
    pub fn new(redis: RedisConn, settings: CacheSettings) -> Self {
        Self {
            redis,
            keys: CacheKeys,
            settings,
            indexes: Arc::default(),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        tokio::time::timeout(self.settings.timeout, fut)
            .await
            .map_err(|_| CacheError::Timeout(self.settings.timeout))?
    }

    /// The tenant's knowledge version (0 before its first ingestion).
    pub async fn knowledge_version(&self, tenant: &str) -> Result<u64, CacheError> {
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
        self.bounded(async {
            let mut conn = self.redis.get().await?;
            let v: u64 = conn.incr(self.keys.version(tenant), 1).await?;
            Ok(v)
        })
        .await
    }

    async fn index_for(&self, tenant: &str) -> Result<Arc<RwLock<TenantIndex>>, CacheError> {
        if let Some(index) = self.indexes.read().await.get(tenant) {
            return Ok(index.clone());
        }
        // First lookup for this tenant in this process: load its entries' embeddings.
        let mut conn = self.redis.get().await?;
        let ids: Vec<String> = conn.smembers(self.keys.index(tenant)).await?;
        let mut entries = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(self.keys.entry(tenant, id), "embedding");
            }
            let embeddings: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
            for (id, emb) in ids.into_iter().zip(embeddings) {
                if let Some(bytes) = emb {
                    entries.push((id, bytes_vector(&bytes)));
                }
            }
        }
        let index = Arc::new(RwLock::new(TenantIndex { entries }));
        let mut all = self.indexes.write().await;
        Ok(all.entry(tenant.to_owned()).or_insert(index).clone())
    }

    async fn read_entry(&self, tenant: &str, id: &str) -> Result<Option<Entry>, CacheError> {
        let mut conn = self.redis.get().await?;
        let raw: Option<Vec<u8>> = conn.hget(self.keys.entry(tenant, id), "entry").await?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| CacheError::Corrupt(id.to_owned())),
        }
    }

    /// Finds a fresh answer for `query` (embedded as `embedding`) among `tenant`'s entries.
    pub async fn lookup(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        knowledge_version: u64,
    ) -> Result<Lookup, CacheError> {
        self.bounded(async {
            let normalised = normalise(query);
            let mut conn = self.redis.get().await?;
            let exact_id: Option<String> = conn
                .get(self.keys.exact(tenant, &digest(&normalised)))
                .await?;
            if let Some(id) = exact_id
                && let Some(entry) = self.read_entry(tenant, &id).await?
                && entry.knowledge_version == knowledge_version
            {
                return Ok(Lookup::Hit {
                    entry,
                    similarity: 1.0,
                    exact: true,
                });
            }
            let index = self.index_for(tenant).await?;
            let best = {
                let index = index.read().await;
                index
                    .entries
                    .iter()
                    .map(|(id, v)| (id, cosine(v, embedding)))
                    .filter(|(_, s)| *s >= self.settings.threshold)
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(id, s)| (id.clone(), s))
            };
            let Some((id, similarity)) = best else {
                return Ok(Lookup::Miss);
            };
            match self.read_entry(tenant, &id).await? {
                Some(entry) if entry.knowledge_version == knowledge_version => Ok(Lookup::Hit {
                    entry,
                    similarity,
                    exact: false,
                }),
                Some(_) => Ok(Lookup::Miss),
                None => {
                    // Expired in Redis: forget it here too.
                    index.write().await.entries.retain(|(e, _)| *e != id);
                    Ok(Lookup::Miss)
                }
            }
        })
        .await
    }

    /// Stores an answer for `tenant`.
    pub async fn store(
        &self,
        tenant: &str,
        query: &str,
        embedding: &[f32],
        entry: Entry,
    ) -> Result<(), CacheError> {
        self.bounded(async {
            let normalised = normalise(query);
            let id = digest(&normalised);
            let ttl = self.settings.ttl.as_secs().max(1) as i64;
            let body = serde_json::to_vec(&entry).map_err(|_| CacheError::Corrupt(id.clone()))?;
            let entry_key = self.keys.entry(tenant, &id);
            let mut conn = self.redis.get().await?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset_multiple(
                    &entry_key,
                    &[("entry", body), ("embedding", vector_bytes(embedding))],
                )
                .expire(&entry_key, ttl)
                .set_ex(self.keys.exact(tenant, &id), &id, ttl as u64)
                .sadd(self.keys.index(tenant), &id);
            let () = pipe.query_async(&mut conn).await?;
            let index = self.index_for(tenant).await?;
            let mut index = index.write().await;
            index.entries.retain(|(e, _)| *e != id);
            index.entries.push((id, embedding.to_vec()));
            Ok(())
        })
        .await
    }

    /// Removes every cached answer of `tenant`; returns how many there were.
    pub async fn purge(&self, tenant: &str) -> Result<usize, CacheError> {
        self.bounded(async {
            let mut conn = self.redis.get().await?;
            let ids: Vec<String> = conn.smembers(self.keys.index(tenant)).await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.del(self.keys.entry(tenant, id))
                    .del(self.keys.exact(tenant, id));
            }
            pipe.del(self.keys.index(tenant));
            let () = pipe.query_async(&mut conn).await?;
            self.indexes.write().await.remove(tenant);
            Ok(ids.len())
        })
        .await
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
