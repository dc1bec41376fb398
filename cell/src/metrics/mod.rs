//! The cell's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub mod quality;

pub use quality::{CacheTier, QualityMetrics};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// hit | miss | bypass
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantTokenLabels {
    pub tenant: String,
    pub model: String,
    /// prompt | completion
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
    pub cell: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
    pub outcome: &'static str,
}

pub struct CellMetrics {
    pub queries: Family<CacheLabels, Counter>,
    pub stage_seconds: Family<StageLabels, Histogram>,
    pub request_seconds: Family<RouteLabels, Histogram>,
    pub provider_calls: Family<ProviderLabels, Counter>,
    pub cache_errors: Counter,
    pub cache_evictions: Counter,
    pub coalesced: Counter,
    pub cache_similarity: Histogram,
    pub guard_rejections: Family<ReasonLabels, Counter>,
    pub documents_ingested: Counter,
    pub chunks_ingested: Counter,
    pub ingest_jobs_completed: Counter,
    pub ingest_job_errors: Counter,
    pub tenant_tokens: Family<TenantTokenLabels, Counter>,
    pub tenant_cost_usd: Family<TenantLabels, Counter<f64, AtomicU64>>,
    pub hedges: Counter,
    pub low_groundedness: Counter,
    pub intents: Family<ReasonLabels, Counter>,
    pub quality: QualityMetrics,
}

impl CellMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        common::telemetry::register_metrics(registry);
        let m = Self {
            queries: Family::default(),
            stage_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.5, 14))
            }),
            request_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            provider_calls: Family::default(),
            cache_errors: Counter::default(),
            cache_evictions: Counter::default(),
            coalesced: Counter::default(),
            cache_similarity: Histogram::new([
                0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 1.0,
            ]),
            guard_rejections: Family::default(),
            documents_ingested: Counter::default(),
            chunks_ingested: Counter::default(),
            ingest_jobs_completed: Counter::default(),
            ingest_job_errors: Counter::default(),
            tenant_tokens: Family::default(),
            tenant_cost_usd: Family::default(),
            hedges: Counter::default(),
            low_groundedness: Counter::default(),
            intents: Family::default(),
            quality: QualityMetrics::register(registry),
        };
        registry.register(
            "cellnet_intents_answered_directly",
            "Messages answered without retrieval, by intent",
            m.intents.clone(),
        );
        registry.register(
            "cellnet_low_groundedness_answers",
            "Fresh answers below the groundedness threshold (flagged, not cached)",
            m.low_groundedness.clone(),
        );
        registry.register(
            "cellnet_provider_hedges",
            "Second provider asked because the first was slower than its p95",
            m.hedges.clone(),
        );
        registry.register(
            "cellnet_tenant_tokens",
            "LLM tokens spent on fresh answers and their quality checks, per tenant, model and kind",
            m.tenant_tokens.clone(),
        );
        registry.register(
            "cellnet_tenant_cost_usd",
            "Cost of fresh answers and their quality checks in USD at the configured prices, per tenant and cell",
            m.tenant_cost_usd.clone(),
        );
        registry.register(
            "cellnet_queries",
            "Queries answered, by semantic-cache outcome",
            m.queries.clone(),
        );
        registry.register(
            "cellnet_stage_seconds",
            "Time spent in each pipeline stage",
            m.stage_seconds.clone(),
        );
        registry.register(
            "cellnet_request_seconds",
            "Tenant requests the cell served, by route: time until the response's headers",
            m.request_seconds.clone(),
        );
        registry.register(
            "cellnet_provider_calls",
            "LLM provider calls by provider-region and outcome",
            m.provider_calls.clone(),
        );
        registry.register(
            "cellnet_cache_errors",
            "Cache operations that failed or timed out and were bypassed",
            m.cache_errors.clone(),
        );
        registry.register(
            "cellnet_cache_coalesced",
            "Cache misses answered by waiting for an identical question already being answered",
            m.coalesced.clone(),
        );
        registry.register(
            "cellnet_cache_evictions",
            "Cache entries evicted for a tenant's cap or the cell's memory budget",
            m.cache_evictions.clone(),
        );
        registry.register(
            "cellnet_cache_similarity",
            "Similarity of the closest cached question at each lookup",
            m.cache_similarity.clone(),
        );
        registry.register(
            "cellnet_cache_guard_rejections",
            "Cache candidates above the threshold refused by the verification guard, by reason",
            m.guard_rejections.clone(),
        );
        registry.register(
            "cellnet_documents_ingested",
            "Documents written durably to the vector shard",
            m.documents_ingested.clone(),
        );
        registry.register(
            "cellnet_chunks_ingested",
            "Chunks written durably to the vector shard",
            m.chunks_ingested.clone(),
        );
        registry.register(
            "cellnet_ingest_jobs_completed",
            "Asynchronous ingestion jobs completed",
            m.ingest_jobs_completed.clone(),
        );
        registry.register(
            "cellnet_ingest_worker_errors",
            "Ingestion worker rounds that failed and were retried (Redis or vector shard unavailable)",
            m.ingest_job_errors.clone(),
        );
        m
    }

    /// Counts an LLM call's tokens and, where its model has a `price`, its
    /// cost against `tenant`; returns the cost.
    pub fn account(
        &self,
        tenant: &str,
        cell: &str,
        completion: &crate::llm::Completion,
        price: Option<&crate::config::Price>,
    ) -> Option<f64> {
        for (kind, tokens) in [
            ("prompt", completion.usage.prompt_tokens),
            ("completion", completion.usage.completion_tokens),
        ] {
            self.tenant_tokens
                .get_or_create(&TenantTokenLabels {
                    tenant: tenant.to_owned(),
                    model: completion.model.clone(),
                    kind,
                })
                .inc_by(u64::from(tokens));
        }
        let cost = price?.cost(&completion.usage);
        self.tenant_cost_usd
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
                cell: cell.to_owned(),
            })
            .inc_by(cost);
        Some(cost)
    }

    pub fn observe_request(&self, route: String, started: std::time::Instant) {
        self.request_seconds
            .get_or_create(&RouteLabels { route })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn observe_stage(&self, stage: &'static str, started: std::time::Instant) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(started.elapsed().as_secs_f64());
    }
}
