//! One query through the cell: preprocess → embed → semantic cache →
//! retrieve → prompt → LLM → postprocess → cache store. Each stage runs in its
//! own `tracing` span carrying the tenant, cell, provider and region.

mod attempt;
pub mod coalesce;
pub mod grounding;
pub mod intent;
pub mod prompt;
pub mod quality_check;
mod spans;

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{Instrument, info_span};

use crate::cache::{CachedAnswer, Citation, Entry, Lookup, SemanticCache, Usage};
use crate::config::RetrievalConfig;
use crate::embed::QueryEmbedder;
use crate::error::CellError;
use crate::llm::AnyProvider;
use crate::llm::resilience::{AttemptError, Breaker, RetryPolicy, call_with_failover};
use crate::metrics::{CacheLabels, CacheTier, CellMetrics, ReasonLabels};
use crate::vector::fusion::collapse_near_duplicates;
use crate::vector::{Hit, MetadataFilter, SearchQuery, VectorStore};

pub use spans::StreamSpans;

/// What the pipeline answers when retrieval finds nothing relevant.
pub const NO_ANSWER: &str = "I don't know: none of your documents answers this question.";

/// Completion budget for one answer.
const MAX_ANSWER_TOKENS: u32 = 512;

/// `POST /v1/query` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub query: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Conditions on document metadata (see [`MetadataFilter`]). A filtered
    /// question bypasses the semantic cache: its answer depends on the filter.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
}

/// `POST /v1/query` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueryResponse {
    pub answer: String,
    pub citations: Vec<Citation>,
    /// `hit` or `miss`.
    pub cache: String,
    /// Similarity of the cached question to this one, on hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// Age of the cached answer in milliseconds, on hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_age_ms: Option<u64>,
    /// The fallback that produced this answer: `next_region` or
    /// `model_cascade` when a provider other than the first answered,
    /// `stale_cache` or `degraded` when none could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    /// What this answer cost now in USD: 0 for answers from the cache or a
    /// fallback; absent when the model has no configured price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// How well the answer is supported by the retrieved passages (0–1);
    /// absent when there was nothing to answer from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groundedness: Option<f32>,
    /// Set when groundedness is below the threshold: treat with care.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low_groundedness: bool,
    /// The answer's sentences, each with the passages supporting it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sentences: Vec<grounding::SentenceSupport>,
    /// What the message was taken for: `question`, `small_talk`,
    /// `out_of_scope` or `prompt_injection` (the last three get a fixed
    /// answer; nothing is retrieved and no LLM is called).
    pub intent: String,
    pub cell: String,
}

impl QueryResponse {
    /// LLM tokens this answer cost now: none for cache hits and fallbacks.
    pub fn tokens_spent(&self) -> u32 {
        if self.cache == "hit" || self.fallback.is_some() {
            0
        } else {
            self.usage.total_tokens
        }
    }
}

/// A provider other than the first configured one answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderFallback {
    NextRegion,
    ModelCascade,
}

impl ProviderFallback {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderFallback::NextRegion => "next_region",
            ProviderFallback::ModelCascade => "model_cascade",
        }
    }
}

trait AllowsFallback {
    fn allows(&self, kind: ProviderFallback) -> bool;
}

impl AllowsFallback for control_plane::model::Fallbacks {
    fn allows(&self, kind: ProviderFallback) -> bool {
        match kind {
            ProviderFallback::NextRegion => self.next_region,
            ProviderFallback::ModelCascade => self.model_cascade,
        }
    }
}

/// A streamed query's answer: known whole, or streaming from a provider.
pub enum Streamed {
    Whole(QueryResponse),
    Live(LiveAnswer),
}

/// A provider's stream after its first text.
pub struct LiveAnswer {
    pub ask: Ask,
    /// The provider answering.
    pub index: usize,
    pub first: String,
    pub rest: crate::llm::stream::TokenStream,
    /// Open until the stream ends: the answer's spans cover all of it.
    pub spans: StreamSpans,
}

/// Where `prepare` left a question.
enum Prepared {
    Answered(QueryResponse),
    Ask(Ask),
}

/// A question that needs an LLM, with what `finish` needs afterwards.
pub struct Ask {
    question: String,
    embedding: Vec<f32>,
    version: Option<u64>,
    hits: Vec<Hit>,
    request: crate::llm::ChatRequest,
    /// Held until the answer is stored, when this request leads its question.
    leading: Option<coalesce::LeaderGuard>,
}

