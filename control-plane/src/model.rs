//! The etcd model: key layout and the records stored under each key.
//!
//! ```text
//! <prefix>cells/<id>/spec     CellSpec     written when a cell starts or by operators
//! <prefix>cells/<id>/alive    CellAlive    bound to the cell's lease (TTL ~3 s)
//! <prefix>tenants/<id>        TenantRecord hashed API keys, plan and limits, pin, cache threshold
//! <prefix>secrets/cell-auth    hex key      the key routers sign tenant context with
//! <prefix>secrets/cell-auth-previous  hex key  the key before the last rotation, still accepted by cells
//! <prefix>providers/<id>/reports/<cell>  ProviderReport  a cell's last second with a provider-region (leased)
//! <prefix>providers/<id>/health  ProviderHealth  published by the control-plane leader
//! <prefix>providers/<id>/drain   ProviderDrain   an operator took the provider-region out
//! <prefix>placement/<tenant>  PlacementRecord  committed replica set, epoch, move in progress (leader only)
//! <prefix>routers/<id>        RouterPresence   the placement revision a router routes by (leased)
//! <prefix>election/control-plane               etcd election among control-plane replicas
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod placement;

pub use placement::{
    Leaving, Move, MoveStep, PlacementRecord, RouterPresence, hint_stream, ingest_stream,
};

/// Key layout under a configurable prefix (default `/cellnet/`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind<'a> {
    CellSpec(&'a str),
    CellAlive(&'a str),
    Tenant(&'a str),
    CellAuthKey,
    CellAuthPreviousKey,
    ProviderHealth(&'a str),
    ProviderDrain(&'a str),
    ProviderReport {
        provider: &'a str,
        cell: &'a str,
    },
    /// A provider-region a cell is configured with.
    ProviderConfigured {
        provider: &'a str,
        cell: &'a str,
    },
    Placement(&'a str),
    Router(&'a str),
    /// A key this version does not know; ignored so that newer writers can add keys.
    Unknown,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn cells(&self) -> String {
        format!("{}cells/", self.prefix)
    }

    pub fn cell_spec(&self, cell: &str) -> String {
        format!("{}cells/{cell}/spec", self.prefix)
    }

    pub fn cell_alive(&self, cell: &str) -> String {
        format!("{}cells/{cell}/alive", self.prefix)
    }

    pub fn tenants(&self) -> String {
        format!("{}tenants/", self.prefix)
    }

    pub fn tenant(&self, tenant: &str) -> String {
        format!("{}tenants/{tenant}", self.prefix)
    }

    /// The key routers sign the tenant context with and cells check it with.
    pub fn cell_auth_key(&self) -> String {
        format!("{}secrets/cell-auth", self.prefix)
    }

    /// The signing key before the last rotation: cells still accept it, so
    /// that a router that has not seen the rotation yet is not refused.
    pub fn cell_auth_previous_key(&self) -> String {
        format!("{}secrets/cell-auth-previous", self.prefix)
    }

    pub fn providers(&self) -> String {
        format!("{}providers/", self.prefix)
    }

    pub fn provider_health(&self, provider: &str) -> String {
        format!("{}providers/{provider}/health", self.prefix)
    }

    pub fn provider_drain(&self, provider: &str) -> String {
        format!("{}providers/{provider}/drain", self.prefix)
    }

    pub fn provider_report(&self, provider: &str, cell: &str) -> String {
        format!("{}providers/{provider}/reports/{cell}", self.prefix)
    }

    /// A provider-region as one cell is configured to use it.
    pub fn provider_configured(&self, provider: &str, cell: &str) -> String {
        format!("{}providers/{provider}/cells/{cell}", self.prefix)
    }

    pub fn placements(&self) -> String {
        format!("{}placement/", self.prefix)
    }

    pub fn placement(&self, tenant: &str) -> String {
        format!("{}placement/{tenant}", self.prefix)
    }

    pub fn routers(&self) -> String {
        format!("{}routers/", self.prefix)
    }

    pub fn router(&self, id: &str) -> String {
        format!("{}routers/{id}", self.prefix)
    }

    /// The election control-plane replicas campaign in.
    pub fn election(&self) -> String {
        format!("{}election/control-plane", self.prefix)
    }

    /// Classifies a key read from etcd.
    pub fn parse<'a>(&self, key: &'a str) -> KeyKind<'a> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return KeyKind::Unknown;
        };
        if let Some(cell) = rest.strip_prefix("cells/") {
            if let Some(id) = cell.strip_suffix("/spec") {
                return KeyKind::CellSpec(id);
            }
            if let Some(id) = cell.strip_suffix("/alive") {
                return KeyKind::CellAlive(id);
            }
            return KeyKind::Unknown;
        }
        if rest == "secrets/cell-auth" {
            return KeyKind::CellAuthKey;
        }
        if rest == "secrets/cell-auth-previous" {
            return KeyKind::CellAuthPreviousKey;
        }
        if let Some(id) = rest.strip_prefix("tenants/")
            && !id.contains('/')
        {
            return KeyKind::Tenant(id);
        }
        if let Some(provider) = rest.strip_prefix("providers/") {
            if let Some(id) = provider.strip_suffix("/health") {
                return KeyKind::ProviderHealth(id);
            }
            if let Some(id) = provider.strip_suffix("/drain") {
                return KeyKind::ProviderDrain(id);
            }
            if let Some((id, cell)) = provider.split_once("/reports/") {
                return KeyKind::ProviderReport { provider: id, cell };
            }
            if let Some((id, cell)) = provider.split_once("/cells/") {
                return KeyKind::ProviderConfigured { provider: id, cell };
            }
        }
        if let Some(id) = rest.strip_prefix("placement/")
            && !id.contains('/')
        {
            return KeyKind::Placement(id);
        }
        if let Some(id) = rest.strip_prefix("routers/")
            && !id.contains('/')
        {
            return KeyKind::Router(id);
        }
        KeyKind::Unknown
    }
}

/// `providers/<id>/reports/<cell>`: what one cell saw of one provider-region
/// over its last report interval. Bound to a short lease: a cell that stops
/// reporting stops counting.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProviderReport {
    pub successes: u64,
    /// Failed attempts other than throttling: timeouts, connection errors, 5xx.
    pub failures: u64,
    /// 429s.
    pub throttled: u64,
    /// Mean latency of successful attempts, in milliseconds.
    pub latency_ms: f64,
    pub at_ms: u64,
}

/// A provider-region's health as the control-plane leader judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    Healthy,
    /// Failing or throttling some requests: tried after healthy ones.
    Degraded,
    /// Failing most requests: tried only when everything else failed.
    Down,
    /// Taken out by an operator: not tried unless nothing else is left.
    Drained,
}

impl ProviderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Healthy => "healthy",
            ProviderState::Degraded => "degraded",
            ProviderState::Down => "down",
            ProviderState::Drained => "drained",
        }
    }
}

