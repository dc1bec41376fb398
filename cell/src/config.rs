//! Cell configuration: raw YAML with unknown fields rejected, validated into
//! `Config`; every problem is reported at once with its field path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::config::{ConfigError, ConfigErrors, read_yaml};
use control_plane::model::Keys;
use control_plane::store::EtcdSettings;
use control_plane::store::RawEtcd;
use serde::Deserialize;

pub use common::config::Secret;

/// Where `scripts/fetch-model.sh` puts all-MiniLM-L6-v2 by default.
pub fn default_model_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CELLNET_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".to_owned());
    PathBuf::from(home).join(".cache/cellnet/models/all-MiniLM-L6-v2")
}

/// The design's threshold: similar enough to be the same question for most
/// paraphrases, strict enough that unrelated questions never meet it.
pub const DEFAULT_CACHE_THRESHOLD: f32 = 0.92;
/// Cached answers expire after a day even if nothing changes.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// An expired answer stays a week for the stale fallback: better than none
/// when every provider is down.
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// A cache round trip slower than this is bypassed: answering matters more.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// MiniLM scores unrelated text around 0.1; below this a chunk is noise.
pub const DEFAULT_SCORE_FLOOR: f32 = 0.25;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    id: String,
    region: String,
    /// A shipped template (`small`, `standard`, `large`) or a template file;
    /// the sections below override its fields.
    #[serde(default = "default_template")]
    template: String,
    listen: String,
    /// Base URL routers use; defaults to `http://<bound address>`.
    #[serde(default)]
    advertise: Option<String>,
    data_dir: PathBuf,
    #[serde(default)]
    model_dir: Option<PathBuf>,
    etcd: RawEtcd,
    redis: RawRedis,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    retrieval: RawRetrieval,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    ingest: RawIngest,
    /// Overrides of the template's vector index settings.
    #[serde(default)]
    vector: RawVector,
    #[serde(default)]
    embedding: RawEmbedding,
    providers: Vec<RawProvider>,
    /// Price per model (the model name a provider reports), in USD per
    /// million tokens; answers from models without a price report no cost.
    #[serde(default)]
    prices: std::collections::HashMap<String, Price>,
    /// Ask the second provider too when the first has not answered by its
    /// observed p95 latency; the first success wins.
    #[serde(default)]
    hedging: bool,
    /// A second model judging a sample of fresh answers against the
    /// passages they cite; off when absent.
    #[serde(default)]
    quality_check: Option<RawQualityCheck>,
    /// Threads that serve connections, each with a runtime and a Redis
    /// connection of its own; by default the template's.
    #[serde(default)]
    workers: Option<usize>,
    /// Where spans are exported (OTLP); the `OTEL_*` variables override it.
    #[serde(default)]
    telemetry: common::telemetry::RawTelemetry,
}

/// What a model's tokens cost, in USD per million.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    /// The cost of `usage` in USD.
    pub fn cost(&self, usage: &crate::cache::Usage) -> f64 {
        (f64::from(usage.prompt_tokens) * self.input_per_million
            + f64::from(usage.completion_tokens) * self.output_per_million)
            / 1_000_000.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQualityCheck {
    /// Share of fresh answers judged, from 0 to 1.
    sample: f64,
    /// The configured provider (by name) that judges.
    provider: String,
    /// Judgements under way at once; an answer sampled beyond this is not
    /// judged (and counted as skipped), so that a slow judge never piles up.
    #[serde(default = "default_quality_checks_in_flight")]
    max_in_flight: usize,
}

fn default_quality_checks_in_flight() -> usize {
    16
}

/// The validated sampled quality check.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityCheckConfig {
    pub sample: f64,
    /// Index of the judging provider in `Config::providers`.
    pub provider: usize,
    pub max_in_flight: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    /// Recent query embeddings kept in memory; 0 turns the memo off.
    #[serde(default)]
    lru_capacity: Option<usize>,
    /// Questions embedded in one forward pass at most.
    #[serde(default)]
    max_batch: Option<usize>,
    /// Embed through a provider's embeddings API instead of the local model
    /// (same fields as a provider; its model or deployment is the embedding
    /// model, asked for the shard's dimensions).
    #[serde(default)]
    remote: Option<RawProvider>,
}