/// Who is asking, as established by the router.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: String,
    pub request_id: String,
    /// The tenant's own cache threshold, if it overrides the cell's.
    pub cache_threshold: Option<f32>,
    /// Which fallbacks may answer for this tenant.
    pub fallbacks: control_plane::model::Fallbacks,
    /// Fuse BM25 with vector retrieval for this tenant.
    pub hybrid_retrieval: bool,
}

pub struct Orchestrator {
    pub cell_id: String,
    pub embedder: QueryEmbedder,
    pub shard: Arc<dyn VectorStore>,
    pub cache: SemanticCache,
    pub providers: Vec<AnyProvider>,
    /// One circuit breaker per provider-region, in the same order.
    pub breakers: Vec<Breaker>,
    pub retry: RetryPolicy,
    pub retrieval: RetrievalConfig,
    pub max_query_chars: usize,
    pub metrics: Arc<CellMetrics>,
    /// The control plane's view, for provider-region health and drains.
    pub cluster: Option<control_plane::watch::ClusterWatch>,
    /// What each provider attempt did, reported to the control plane.
    pub provider_stats: Arc<crate::llm::health::ProviderStats>,
    /// USD per million tokens, by model.
    pub prices: Arc<std::collections::HashMap<String, crate::config::Price>>,
    /// Ask the second candidate too when the first is slower than its p95.
    pub hedging: bool,
    /// Identical questions missing the cache at once, answered once.
    pub misses: coalesce::MissCoalescer,
    /// A second model judging a sample of fresh answers, if configured.
    pub quality_check: Option<quality_check::QualityChecker>,
}

impl Orchestrator {
    /// Checks the question and its options, and classifies it.
    fn preprocess(
        &self,
        req: &QueryRequest,
    ) -> Result<(String, usize, MetadataFilter, intent::Intent), CellError> {
        let question = req.query.trim().to_owned();
        if question.is_empty() {
            return Err(CellError::BadRequest("query must not be empty".into()));
        }
        if question.chars().count() > self.max_query_chars {
            return Err(CellError::BadRequest(format!(
                "query is longer than {} characters",
                self.max_query_chars
            )));
        }
        let top_k = req.top_k.unwrap_or(self.retrieval.default_top_k);
        if top_k == 0 || top_k > self.retrieval.max_top_k {
            return Err(CellError::BadRequest(format!(
                "top_k must be between 1 and {}",
                self.retrieval.max_top_k
            )));
        }
        let filter = match &req.filter {
            Some(value) => MetadataFilter::parse(value).map_err(CellError::BadRequest)?,
            None => MetadataFilter::default(),
        };
        let intent = intent::detect(&question);
        Ok((question, top_k, filter, intent))
    }

    fn threshold_for(&self, ctx: &RequestContext) -> f32 {
        ctx.cache_threshold
            .unwrap_or(self.cache.settings().threshold)
    }

    pub async fn query(
        &self,
        ctx: &RequestContext,
        req: QueryRequest,
    ) -> Result<QueryResponse, CellError> {
        let span = spans::query(ctx, &self.cell_id, false);
        let answered = self.run(ctx, req).instrument(span.clone()).await;
        match &answered {
            Ok(answer) => self.answered(ctx, &span, answer),
            Err(e) => spans::record_error(&span, e),
        }
        answered
    }

    async fn run(
        &self,
        ctx: &RequestContext,
        req: QueryRequest,
    ) -> Result<QueryResponse, CellError> {
        let ask = match self.prepare(ctx, req).await? {
            Prepared::Answered(answer) => return Ok(answer),
            Prepared::Ask(ask) => ask,
        };
        let started = Instant::now();
        let (index, completion) = match self.call_providers(ctx, &ask.request).await {
            Ok(done) => done,
            Err(CellError::AllProvidersFailed(errors)) => {
                self.metrics.observe_stage("llm", started);
                return self
                    .fallback(ctx, &ask.question, &ask.embedding, &ask.hits, &errors)
                    .await;
            }
            Err(other) => return Err(other),
        };
        self.metrics.observe_stage("llm", started);
        Ok(self.finish(ctx, ask, index, completion).await)
    }