/// `providers/<id>/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderHealth {
    pub state: ProviderState,
    /// Share of traffic this region should get relative to healthy ones (0–1).
    pub weight: f64,
    pub error_rate: f64,
    pub throttle_rate: f64,
    /// Attempts the judgement is based on.
    pub samples: u64,
    pub latency_ms: f64,
    /// The control-plane replica that published it.
    pub leader: String,
    pub since_ms: u64,
    pub updated_at_ms: u64,
}

/// `providers/<id>/drain`: present while an operator keeps the region out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDrain {
    pub at_ms: u64,
}

/// Provider ids appear in keys: the same rule as tenant ids.
pub fn validate_provider_id(id: &str) -> Result<(), String> {
    validate_tenant_id(id).map_err(|_| {
        format!("provider id {id:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
    })
}

/// Where a cell is in its life. Operators move it to `draining` and
/// `removed`; the control-plane leader moves it on from `joining` (once its
/// share of tenants has been moved onto it) and from `draining` (once every
/// tenant has been moved off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Registered and alive, taking tenants but committed for none yet.
    #[default]
    Joining,
    Active,
    /// Every tenant is being moved off.
    Draining,
    /// Holds no committed tenant; may be removed.
    Drained,
    /// Gone: out of every target, never routed to again.
    Removed,
}