fn default_template() -> String {
    common::template::DEFAULT.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    /// A single Redis.
    #[serde(default)]
    url: Option<String>,
    /// Seed nodes of a Redis Cluster (instead of `url`).
    #[serde(default)]
    cluster: Option<Vec<String>>,
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    timeout: Duration,
}

fn default_redis_timeout() -> Duration {
    DEFAULT_REDIS_TIMEOUT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_threshold")]
    threshold: f32,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    ttl: Duration,
    #[serde(default = "default_stale_grace", with = "humantime_serde")]
    stale_grace: Duration,
    /// By default the template's.
    #[serde(default)]
    max_entries_per_tenant: Option<usize>,
    /// By default the template's.
    #[serde(default)]
    memory_budget_bytes: Option<usize>,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_CACHE_THRESHOLD,
            ttl: DEFAULT_CACHE_TTL,
            stale_grace: DEFAULT_STALE_GRACE,
            max_entries_per_tenant: None,
            memory_budget_bytes: None,
        }
    }
}

fn default_stale_grace() -> Duration {
    DEFAULT_STALE_GRACE
}

fn default_threshold() -> f32 {
    DEFAULT_CACHE_THRESHOLD
}

fn default_ttl() -> Duration {
    DEFAULT_CACHE_TTL
}

/// Each field overrides the cell template's value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVector {
    hnsw_m: Option<usize>,
    hnsw_ef_construct: Option<usize>,
    hnsw_ef: Option<usize>,
    scalar_quantization: Option<bool>,
    vectors_on_disk: Option<bool>,
    indexing_threshold_kb: Option<usize>,
    optimize_after_points: Option<usize>,
    /// Keep the shard in an external Qdrant server instead of the embedded
    /// engine.
    qdrant_server: Option<RawQdrantServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQdrantServer {
    /// The server's gRPC endpoint, e.g. `http://qdrant:6334`.
    url: String,
    /// Environment variable holding the server's API key.
    #[serde(default)]
    api_key_env: Option<String>,
    /// Collection of this cell; defaults to `cellnet-<cell id>`.
    #[serde(default)]
    collection: Option<String>,
}

/// An external Qdrant server holding the cell's vector shard.
#[derive(Debug, Clone)]
pub struct QdrantServerConfig {
    pub url: String,
    pub api_key: Option<Secret>,
    pub collection: String,
}

/// A template's vector parameters as the shard's index settings.
pub fn index_settings(v: &common::template::VectorParams) -> crate::vector::IndexSettings {
    crate::vector::IndexSettings {
        hnsw_m: v.hnsw_m,
        hnsw_ef_construct: v.hnsw_ef_construct,
        hnsw_ef: v.hnsw_ef,
        scalar_quantization: v.scalar_quantization,
        vectors_on_disk: v.vectors_on_disk,
        indexing_threshold_kb: v.indexing_threshold_kb,
        optimize_after_points: v.optimize_after_points,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngest {
    /// An asynchronous ingestion job left pending this long by a worker that
    /// stopped is taken over by another.
    #[serde(default = "default_claim_idle", with = "humantime_serde")]
    claim_idle: Duration,
}

impl Default for RawIngest {
    fn default() -> Self {
        Self {
            claim_idle: default_claim_idle(),
        }
    }
}

fn default_claim_idle() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetrieval {
    #[serde(default = "default_top_k")]
    default_top_k: usize,
    #[serde(default = "default_max_top_k")]
    max_top_k: usize,
    #[serde(default = "default_floor")]
    score_floor: f32,
    /// Tokens the prompt may hold (system message, passages, question and
    /// the answer's allowance); passages are quoted best first while they fit.
    #[serde(default = "default_prompt_budget")]
    prompt_token_budget: usize,
}

fn default_prompt_budget() -> usize {
    3000
}

impl Default for RawRetrieval {
    fn default() -> Self {
        Self {
            default_top_k: default_top_k(),
            max_top_k: default_max_top_k(),
            score_floor: DEFAULT_SCORE_FLOOR,
            prompt_token_budget: default_prompt_budget(),
        }
    }
}

fn default_top_k() -> usize {
    5
}

fn default_max_top_k() -> usize {
    50
}

fn default_floor() -> f32 {
    DEFAULT_SCORE_FLOOR
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    #[serde(default = "default_max_documents")]
    max_documents: usize,
    #[serde(default = "default_max_query_chars")]
    max_query_chars: usize,
    /// By default the template's.
    #[serde(default)]
    max_concurrent_requests: Option<usize>,
    /// Documents in one `POST /v1/documents?async=true`.
    #[serde(default = "default_max_async_documents")]
    max_async_documents: usize,
}

fn default_max_async_documents() -> usize {
    10_000
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_documents: default_max_documents(),
            max_query_chars: default_max_query_chars(),
            max_concurrent_requests: None,
            max_async_documents: default_max_async_documents(),
        }
    }
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}