    /// Everything before the LLM: preprocess, the cache tiers, embedding and
    /// retrieval. Either the answer is already known (a cache hit, nothing
    /// relevant) or the question goes to a provider.
    async fn prepare(
        &self,
        ctx: &RequestContext,
        req: QueryRequest,
    ) -> Result<Prepared, CellError> {
        // Preprocess.
        let started = Instant::now();
        let preprocess =
            info_span!("preprocess", cellnet.tenant = %ctx.tenant, cellnet.cell = %self.cell_id);
        let (question, top_k, filter, intent) = preprocess.in_scope(|| self.preprocess(&req))?;
        self.metrics.observe_stage("preprocess", started);
        if let Some(answer) = intent.canned_answer() {
            tracing::info!(intent = intent.as_str(), "answered without retrieval");
            self.metrics
                .intents
                .get_or_create(&ReasonLabels {
                    reason: intent.as_str(),
                })
                .inc();
            return Ok(Prepared::Answered(QueryResponse {
                answer: answer.to_owned(),
                citations: Vec::new(),
                cache: "miss".into(),
                similarity: None,
                cache_age_ms: None,
                fallback: None,
                provider: None,
                region: None,
                model: None,
                usage: Usage::default(),
                cost_usd: Some(0.0),
                groundedness: None,
                low_groundedness: false,
                sentences: Vec::new(),
                intent: intent.as_str().to_owned(),
                cell: self.cell_id.clone(),
            }));
        }

        // Exact tier, before any embedding: a repeated question costs one
        // Redis round trip.
        let started = Instant::now();
        let cache_span = info_span!(
            "semantic_cache",
            cellnet.tenant = %ctx.tenant,
            cellnet.cell = %self.cell_id,
            cellnet.cache.outcome = tracing::field::Empty,
            cellnet.cache.similarity = tracing::field::Empty,
            cellnet.cache.tier = tracing::field::Empty,
        );
        let lookup = async {
            if filter.is_empty() {
                Some(self.cache.lookup_exact(&ctx.tenant, &question).await)
            } else {
                None
            }
        };
        // `None`: the cache is bypassed, neither read nor written.
        let version = match lookup.instrument(cache_span.clone()).await {
            None => None,
            Some(Ok((_, Some(entry)))) => {
                return Ok(Prepared::Answered(self.hit(
                    &ctx.tenant,
                    entry,
                    (CacheTier::Exact, 1.0),
                    started,
                    &cache_span,
                )));
            }
            Some(Ok((version, None))) => Some(version),
            Some(Err(e)) => {
                self.metrics.cache_errors.inc();
                tracing::warn!(parent: &cache_span, error = %e, "cache unavailable, bypassing");
                None
            }
        };
        // The same question missing at the same version: one request answers
        // it, the others wait for it and find its answer in the cache. If
        // documents changed meanwhile, the waiting ones join the flight for
        // the new version; if the leader stored nothing, they go on alone.
        let mut version = version;
        let mut leading = None;
        while let Some(followed) = version {
            let follower = match self.misses.join(&ctx.tenant, &question, followed) {
                coalesce::Role::Leader(guard) => {
                    leading = Some(guard);
                    break;
                }
                coalesce::Role::Follower(follower) => follower,
            };
            follower.wait().instrument(cache_span.clone()).await;
            match self
                .cache
                .lookup_exact(&ctx.tenant, &question)
                .instrument(cache_span.clone())
                .await
            {
                Ok((_, Some(entry))) => {
                    self.metrics.coalesced.inc();
                    return Ok(Prepared::Answered(self.hit(
                        &ctx.tenant,
                        entry,
                        (CacheTier::Exact, 1.0),
                        started,
                        &cache_span,
                    )));
                }
                Ok((now, None)) if now != followed => version = Some(now),
                Ok((_, None)) => break,
                Err(e) => {
                    self.metrics.cache_errors.inc();
                    tracing::warn!(parent: &cache_span, error = %e, "cache unavailable, bypassing");
                    version = None;
                }
            }
        }
        let exact_elapsed = started.elapsed();

        // Embed.
        let started = Instant::now();
        let embedding = self
            .embedder
            .embed(&question)
            .instrument(
                info_span!("embed", cellnet.tenant = %ctx.tenant, cellnet.cell = %self.cell_id),
            )
            .await?;
        self.metrics.observe_stage("embed", started);

        // Vector tier, with the guard.
        let started = Instant::now() - exact_elapsed;
        if let Some(version) = version {
            match self
                .cache
                .lookup_similar(
                    &ctx.tenant,
                    &question,
                    &embedding,
                    version,
                    self.threshold_for(ctx),
                )
                .instrument(cache_span.clone())
                .await
            {
                Ok(Lookup::Hit {
                    entry, similarity, ..
                }) => {
                    return Ok(Prepared::Answered(self.hit(
                        &ctx.tenant,
                        entry,
                        (CacheTier::Semantic, similarity),
                        started,
                        &cache_span,
                    )));
                }
                Ok(Lookup::Miss {
                    best_similarity,
                    rejected,
                }) => {
                    if let Some(s) = best_similarity {
                        self.metrics.cache_similarity.observe(f64::from(s));
                        cache_span.record("cellnet.cache.similarity", f64::from(s));
                    }
                    for reason in rejected {
                        self.metrics
                            .guard_rejections
                            .get_or_create(&ReasonLabels {
                                reason: reason.as_str(),
                            })
                            .inc();
                    }
                    cache_span.record("cellnet.cache.outcome", "miss");
                }
                Err(e) => {
                    self.metrics.cache_errors.inc();
                    tracing::warn!(parent: &cache_span, error = %e, "cache lookup failed, bypassing");
                    cache_span.record("cellnet.cache.outcome", "bypass");
                }
            }
        }
        self.metrics.observe_stage("semantic_cache", started);
        let outcome = if version.is_some() { "miss" } else { "bypass" };
        self.metrics
            .queries
            .get_or_create(&CacheLabels { outcome })
            .inc();

        // Retrieve: deeper than top_k, so that near-duplicates can be
        // dropped and top_k distinct passages remain.
        let started = Instant::now();
        let hits = self
            .shard
            .search(
                ctx.tenant.clone(),
                SearchQuery {
                    vector: embedding.clone(),
                    text: ctx.hybrid_retrieval.then(|| question.clone()),
                    limit: (top_k * 2).min(self.retrieval.max_top_k * 2),
                    score_floor: Some(self.retrieval.score_floor),
                    filter,
                    exact: false,
                },
            )
            .instrument(info_span!(
                "retrieve",
                cellnet.tenant = %ctx.tenant,
                cellnet.cell = %self.cell_id,
                top_k,
                hybrid = ctx.hybrid_retrieval
            ))
            .await?;
        let hits = collapse_near_duplicates(hits, top_k);
        self.metrics.observe_stage("retrieve", started);
        if hits.is_empty() {
            return Ok(Prepared::Answered(QueryResponse {
                answer: NO_ANSWER.into(),
                citations: Vec::new(),
                cache: "miss".into(),
                similarity: None,
                cache_age_ms: None,
                fallback: None,
                provider: None,
                region: None,
                model: None,
                usage: Usage::default(),
                cost_usd: Some(0.0),
                groundedness: None,
                low_groundedness: false,
                sentences: Vec::new(),
                intent: "question".into(),
                cell: self.cell_id.clone(),
            }));
        }

        let (request, quoted) = info_span!("prompt", cellnet.tenant = %ctx.tenant, cellnet.cell = %self.cell_id, passages = hits.len())
            .in_scope(|| {
                let count = |text: &str| self.embedder.count_tokens(text);
                prompt::build(
                    &question,
                    &hits,
                    MAX_ANSWER_TOKENS,
                    self.retrieval.prompt_token_budget,
                    &count,
                )
            });
        let mut hits = hits;
        hits.truncate(quoted);
        Ok(Prepared::Ask(Ask {
            question,
            embedding,
            version,
            hits,
            request,
            leading,
        }))
    }

