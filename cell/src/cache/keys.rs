//! Redis key layout of the cache. Every key of a tenant carries the hash tag
//! `{t:<tenant>}`, so one tenant's keys live on one Redis Cluster shard and
//! its multi-key transactions are allowed there.

#[derive(Debug, Clone, Copy)]
pub struct CacheKeys;

impl CacheKeys {
    fn tag(tenant: &str) -> String {
        format!("cn:{{t:{tenant}}}")
    }

    /// Hash of one entry, named by the digest of its normalised question (so
    /// the exact tier is one HGET): `entry` (JSON), `embedding` (f32
    /// little-endian), `created` (ms).
    pub fn entry(&self, tenant: &str, digest: &str) -> String {
        format!("{}:e:{digest}", Self::tag(tenant))
    }

    /// Sorted set of the tenant's entry digests by creation time: rebuilds the
    /// vector tier and picks the oldest to evict.
    pub fn ids(&self, tenant: &str) -> String {
        format!("{}:ids", Self::tag(tenant))
    }

    /// The tenant's knowledge version, bumped when its documents change.
    pub fn version(&self, tenant: &str) -> String {
        format!("{}:kv", Self::tag(tenant))
    }

    /// Set of tenants that have cache entries, read at start to load the vector tier.
    pub fn tenants(&self) -> &'static str {
        "cn:tenants"
    }

    /// Stream of inserts, evictions and purges, tailed by every cell to keep
    /// its vector tier in step with Redis.
    pub fn events(&self) -> &'static str {
        "cn:events"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_share_the_tenant_hash_tag() {
        let k = CacheKeys;
        for key in [k.entry("acme", "1"), k.ids("acme"), k.version("acme")] {
            assert!(key.starts_with("cn:{t:acme}:"), "{key}");
        }
    }
}
