//! Redis key layout of the cache. Every key of a tenant carries the hash tag
//! `{t:<tenant>}`, so one tenant's keys live on one Redis Cluster shard and
//! multi-key operations on them are allowed.

#[derive(Debug, Clone, Copy)]
pub struct CacheKeys;

impl CacheKeys {
    fn tag(tenant: &str) -> String {
        format!("cn:{{t:{tenant}}}")
    }

    /// Hash of one entry: `entry` (JSON), `embedding` (f32 little-endian).
    pub fn entry(&self, tenant: &str, id: &str) -> String {
        format!("{}:e:{id}", Self::tag(tenant))
    }

    /// Exact tier: digest of the normalised question → entry id.
    pub fn exact(&self, tenant: &str, digest: &str) -> String {
        format!("{}:x:{digest}", Self::tag(tenant))
    }

    /// Set of the tenant's entry ids, read to build the vector tier.
    pub fn index(&self, tenant: &str) -> String {
        format!("{}:ids", Self::tag(tenant))
    }

    /// The tenant's knowledge version, bumped when its documents change.
    pub fn version(&self, tenant: &str) -> String {
        format!("{}:kv", Self::tag(tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_tenant_hash_tag() {
        let k = CacheKeys;
        for key in [
            k.entry("acme", "1"),
            k.exact("acme", "d"),
            k.index("acme"),
            k.version("acme"),
        ] {
            assert!(key.starts_with("cn:{t:acme}:"), "{key}");
        }
    }
}