    /// After the LLM: citations, accounting, the cache store, the answer.
    async fn finish(
        &self,
        ctx: &RequestContext,
        ask: Ask,
        index: usize,
        completion: crate::llm::Completion,
    ) -> QueryResponse {
        let Ask {
            question,
            embedding,
            version,
            hits,
            leading,
            ..
        } = ask;
        let provider = self.providers[index].clone();
        let fallback = self.fallback_kind(index).map(|k| k.as_str().to_owned());
        let cost_usd = self.account(ctx, &completion);

        // Postprocess: keep only citations of passages the answer used.
        let started = Instant::now();
        let (citations, grounded) =
            info_span!("postprocess", cellnet.tenant = %ctx.tenant, cellnet.cell = %self.cell_id)
                .in_scope(|| {
                    (
                        citations_for(&completion.content, &hits),
                        grounding::assess(&completion.content, &hits),
                    )
                });
        let answer = CachedAnswer {
            answer: completion.content,
            citations,
            provider: provider.name().to_owned(),
            region: provider.region().to_owned(),
            model: completion.model,
            usage: completion.usage,
            groundedness: Some(grounded.groundedness),
            sentences: grounded.sentences,
        };
        let low_groundedness = grounded.groundedness < grounding::GROUNDED;
        if low_groundedness {
            self.metrics.low_groundedness.inc();
        }
        self.metrics.observe_stage("postprocess", started);
        self.check_quality(ctx, &answer.answer, &hits);

        // Store only answers grounded in their passages.
        if let Some(version) = version
            && !answer.citations.is_empty()
            && !low_groundedness
        {
            let started = Instant::now();
            let entry = Entry {
                query: question.clone(),
                answer: answer.clone(),
                created_at_ms: control_plane::model::now_ms(),
                knowledge_version: version,
            };
            if let Err(e) = self
                .cache
                .store(&ctx.tenant, &question, &embedding, entry)
                .instrument(info_span!("cache_store", cellnet.tenant = %ctx.tenant, cellnet.cell = %self.cell_id))
                .await
            {
                self.metrics.cache_errors.inc();
                tracing::warn!(error = %e, "cache store failed");
            }
            self.metrics.observe_stage("cache_store", started);
        }
        // Stored (or not to be): the requests waiting on this question go on.
        drop(leading);
        QueryResponse {
            answer: answer.answer,
            citations: answer.citations,
            cache: "miss".into(),
            similarity: None,
            cache_age_ms: None,
            fallback,
            provider: Some(answer.provider),
            region: Some(answer.region),
            model: Some(answer.model),
            usage: answer.usage,
            cost_usd,
            groundedness: answer.groundedness,
            low_groundedness,
            sentences: answer.sentences,
            intent: "question".into(),
            cell: self.cell_id.clone(),
        }
    }