impl Lifecycle {
    /// Whether the leader places tenants on a cell in this state.
    pub fn takes_tenants(self) -> bool {
        matches!(self, Lifecycle::Joining | Lifecycle::Active)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Joining => "joining",
            Lifecycle::Active => "active",
            Lifecycle::Draining => "draining",
            Lifecycle::Drained => "drained",
            Lifecycle::Removed => "removed",
        }
    }
}

/// `cells/<id>/spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellSpec {
    pub region: String,
    /// Base URL the router uses to reach the cell, e.g. `http://10.0.0.7:8080`.
    pub endpoint: String,
    pub template: String,
    /// Records written before lifecycles existed call it `desired`.
    #[serde(default, alias = "desired")]
    pub lifecycle: Lifecycle,
}

/// `cells/<id>/alive`: present only while the cell's lease is kept alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellAlive {
    pub endpoint: String,
    pub started_at_ms: u64,
}

/// One API key of a tenant, stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Hex SHA-256 of the key. Keys are 256-bit random, so a fast hash is
    /// enough: there is nothing to brute-force.
    pub sha256: String,
    /// The first characters of the key, so operators can tell keys apart.
    pub hint: String,
    pub created_at_ms: u64,
}

/// `tenants/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub api_keys: Vec<ApiKeyRecord>,
    #[serde(default = "default_plan")]
    pub plan: String,
    /// Cells the tenant is pinned to, overriding the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Vec<String>>,
    /// Overrides the cells' semantic-cache similarity threshold for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_threshold: Option<f32>,
    /// Overrides the limits of the tenant's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,
    /// Overrides the fallbacks of the tenant's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Fallbacks>,
    /// Retrieve by BM25 words as well as by vectors, fused by reciprocal rank.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hybrid_retrieval: bool,
    pub created_at_ms: u64,
}

/// Which of the fallbacks may answer for a tenant when its first provider
/// cannot, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    /// Another region serving the same model.
    pub next_region: bool,
    /// A different (cheaper) model.
    pub model_cascade: bool,
    /// The tenant's best older or expired cached answer, flagged `stale`.
    pub stale_cache: bool,
    /// An extract of the retrieved passages, or "I don't know", flagged
    /// `degraded`. Without it, the request fails with 502.
    pub degrade: bool,
}

impl Fallbacks {
    pub const ALL: Fallbacks = Fallbacks {
        next_region: true,
        model_cascade: true,
        stale_cache: true,
        degrade: true,
    };
}

impl TenantRecord {
    /// The fallbacks in force: the tenant's own, else its plan's.
    pub fn effective_fallbacks(&self) -> Fallbacks {
        self.fallbacks
            .or_else(|| plan_fallbacks(&self.plan))
            .unwrap_or(Fallbacks::ALL)
    }

    /// The limits the router enforces: the tenant's own, else its plan's.
    /// A plan this version does not know gets the default plan's limits.
    pub fn effective_limits(&self) -> TenantLimits {
        self.limits
            .or_else(|| plan_limits(&self.plan))
            .unwrap_or(DEFAULT_PLAN_LIMITS)
    }
}

/// What one tenant may use, enforced by every router together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Sustained request rate.
    pub requests_per_second: f64,
    /// Requests that may arrive at once above the sustained rate.
    pub burst: u32,
    /// LLM tokens (prompt + completion) per UTC day; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
}

impl TenantLimits {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 1_000_000.0) {
            return Err(format!(
                "requests_per_second must be in (0, 1000000], got {}",
                self.requests_per_second
            ));
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".into());
        }
        if self.tokens_per_day == Some(0) {
            return Err("tokens_per_day must be at least 1 (leave it out for no quota)".into());
        }
        Ok(())
    }
}

pub const DEFAULT_PLAN: &str = "standard";
const DEFAULT_PLAN_LIMITS: TenantLimits = TenantLimits {
    requests_per_second: 50.0,
    burst: 100,
    tokens_per_day: Some(5_000_000),
};

/// The plans a tenant can be on, with their limits.
pub const PLANS: &[(&str, TenantLimits)] = &[
    (
        "free",
        TenantLimits {
            requests_per_second: 2.0,
            burst: 10,
            tokens_per_day: Some(100_000),
        },
    ),
    (DEFAULT_PLAN, DEFAULT_PLAN_LIMITS),
    (
        "enterprise",
        TenantLimits {
            requests_per_second: 1000.0,
            burst: 2000,
            tokens_per_day: None,
        },
    ),
];