fn default_max_documents() -> usize {
    256
}

fn default_max_query_chars() -> usize {
    4096
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum RawProvider {
    AzureOpenai {
        name: String,
        region: String,
        endpoint: String,
        deployment: String,
        #[serde(default)]
        api_version: Option<String>,
        /// Environment variable holding the resource key (`api-key` header).
        #[serde(default)]
        api_key_env: Option<String>,
        /// Or an Entra ID bearer token: printed by a command, or in a variable.
        #[serde(default)]
        entra_token_command: Option<String>,
        #[serde(default)]
        entra_token_env: Option<String>,
        #[serde(default = "default_provider_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
    VertexAi {
        name: String,
        region: String,
        project: String,
        location: String,
        model: String,
        /// Defaults to `https://{location}-aiplatform.googleapis.com`.
        #[serde(default)]
        endpoint: Option<String>,
        auth: RawOAuthTokens,
        #[serde(default = "default_provider_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
    OpenaiCompatible {
        name: String,
        region: String,
        /// Up to and including the API version, e.g. `https://api.openai.com/v1`.
        base_url: String,
        model: String,
        /// Environment variable holding the bearer key; servers without keys need none.
        #[serde(default)]
        api_key_env: Option<String>,
        #[serde(default = "default_provider_timeout", with = "humantime_serde")]
        timeout: Duration,
    },
}

/// How a Vertex AI provider gets its OAuth token: exactly one of these.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuthTokens {
    #[serde(default)]
    service_account_key_file: Option<PathBuf>,
    #[serde(default)]
    token_command: Option<String>,
    #[serde(default)]
    access_token_env: Option<String>,
}

/// A validated Azure OpenAI credential.
#[derive(Debug, Clone)]
pub enum AzureCredential {
    ApiKey(Secret),
    EntraTokenCommand(String),
    EntraToken(Secret),
}

/// A validated Google credential.
#[derive(Debug, Clone)]
pub enum GoogleCredential {
    /// The key file's JSON, already checked to hold a usable RSA key.
    ServiceAccountKey(Secret),
    TokenCommand(String),
    AccessToken(Secret),
}

fn default_provider_timeout() -> Duration {
    Duration::from_secs(20)
}

/// One configured provider-region.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    AzureOpenai {
        name: String,
        region: String,
        endpoint: String,
        deployment: String,
        api_version: String,
        credential: AzureCredential,
        timeout: Duration,
    },
    VertexAi {
        name: String,
        region: String,
        endpoint: String,
        project: String,
        location: String,
        model: String,
        credential: GoogleCredential,
        timeout: Duration,
    },
    OpenaiCompatible {
        name: String,
        region: String,
        base_url: String,
        model: String,
        api_key: Option<Secret>,
        timeout: Duration,
    },
}

impl ProviderConfig {
    pub fn name(&self) -> &str {
        match self {
            ProviderConfig::AzureOpenai { name, .. }
            | ProviderConfig::VertexAi { name, .. }
            | ProviderConfig::OpenaiCompatible { name, .. } => name,
        }
    }
}

fn check_common(
    e: &mut ConfigErrors,
    path: &str,
    name: &str,
    region: &str,
    url: (&str, &str),
    timeout: Duration,
) {
    e.check(
        !name.is_empty(),
        format!("{path}.name"),
        "must not be empty",
    );
    e.check(
        !region.is_empty(),
        format!("{path}.region"),
        "must not be empty",
    );
    e.check(
        url.1.starts_with("http://") || url.1.starts_with("https://"),
        format!("{path}.{}", url.0),
        "must be an http(s) URL",
    );
    e.check(
        !timeout.is_zero(),
        format!("{path}.timeout"),
        "must be greater than zero",
    );
}