    /// The providers to try for this request, in order: by published health
    /// (with a probe now and then), without the fallbacks the tenant's plan
    /// does not allow.
    fn candidate_order(&self, ctx: &RequestContext) -> Vec<usize> {
        let mut order = match &self.cluster {
            Some(cluster) => self
                .provider_stats
                .order_with_probe(&self.providers, &cluster.snapshot()),
            None => (0..self.providers.len()).collect(),
        };
        order.retain(|&i| {
            self.fallback_kind(i)
                .is_none_or(|kind| ctx.fallbacks.allows(kind))
        });
        order
    }

    /// A streamed answer: what `prepare` already knows comes whole; otherwise
    /// the providers are tried in order until one sends its first text, and
    /// the rest streams from it. When none does, the fallbacks answer whole.
    pub async fn query_stream(
        &self,
        ctx: &RequestContext,
        req: QueryRequest,
    ) -> Result<Streamed, CellError> {
        let span = spans::query(ctx, &self.cell_id, true);
        let prepared = match self.prepare(ctx, req).instrument(span.clone()).await {
            Ok(p) => p,
            Err(e) => {
                spans::record_error(&span, &e);
                return Err(e);
            }
        };
        let ask = match prepared {
            Prepared::Answered(answer) => {
                self.answered(ctx, &span, &answer);
                return Ok(Streamed::Whole(answer));
            }
            Prepared::Ask(ask) => ask,
        };
        match self
            .open_stream(ctx, &ask.request)
            .instrument(span.clone())
            .await
        {
            Ok((index, first, rest, attempt)) => Ok(Streamed::Live(LiveAnswer {
                ask,
                index,
                first,
                rest,
                spans: StreamSpans {
                    query: span,
                    attempt,
                },
            })),
            Err(errors) => {
                let answered = self
                    .fallback(ctx, &ask.question, &ask.embedding, &ask.hits, &errors)
                    .instrument(span.clone())
                    .await;
                match &answered {
                    Ok(answer) => self.answered(ctx, &span, answer),
                    Err(e) => spans::record_error(&span, e),
                }
                answered.map(Streamed::Whole)
            }
        }
    }