/// The fallbacks of a named plan: enterprise tenants get their model or an
/// older answer from it, never a cheaper model.
pub fn plan_fallbacks(plan: &str) -> Option<Fallbacks> {
    match plan {
        "free" | DEFAULT_PLAN => Some(Fallbacks::ALL),
        "enterprise" => Some(Fallbacks {
            model_cascade: false,
            ..Fallbacks::ALL
        }),
        _ => None,
    }
}

/// The limits of a named plan.
pub fn plan_limits(plan: &str) -> Option<TenantLimits> {
    PLANS
        .iter()
        .find(|(name, _)| *name == plan)
        .map(|(_, l)| *l)
}

fn default_plan() -> String {
    DEFAULT_PLAN.to_owned()
}

/// Tenant ids appear in keys, URLs and Redis hash tags: keep them plain.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    let ok_len = (1..=63).contains(&id.len());
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_start = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(format!(
            "tenant id {id:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ))
    }
}

/// Hex SHA-256 of an API key, the form stored in etcd and looked up by the router.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A signing key's public name: the first 8 bytes of its SHA-256, in hex.
/// Shows which key is current without showing the key.
pub fn key_fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// A new random API key: `cn_` followed by 256 random bits, base64url.
pub fn generate_api_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "cn_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let keys = Keys::new("/cn");
        assert_eq!(keys.cell_spec("c1"), "/cn/cells/c1/spec");
        assert_eq!(keys.parse(&keys.cell_spec("c1")), KeyKind::CellSpec("c1"));
        assert_eq!(
            keys.parse(&keys.cell_alive("c-2")),
            KeyKind::CellAlive("c-2")
        );
        assert_eq!(keys.parse(&keys.tenant("acme")), KeyKind::Tenant("acme"));
        assert_eq!(keys.parse("/cn/cells/c1/status"), KeyKind::Unknown);
        assert_eq!(
            keys.parse(&keys.placement("acme")),
            KeyKind::Placement("acme")
        );
        assert_eq!(keys.parse(&keys.router("r-1")), KeyKind::Router("r-1"));
        assert_eq!(
            keys.parse(&keys.provider_configured("azure-eastus", "cell-a")),
            KeyKind::ProviderConfigured {
                provider: "azure-eastus",
                cell: "cell-a"
            }
        );
        assert_eq!(keys.parse(&keys.cell_auth_key()), KeyKind::CellAuthKey);
        assert_eq!(
            keys.parse(&keys.cell_auth_previous_key()),
            KeyKind::CellAuthPreviousKey
        );
        assert_eq!(keys.parse("/other/tenants/acme"), KeyKind::Unknown);
        assert_eq!(
            keys.parse(&keys.provider_health("azure-eastus")),
            KeyKind::ProviderHealth("azure-eastus")
        );
        assert_eq!(
            keys.parse(&keys.provider_drain("azure-eastus")),
            KeyKind::ProviderDrain("azure-eastus")
        );
        assert_eq!(
            keys.parse(&keys.provider_report("azure-eastus", "cell-a")),
            KeyKind::ProviderReport {
                provider: "azure-eastus",
                cell: "cell-a"
            }
        );
        assert_eq!(
            keys.parse(&format!("{}/1234", keys.election())),
            KeyKind::Unknown
        );
    }

    #[test]
    fn tenant_ids() {
        assert!(validate_tenant_id("acme").is_ok());
        assert!(validate_tenant_id("acme-2").is_ok());
        assert!(validate_tenant_id("").is_err());
        assert!(validate_tenant_id("-acme").is_err());
        assert!(validate_tenant_id("Acme").is_err());
        assert!(validate_tenant_id("a/b").is_err());
        assert!(validate_tenant_id(&"a".repeat(64)).is_err());
    }

    #[test]
    fn api_keys_are_random_and_hash_stably() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with("cn_") && a.len() > 40);
        assert_eq!(hash_api_key(&a), hash_api_key(&a));
        assert_ne!(hash_api_key(&a), hash_api_key(&b));
    }
}