fn secret_from_env(e: &mut ConfigErrors, path: String, var: &str) -> Secret {
    let value = std::env::var(var).unwrap_or_default();
    e.check(
        !value.is_empty(),
        path,
        format!("names {var}, which is not set"),
    );
    Secret::new(value)
}

#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    pub default_top_k: usize,
    pub max_top_k: usize,
    pub score_floor: f32,
    pub prompt_token_budget: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_documents: usize,
    pub max_query_chars: usize,
    pub max_concurrent_requests: usize,
    pub max_async_documents: usize,
}

/// The validated cell configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub region: String,
    /// The template's name (or file), as the config gave it.
    pub template: String,
    pub listen: SocketAddr,
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub model_dir: PathBuf,
    pub etcd: EtcdSettings,
    pub keys: Keys,
    pub redis: crate::cache::RedisTarget,
    pub redis_timeout: Duration,
    pub cache_threshold: f32,
    pub cache_ttl: Duration,
    pub cache_stale_grace: Duration,
    pub cache_max_entries_per_tenant: usize,
    pub cache_memory_budget_bytes: usize,
    pub retrieval: RetrievalConfig,
    pub limits: Limits,
    pub vector: crate::vector::IndexSettings,
    /// Where the vector shard lives when not in the embedded engine.
    pub qdrant_server: Option<QdrantServerConfig>,
    pub ingest_claim_idle: Duration,
    pub embedding_lru_capacity: usize,
    pub embedding_max_batch: usize,
    /// A provider to embed with instead of the local model.
    pub embedding_remote: Option<ProviderConfig>,
    pub providers: Vec<ProviderConfig>,
    pub prices: std::collections::HashMap<String, Price>,
    pub hedging: bool,
    pub quality_check: Option<QualityCheckConfig>,
    pub workers: usize,
    pub telemetry: common::telemetry::TelemetrySettings,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = read_yaml(path)?;
        raw.validate()
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut e = ConfigErrors::new();
        e.check(
            !self.id.is_empty()
                && self
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "id",
            "must be non-empty letters, digits and '-'",
        );
        e.check(!self.region.is_empty(), "region", "must not be empty");
        let listen = self.listen.parse().unwrap_or_else(|_| {
            e.push(
                "listen",
                format!(
                    "must be an address like 127.0.0.1:8100, got {:?}",
                    self.listen
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        if let Some(a) = &self.advertise {
            e.check(
                a.starts_with("http://") || a.starts_with("https://"),
                "advertise",
                "must be an http(s) URL",
            );
        }
        let (etcd, keys) = self.etcd.validate("etcd", &mut e);
        let is_redis_url = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
        let redis = match (&self.redis.url, &self.redis.cluster) {
            (Some(url), None) => {
                e.check(is_redis_url(url), "redis.url", "must be a redis:// URL");
                crate::cache::RedisTarget::Single(url.clone())
            }
            (None, Some(nodes)) => {
                e.check(
                    !nodes.is_empty(),
                    "redis.cluster",
                    "must list at least one node",
                );
                for (i, n) in nodes.iter().enumerate() {
                    e.check(
                        is_redis_url(n),
                        format!("redis.cluster[{i}]"),
                        "must be a redis:// URL",
                    );
                }
                crate::cache::RedisTarget::Cluster(nodes.clone())
            }
            _ => {
                e.push(
                    "redis",
                    "must set exactly one of url (a single Redis) or cluster (seed nodes)",
                );
                crate::cache::RedisTarget::Single(String::new())
            }
        };
        e.check(
            !self.redis.timeout.is_zero(),
            "redis.timeout",
            "must be greater than zero",
        );
        e.check(
            self.cache.threshold > 0.0 && self.cache.threshold <= 1.0,
            "cache.threshold",
            "must be in (0, 1]",
        );
        e.check(
            self.cache.ttl >= Duration::from_secs(1),
            "cache.ttl",
            "must be at least 1s",
        );
        e.check(
            self.retrieval.default_top_k >= 1
                && self.retrieval.default_top_k <= self.retrieval.max_top_k,
            "retrieval.default_top_k",
            "must be between 1 and retrieval.max_top_k",
        );
        e.check(
            (0.0..1.0).contains(&self.retrieval.score_floor),
            "retrieval.score_floor",
            "must be in [0, 1)",
        );
        e.check(
            self.retrieval.prompt_token_budget >= 1024,
            "retrieval.prompt_token_budget",
            "must be at least 1024",
        );
        e.check(
            self.limits.max_body_bytes >= 1024,
            "limits.max_body_bytes",
            "must be at least 1024",
        );
        e.check(
            self.limits.max_documents >= 1,
            "limits.max_documents",
            "must be at least 1",
        );
        e.check(
            self.limits.max_async_documents >= 1,
            "limits.max_async_documents",
            "must be at least 1",
        );
        e.check(
            !self.ingest.claim_idle.is_zero(),
            "ingest.claim_idle",
            "must be longer than zero",
        );
        // Fields the config leaves out come from the template; without a
        // usable one the rest cannot be judged.
        let base = match common::template::CellTemplate::load(&self.template) {
            Ok(template) => template,
            Err(err) => {
                e.push("template", err);
                return Err(ConfigError::Invalid(e));
            }
        };
        let mut vector = base.vector.clone();
        let v = &self.vector;
        vector.hnsw_m = v.hnsw_m.unwrap_or(vector.hnsw_m);
        vector.hnsw_ef_construct = v.hnsw_ef_construct.unwrap_or(vector.hnsw_ef_construct);
        vector.hnsw_ef = v.hnsw_ef.unwrap_or(vector.hnsw_ef);
        vector.scalar_quantization = v.scalar_quantization.unwrap_or(vector.scalar_quantization);
        vector.vectors_on_disk = v.vectors_on_disk.unwrap_or(vector.vectors_on_disk);
        vector.indexing_threshold_kb = v
            .indexing_threshold_kb
            .unwrap_or(vector.indexing_threshold_kb);
        vector.optimize_after_points = v
            .optimize_after_points
            .unwrap_or(vector.optimize_after_points);
        vector.check("vector", &mut e);
        let max_concurrent_requests = self
            .limits
            .max_concurrent_requests
            .unwrap_or(base.limits.max_concurrent_requests);
        e.check(
            max_concurrent_requests >= 1,
            "limits.max_concurrent_requests",
            "must be at least 1",
        );
        let embedding_max_batch = self.embedding.max_batch.unwrap_or(base.embedding.max_batch);
        e.check(
            (1..=256).contains(&embedding_max_batch),
            "embedding.max_batch",
            "must be between 1 and 256",
        );
        let qdrant_server = self.vector.qdrant_server.as_ref().map(|q| {
            e.check(
                q.url.starts_with("http://") || q.url.starts_with("https://"),
                "vector.qdrant_server.url",
                "must be an http:// or https:// URL (the gRPC port)",
            );
            QdrantServerConfig {
                url: q.url.clone(),
                api_key: q.api_key_env.as_deref().map(|var| {
                    secret_from_env(&mut e, "vector.qdrant_server.api_key_env".into(), var)
                }),
                collection: q
                    .collection
                    .clone()
                    .unwrap_or_else(|| format!("cellnet-{}", self.id)),
            }
        });
        e.check(
            self.limits.max_query_chars >= 1,
            "limits.max_query_chars",
            "must be at least 1",
        );
        e.check(
            !self.providers.is_empty(),
            "providers",
            "must list at least one provider",
        );
        let mut providers = Vec::new();
        for (i, p) in self.providers.into_iter().enumerate() {
            providers.push(validate_provider(&format!("providers[{i}]"), p, &mut e));
        }
        let embedding_remote = self
            .embedding
            .remote
            .map(|p| validate_provider("embedding.remote", p, &mut e));
        for (model, price) in &self.prices {
            e.check(
                price.input_per_million >= 0.0
                    && price.output_per_million >= 0.0
                    && price.input_per_million.is_finite()
                    && price.output_per_million.is_finite(),
                format!("prices.{model}"),
                "prices must be finite and not negative",
            );
        }
        let workers =
            common::workers::count_from_config(self.workers.or(Some(base.workers)), &mut e);
        let telemetry = self.telemetry.validate("telemetry", &mut e);
        let mut names: Vec<&str> = providers.iter().map(ProviderConfig::name).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            e.push("providers", format!("two providers are named {:?}", w[0]));
        }
        let quality_check = self.quality_check.and_then(|q| {
            e.check(
                (0.0..=1.0).contains(&q.sample),
                "quality_check.sample",
                "must be between 0 and 1",
            );
            e.check(
                q.max_in_flight >= 1,
                "quality_check.max_in_flight",
                "must be at least 1",
            );
            let provider = providers.iter().position(|p| p.name() == q.provider);
            if provider.is_none() {
                e.push(
                    "quality_check.provider",
                    format!("names no configured provider: {:?}", q.provider),
                );
            }
            Some(QualityCheckConfig {
                sample: q.sample,
                provider: provider?,
                max_in_flight: q.max_in_flight,
            })
        });
        e.finish(Config {
            id: self.id,
            region: self.region,
            template: self.template,
            listen,
            advertise: self.advertise,
            data_dir: self.data_dir,
            model_dir: self.model_dir.unwrap_or_else(default_model_dir),
            etcd,
            keys,
            redis,
            redis_timeout: self.redis.timeout,
            cache_threshold: self.cache.threshold,
            cache_ttl: self.cache.ttl,
            cache_stale_grace: self.cache.stale_grace,
            cache_max_entries_per_tenant: self
                .cache
                .max_entries_per_tenant
                .unwrap_or(base.cache.max_entries_per_tenant),
            cache_memory_budget_bytes: self
                .cache
                .memory_budget_bytes
                .unwrap_or(base.cache.memory_budget_bytes),
            retrieval: RetrievalConfig {
                default_top_k: self.retrieval.default_top_k,
                max_top_k: self.retrieval.max_top_k,
                score_floor: self.retrieval.score_floor,
                prompt_token_budget: self.retrieval.prompt_token_budget,
            },
            limits: Limits {
                max_body_bytes: self.limits.max_body_bytes,
                max_documents: self.limits.max_documents,
                max_query_chars: self.limits.max_query_chars,
                max_concurrent_requests,
                max_async_documents: self.limits.max_async_documents,
            },
            vector: index_settings(&vector),
            qdrant_server,
            ingest_claim_idle: self.ingest.claim_idle,
            embedding_lru_capacity: self
                .embedding
                .lru_capacity
                .unwrap_or(base.embedding.lru_capacity),
            embedding_max_batch,
            embedding_remote,
            providers,
            prices: self.prices,
            hedging: self.hedging,
            quality_check,
            workers,
            telemetry,
        })
    }
}

fn validate_provider(path: &str, p: RawProvider, e: &mut ConfigErrors) -> ProviderConfig {
    match p {
        RawProvider::AzureOpenai {
            name,
            region,
            endpoint,
            deployment,
            api_version,
            api_key_env,
            entra_token_command,
            entra_token_env,
            timeout,
        } => {
            let path = path.to_owned();
            check_common(e, &path, &name, &region, ("endpoint", &endpoint), timeout);
            e.check(
                !deployment.is_empty(),
                format!("{path}.deployment"),
                "must not be empty",
            );
            let credential = match (api_key_env, entra_token_command, entra_token_env) {
                (Some(var), None, None) => {
                    AzureCredential::ApiKey(secret_from_env(e, format!("{path}.api_key_env"), &var))
                }
                (None, Some(command), None) => {
                    e.check(
                        !command.trim().is_empty(),
                        format!("{path}.entra_token_command"),
                        "must not be empty",
                    );
                    AzureCredential::EntraTokenCommand(command)
                }
                (None, None, Some(var)) => AzureCredential::EntraToken(secret_from_env(
                    e,
                    format!("{path}.entra_token_env"),
                    &var,
                )),
                _ => {
                    e.push(
                        &path,
                        "set exactly one of api_key_env, entra_token_command, entra_token_env",
                    );
                    AzureCredential::ApiKey(Secret::new(""))
                }
            };
            ProviderConfig::AzureOpenai {
                name,
                region,
                endpoint,
                deployment,
                api_version: api_version
                    .unwrap_or_else(|| crate::llm::azure::DEFAULT_API_VERSION.to_owned()),
                credential,
                timeout,
            }
        }
        RawProvider::VertexAi {
            name,
            region,
            project,
            location,
            model,
            endpoint,
            auth,
            timeout,
        } => {
            let path = path.to_owned();
            let endpoint =
                endpoint.unwrap_or_else(|| crate::llm::vertex::default_endpoint(&location));
            check_common(e, &path, &name, &region, ("endpoint", &endpoint), timeout);
            for (field, value) in [
                ("project", &project),
                ("location", &location),
                ("model", &model),
            ] {
                e.check(
                    !value.is_empty()
                        && value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)),
                    format!("{path}.{field}"),
                    "must be a non-empty name of letters, digits, '-', '_', '.' or '@'",
                );
            }
            let auth_path = format!("{path}.auth");
            let credential = match (
                auth.service_account_key_file,
                auth.token_command,
                auth.access_token_env,
            ) {
                (Some(file), None, None) => {
                    let json = std::fs::read_to_string(&file).unwrap_or_else(|err| {
                        e.push(
                            format!("{auth_path}.service_account_key_file"),
                            format!("cannot read {}: {err}", file.display()),
                        );
                        String::new()
                    });
                    if !json.is_empty()
                        && let Err(problem) = crate::llm::oauth::TokenSource::service_account(&json)
                    {
                        e.push(
                            format!("{auth_path}.service_account_key_file"),
                            format!("{}: {problem}", file.display()),
                        );
                    }
                    GoogleCredential::ServiceAccountKey(Secret::new(json))
                }
                (None, Some(command), None) => {
                    e.check(
                        !command.trim().is_empty(),
                        format!("{auth_path}.token_command"),
                        "must not be empty",
                    );
                    GoogleCredential::TokenCommand(command)
                }
                (None, None, Some(var)) => GoogleCredential::AccessToken(secret_from_env(
                    e,
                    format!("{auth_path}.access_token_env"),
                    &var,
                )),
                _ => {
                    e.push(
                        &auth_path,
                        "set exactly one of service_account_key_file, token_command, access_token_env",
                    );
                    GoogleCredential::TokenCommand(String::new())
                }
            };
            ProviderConfig::VertexAi {
                name,
                region,
                endpoint,
                project,
                location,
                model,
                credential,
                timeout,
            }
        }
        RawProvider::OpenaiCompatible {
            name,
            region,
            base_url,
            model,
            api_key_env,
            timeout,
        } => {
            let path = path.to_owned();
            check_common(e, &path, &name, &region, ("base_url", &base_url), timeout);
            e.check(
                !model.is_empty(),
                format!("{path}.model"),
                "must not be empty",
            );
            let api_key =
                api_key_env.map(|var| secret_from_env(e, format!("{path}.api_key_env"), &var));
            ProviderConfig::OpenaiCompatible {
                name,
                region,
                base_url,
                model,
                api_key,
                timeout,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field() {
        let yaml = r#"
id: ""
region: r1
listen: nope
data_dir: /tmp/x
etcd: { endpoints: ["localhost:2379"] }
redis: { url: "http://x" }
cache: { threshold: 1.5 }
providers: []
workers: 0
"#;
        let raw: RawConfig = common::config::parse_yaml(yaml).unwrap();
        let err = raw.validate().unwrap_err().to_string();
        for field in [
            "id ",
            "listen ",
            "etcd.endpoints[0]",
            "redis.url",
            "cache.threshold",
            "providers ",
            "workers ",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn the_quality_check_names_a_configured_provider() {
        let config = load(&minimal("quality_check: { sample: 0.25, provider: p }\n")).unwrap();
        assert_eq!(
            config.quality_check,
            Some(QualityCheckConfig {
                sample: 0.25,
                provider: 0,
                max_in_flight: 16
            })
        );
        assert_eq!(load(&minimal("")).unwrap().quality_check, None);
        let err = load(&minimal(
            "quality_check: { sample: 1.5, provider: judge, max_in_flight: 0 }\n",
        ))
        .unwrap_err()
        .to_string();
        for problem in [
            "quality_check.sample must be between 0 and 1",
            "quality_check.max_in_flight must be at least 1",
            "quality_check.provider names no configured provider: \"judge\"",
        ] {
            assert!(err.contains(problem), "{problem} missing from: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let yaml = "id: a\nregion: r\nlisten: 127.0.0.1:0\ndata_dir: /x\netcd: {endpoints: [http://a:1]}\nredis: {url: redis://a}\nproviders: []\ncahce: {}\n";
        let err = common::config::parse_yaml::<RawConfig>(yaml).unwrap_err();
        assert!(err.contains("cahce"), "{err}");
    }

    #[test]
    fn provider_mistakes_name_their_fields() {
        let yaml = r#"
id: a
region: r1
listen: 127.0.0.1:0
data_dir: /tmp/x
etcd: { endpoints: ["http://127.0.0.1:2379"] }
redis: { url: "redis://127.0.0.1:6379" }
providers:
  - { kind: vertex_ai, name: v, region: us-central1, project: "my project", location: us-central1,
      model: gemini-2.0-flash, auth: { token_command: "gcloud auth print-access-token", access_token_env: X } }
  - { kind: vertex_ai, name: w, region: us-central1, project: p, location: us-central1,
      model: gemini-2.0-flash, auth: { service_account_key_file: /nonexistent/key.json } }
  - { kind: openai_compatible, name: v, region: local, base_url: "localhost:8000/v1", model: llama }
"#;
        let raw: RawConfig = common::config::parse_yaml(yaml).unwrap();
        let err = raw.validate().unwrap_err().to_string();
        for expected in [
            "providers[0].project",
            "providers[0].auth set exactly one of",
            "providers[1].auth.service_account_key_file cannot read /nonexistent/key.json",
            "providers[2].base_url must be an http(s) URL",
            "providers two providers are named \"v\"",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from: {err}");
        }
    }

    fn minimal(extra: &str) -> String {
        format!(
            "id: a\nregion: r1\nlisten: 127.0.0.1:0\ndata_dir: /tmp/x\n\
             etcd: {{ endpoints: [\"http://127.0.0.1:2379\"] }}\n\
             redis: {{ url: \"redis://127.0.0.1:6379\" }}\n\
             providers: [{{ kind: openai_compatible, name: p, region: r1, base_url: \"http://x/v1\", model: m }}]\n{extra}"
        )
    }

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        common::config::parse_yaml::<RawConfig>(yaml)
            .map_err(|message| ConfigError::Parse {
                path: "cell.yaml".into(),
                message,
            })?
            .validate()
    }

    #[test]
    fn a_template_fills_what_the_config_leaves_out_and_the_config_overrides_it() {
        let standard = load(&minimal("")).unwrap();
        assert_eq!(standard.template, "standard");
        assert!(!standard.vector.scalar_quantization);
        assert_eq!(standard.workers, 2);
        assert_eq!(standard.embedding_max_batch, 32);

        let large = load(&minimal(
            "template: large\nvector: { hnsw_ef: 64 }\ncache: { memory_budget_bytes: 1048576 }\n",
        ))
        .unwrap();
        assert!(large.vector.scalar_quantization && large.vector.vectors_on_disk);
        assert_eq!(large.vector.hnsw_ef_construct, 128, "from the template");
        assert_eq!(large.vector.hnsw_ef, 64, "overridden");
        assert_eq!(large.cache_memory_budget_bytes, 1 << 20, "overridden");
        assert_eq!(
            large.cache_max_entries_per_tenant, 200_000,
            "from the template"
        );
        assert_eq!(large.limits.max_concurrent_requests, 1024);
        assert_eq!(large.workers, 4);

        let small = load(&minimal("template: small\nworkers: 3\n")).unwrap();
        assert_eq!(small.vector.indexing_threshold_kb, 50_000);
        assert_eq!(small.embedding_max_batch, 16);
        assert_eq!(small.workers, 3, "overridden");
    }

    #[test]
    fn template_mistakes_name_their_path() {
        let err = load(&minimal("template: huge\n")).unwrap_err().to_string();
        assert!(
            err.contains("template ") && err.contains("\"huge\" is not a cell template"),
            "{err}"
        );

        let err = load(&minimal(
            "template: large\nvector: { hnsw_m: 2 }\nembedding: { max_batch: 0 }\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("vector.hnsw_m must be between 4 and 128"),
            "{err}"
        );
        assert!(
            err.contains("embedding.max_batch must be between 1 and 256"),
            "{err}"
        );

        let err = load(&minimal("vector: { hnsw_mm: 8 }\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vector.hnsw_mm"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("custom.yaml");
        std::fs::write(
            &file,
            common::template::SHIPPED[1]
                .1
                .replace("workers: 2", "workers: 0"),
        )
        .unwrap();
        let err = load(&minimal(&format!("template: {}\n", file.display())))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("custom.yaml: workers must be between 1"),
            "{err}"
        );
    }
}