    /// Failover until the first token: a provider counts as answering once
    /// its first text arrives within its timeout.
    async fn open_stream(
        &self,
        ctx: &RequestContext,
        request: &crate::llm::ChatRequest,
    ) -> Result<
        (
            usize,
            String,
            crate::llm::stream::TokenStream,
            tracing::Span,
        ),
        Vec<AttemptError>,
    > {
        use crate::llm::ProviderError;
        use crate::llm::stream::StreamEvent;
        use futures::StreamExt;
        let mut errors = Vec::new();
        for (n, i) in self.candidate_order(ctx).into_iter().enumerate() {
            let provider = &self.providers[i];
            if !self.breakers[i].allow() {
                errors.push(AttemptError::CircuitOpen {
                    provider: provider.name().to_owned(),
                });
                continue;
            }
            let started = Instant::now();
            let attempt = async {
                let mut stream = provider.chat_stream(request, &ctx.request_id).await?;
                match stream.next().await {
                    Some(Ok(StreamEvent::Delta(text))) => Ok((text, stream)),
                    Some(Ok(StreamEvent::Done { .. })) | None => Err(ProviderError::Decode {
                        provider: provider.name().to_owned(),
                        message: "the stream ended before any text".into(),
                    }),
                    Some(Err(e)) => Err(e),
                }
            };
            let span = spans::provider_attempt(ctx, &self.cell_id, provider, n, true);
            let outcome = match tokio::time::timeout(provider.timeout(), attempt)
                .instrument(span.clone())
                .await
            {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Timeout {
                    provider: provider.name().to_owned(),
                    after: provider.timeout(),
                }),
            };
            self.provider_stats.record(
                provider.name(),
                crate::llm::health::AttemptOutcome::of(&outcome, started.elapsed()),
            );
            match outcome {
                Ok((first, rest)) => {
                    self.breakers[i].record(true);
                    return Ok((i, first, rest, span));
                }
                Err(e) => {
                    spans::record_failure(&span, &e);
                    tracing::warn!(parent: &span, provider = provider.name(), error = %e, "stream did not start");
                    self.breakers[i].record(!e.is_retryable());
                    let fatal = !e.is_retryable();
                    errors.push(e.into());
                    if fatal {
                        break;
                    }
                }
            }
        }
        Err(errors)
    }

    /// The end of a streamed answer: the same postprocessing, accounting and
    /// cache store as a whole one. `model` is the one the provider named, if
    /// it named one.
    pub async fn finish_stream(
        &self,
        ctx: &RequestContext,
        ask: Ask,
        index: usize,
        (text, usage, model): (String, Usage, Option<String>),
        spans: &StreamSpans,
    ) -> QueryResponse {
        let completion = crate::llm::Completion {
            content: text,
            model: model.unwrap_or_else(|| self.providers[index].model().to_owned()),
            usage,
        };
        spans::record_completion(&spans.attempt, &completion);
        let answer = self
            .finish(ctx, ask, index, completion)
            .instrument(spans.query.clone())
            .await;
        self.answered(ctx, &spans.query, &answer);
        answer
    }

    /// Which fallback answering from provider `index` is: none for the first
    /// configured provider, another region of its model, or another model.
    fn fallback_kind(&self, index: usize) -> Option<ProviderFallback> {
        let primary = self.providers.first()?;
        match index {
            0 => None,
            i if self.providers[i].model() == primary.model() => Some(ProviderFallback::NextRegion),
            _ => Some(ProviderFallback::ModelCascade),
        }
    }

    /// Counts a fresh answer's tokens and cost against its tenant.
    fn account(&self, ctx: &RequestContext, completion: &crate::llm::Completion) -> Option<f64> {
        self.metrics.account(
            &ctx.tenant,
            &self.cell_id,
            completion,
            self.prices.get(&completion.model),
        )
    }

    /// Records a served answer on its query span and in the quality metrics.
    fn answered(&self, ctx: &RequestContext, span: &tracing::Span, answer: &QueryResponse) {
        spans::record_answer(span, answer);
        self.metrics
            .quality
            .answered(&ctx.tenant, &self.cell_id, answer);
    }

    /// The answer for a cache hit.
    fn hit(
        &self,
        tenant: &str,
        entry: Entry,
        (tier, similarity): (CacheTier, f32),
        started: Instant,
        span: &tracing::Span,
    ) -> QueryResponse {
        self.metrics
            .quality
            .cache_hit(tenant, &self.cell_id, tier, similarity);
        span.record("cellnet.cache.outcome", "hit");
        span.record("cellnet.cache.tier", tier.as_str());
        span.record("cellnet.cache.similarity", f64::from(similarity));
        self.metrics.cache_similarity.observe(f64::from(similarity));
        self.metrics.observe_stage("semantic_cache", started);
        self.metrics
            .queries
            .get_or_create(&CacheLabels { outcome: "hit" })
            .inc();
        let age = control_plane::model::now_ms().saturating_sub(entry.created_at_ms);
        let a = entry.answer;
        QueryResponse {
            answer: a.answer,
            citations: a.citations,
            cache: "hit".into(),
            similarity: Some(similarity),
            cache_age_ms: Some(age),
            fallback: None,
            provider: Some(a.provider),
            region: Some(a.region),
            model: Some(a.model),
            usage: a.usage,
            cost_usd: Some(0.0),
            low_groundedness: a.groundedness.is_some_and(|g| g < grounding::GROUNDED),
            groundedness: a.groundedness,
            sentences: a.sentences,
            intent: "question".into(),
            cell: self.cell_id.clone(),
        }
    }

    /// When every provider failed: the tenant's best older cached answer to
    /// this question (flagged `stale`), else an extractive answer from the
    /// retrieved passages (flagged `degraded`).
    async fn fallback(
        &self,
        ctx: &RequestContext,
        question: &str,
        embedding: &[f32],
        hits: &[Hit],
        errors: &[AttemptError],
    ) -> Result<QueryResponse, CellError> {
        tracing::warn!(
            attempts = errors.len(),
            "every provider failed, falling back"
        );
        let stale = if ctx.fallbacks.stale_cache {
            self.cache
                .stale_candidate(&ctx.tenant, question, embedding, self.threshold_for(ctx))
                .await
        } else {
            Ok(None)
        };
        if let Ok(Some((entry, similarity))) = stale {
            let a = entry.answer;
            return Ok(QueryResponse {
                answer: a.answer,
                citations: a.citations,
                cache: "stale".into(),
                similarity: Some(similarity),
                cache_age_ms: Some(
                    control_plane::model::now_ms().saturating_sub(entry.created_at_ms),
                ),
                fallback: Some("stale_cache".into()),
                provider: Some(a.provider),
                region: Some(a.region),
                model: Some(a.model),
                usage: a.usage,
                cost_usd: Some(0.0),
                low_groundedness: a.groundedness.is_some_and(|g| g < grounding::GROUNDED),
                groundedness: a.groundedness,
                sentences: a.sentences,
                intent: "question".into(),
                cell: self.cell_id.clone(),
            });
        }
        if !ctx.fallbacks.degrade {
            return Err(CellError::AllProvidersFailed(errors.to_vec()));
        }
        let (answer, citations) = match hits.first() {
            Some(top) => (
                format!("{} [1]", extract(&top.text)),
                vec![Citation {
                    document_id: top.document_id.clone(),
                    chunk: top.chunk,
                    score: top.score,
                }],
            ),
            None => (NO_ANSWER.to_owned(), Vec::new()),
        };
        let grounded = (!hits.is_empty()).then(|| grounding::assess(&answer, hits));
        Ok(QueryResponse {
            answer,
            citations,
            cache: "miss".into(),
            similarity: None,
            cache_age_ms: None,
            fallback: Some("degraded".into()),
            provider: None,
            region: None,
            model: None,
            usage: Usage::default(),
            cost_usd: Some(0.0),
            groundedness: grounded.as_ref().map(|g| g.groundedness),
            low_groundedness: grounded
                .as_ref()
                .is_some_and(|g| g.groundedness < grounding::GROUNDED),
            sentences: grounded.map(|g| g.sentences).unwrap_or_default(),
            intent: "question".into(),
            cell: self.cell_id.clone(),
        })
    }

    /// One attempt at provider `index`, traced, counted and measured.
    async fn attempt(
        &self,
        ctx: &RequestContext,
        request: &crate::llm::ChatRequest,
        index: usize,
        attempt: usize,
    ) -> Result<crate::llm::Completion, crate::llm::ProviderError> {
        self.recorder()
            .attempt(&self.providers[index], ctx, request, attempt, None)
            .await
    }

    fn recorder(&self) -> attempt::CallRecorder {
        attempt::CallRecorder {
            metrics: self.metrics.clone(),
            stats: self.provider_stats.clone(),
            cell: self.cell_id.clone(),
        }
    }

    /// Tries the providers in order, moving on only after errors another
    /// provider-region may not have; keeps every attempt's error.
    async fn call_providers(
        &self,
        ctx: &RequestContext,
        request: &crate::llm::ChatRequest,
    ) -> Result<(usize, crate::llm::Completion), CellError> {
        let order = self.candidate_order(ctx);
        let names: Vec<&str> = order.iter().map(|&i| self.providers[i].name()).collect();
        let breakers: Vec<&Breaker> = order.iter().map(|&i| &self.breakers[i]).collect();
        let timeouts: Vec<std::time::Duration> =
            order.iter().map(|&i| self.providers[i].timeout()).collect();
        // Every call is one attempt, retries of the same provider included.
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let next_attempt = || attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let primary = call_with_failover(&names, &breakers, &timeouts, self.retry, |n| {
            self.attempt(ctx, request, order[n], next_attempt())
        });
        // Hedging: if the first candidate has not answered by its observed
        // p95, the second is asked too, and the first success wins.
        let hedge_after = if self.hedging && order.len() > 1 {
            self.provider_stats.p95(self.providers[order[0]].name())
        } else {
            None
        };
        let result = match hedge_after {
            None => primary.await,
            Some(delay) => {
                let second = order[1];
                let hedge = async move {
                    tokio::time::sleep(delay.max(MIN_HEDGE_DELAY)).await;
                    if !self.breakers[second].allow() {
                        return None;
                    }
                    self.metrics.hedges.inc();
                    let outcome = tokio::time::timeout(
                        self.providers[second].timeout(),
                        self.attempt(ctx, request, second, next_attempt()),
                    )
                    .await;
                    let ok = matches!(outcome, Ok(Ok(_)));
                    self.breakers[second].record(ok);
                    match outcome {
                        Ok(Ok(completion)) => Some(Ok((1, completion))),
                        Ok(Err(e)) => Some(Err(vec![AttemptError::from(e)])),
                        Err(_) => None,
                    }
                };
                first_success(primary, hedge).await
            }
        };
        match result {
            Ok((n, completion)) => Ok((order[n], completion)),
            Err(errors) => Err(CellError::AllProvidersFailed(errors)),
        }
    }
}

/// A hedge never fires sooner than this, however fast the provider usually is.
const MIN_HEDGE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// The first success of `primary` and `hedge`; if both fail, the primary's
/// errors (with the hedge's). A hedge that gave up (`None`) leaves the primary.
async fn first_success<T>(
    primary: impl std::future::Future<Output = Result<T, Vec<AttemptError>>>,
    hedge: impl std::future::Future<Output = Option<Result<T, Vec<AttemptError>>>>,
) -> Result<T, Vec<AttemptError>> {
    tokio::pin!(primary);
    tokio::pin!(hedge);
    let mut hedge_errors: Option<Vec<AttemptError>> = None;
    let mut hedge_done = false;
    let mut primary_errors: Option<Vec<AttemptError>> = None;
    loop {
        tokio::select! {
            r = &mut primary, if primary_errors.is_none() => match r {
                Ok(v) => return Ok(v),
                Err(e) if hedge_done => {
                    let mut all = e;
                    all.extend(hedge_errors.take().unwrap_or_default());
                    return Err(all);
                }
                Err(e) => primary_errors = Some(e),
            },
            h = &mut hedge, if !hedge_done => {
                hedge_done = true;
                match h {
                    Some(Ok(v)) => return Ok(v),
                    Some(Err(e)) => hedge_errors = Some(e),
                    None => {}
                }
                if let Some(mut e) = primary_errors.take() {
                    e.extend(hedge_errors.take().unwrap_or_default());
                    return Err(e);
                }
            }
        }
    }
}

/// The opening of a passage, for a degraded answer: its first two sentences.
fn extract(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut end = one_line.len();
    let mut seen = 0;
    for (i, c) in one_line.char_indices() {
        if matches!(c, '.' | '!' | '?') {
            seen += 1;
            if seen == 2 {
                end = i + 1;
                break;
            }
        }
    }
    one_line[..end].to_owned()
}

/// Citations for the passages an answer cites as `[n]`. An answer citing
/// nothing gets none, and is therefore not cached.
fn citations_for(answer: &str, hits: &[Hit]) -> Vec<Citation> {
    let cite = |h: &Hit| Citation {
        document_id: h.document_id.clone(),
        chunk: h.chunk,
        score: h.score,
    };
    let numbers = prompt::cited_numbers(answer);
    if numbers.is_empty() {
        return Vec::new();
    }
    numbers
        .into_iter()
        .filter_map(|n| n.checked_sub(1).and_then(|i| hits.get(i)))
        .map(cite)
        .collect()
}
