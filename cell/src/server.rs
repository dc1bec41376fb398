//! Wires a cell together from its config and runs it: embedder, vector shard,
//! cache, providers, the control-plane watch and lease, and the HTTP server.

use std::sync::Arc;

use anyhow::Context;
use control_plane::model::{CellAlive, CellSpec, Lifecycle, now_ms};
use control_plane::registration::{LeaseSettings, keep_cell_alive, publish_spec};
use control_plane::store::Store;
use control_plane::watch::ClusterWatch;

use crate::api::{AppState, routes};
use crate::cache::{CacheSettings, RedisConn, SemanticCache};
use crate::config::{AzureCredential, Config, GoogleCredential, ProviderConfig};
use crate::embed::{Embedder, MiniLm, QueryEmbedder};
use crate::ingest::Ingestor;
use crate::ingest::chunker::ChunkLimits;
use crate::ingest::jobs::JobQueue;
use crate::llm::AnyProvider;
use crate::llm::azure::{AzureAuth, AzureOpenAi};
use crate::llm::http::ProviderHttp;
use crate::llm::oauth::{OAuthTokens, TokenSource};
use crate::llm::openai_compatible::OpenAiCompatible;
use crate::llm::vertex::VertexAi;
use crate::metrics::CellMetrics;
use crate::pipeline::Orchestrator;
use crate::vector::server::QdrantServer;
use crate::vector::{VectorShard, VectorStore};
use common::workers::{DEFAULT_HEADER_READ_TIMEOUT, Workers};

fn providers(config: &Config, http: &ProviderHttp) -> anyhow::Result<Vec<AnyProvider>> {
    config.providers.iter().map(|p| provider(p, http)).collect()
}

fn provider(p: &ProviderConfig, http: &ProviderHttp) -> anyhow::Result<AnyProvider> {
    Ok(match p {
        ProviderConfig::AzureOpenai {
            name,
            region,
            endpoint,
            deployment,
            api_version,
            credential,
            timeout,
        } => AnyProvider::Azure(Arc::new(AzureOpenAi {
            name: name.clone(),
            region: region.clone(),
            endpoint: endpoint.clone(),
            deployment: deployment.clone(),
            api_version: api_version.clone(),
            auth: match credential {
                AzureCredential::ApiKey(key) => AzureAuth::ApiKey(key.clone()),
                AzureCredential::EntraTokenCommand(command) => {
                    AzureAuth::Entra(OAuthTokens::new(TokenSource::Command(command.clone())))
                }
                AzureCredential::EntraToken(token) => {
                    AzureAuth::Entra(OAuthTokens::new(TokenSource::Static(token.clone())))
                }
            },
            timeout: *timeout,
            http: http.clone(),
        })),
        ProviderConfig::VertexAi {
            name,
            region,
            endpoint,
            project,
            location,
            model,
            credential,
            timeout,
        } => {
            let source = match credential {
                GoogleCredential::ServiceAccountKey(json) => {
                    TokenSource::service_account(json.expose())
                        .map_err(|e| anyhow::anyhow!("provider {name}: {e}"))?
                }
                GoogleCredential::TokenCommand(command) => TokenSource::Command(command.clone()),
                GoogleCredential::AccessToken(token) => TokenSource::Static(token.clone()),
            };
            AnyProvider::Vertex(Arc::new(VertexAi {
                name: name.clone(),
                region: region.clone(),
                endpoint: endpoint.clone(),
                project: project.clone(),
                location: location.clone(),
                model: model.clone(),
                auth: OAuthTokens::new(source),
                timeout: *timeout,
                http: http.clone(),
            }))
        }
        ProviderConfig::OpenaiCompatible {
            name,
            region,
            base_url,
            model,
            api_key,
            timeout,
        } => AnyProvider::OpenAiCompatible(Arc::new(OpenAiCompatible {
            name: name.clone(),
            region: region.clone(),
            base_url: base_url.clone(),
            model: model.clone(),
            api_key: api_key.clone(),
            timeout: *timeout,
            http: http.clone(),
        })),
    })
}

/// Records each configured provider-region under
/// `providers/<id>/cells/<cell>`, so operators see every region the system
/// may call before any traffic has been judged.
async fn register_providers(
    store: &Store,
    config: &Config,
) -> Result<(), control_plane::store::StoreError> {
    for p in &config.providers {
        let (kind, region, model) = match p {
            ProviderConfig::AzureOpenai {
                region, deployment, ..
            } => ("azure_openai", region, deployment),
            ProviderConfig::VertexAi { region, model, .. } => ("vertex_ai", region, model),
            ProviderConfig::OpenaiCompatible { region, model, .. } => {
                ("openai_compatible", region, model)
            }
        };
        let key = config.keys.provider_configured(p.name(), &config.id);
        let value = serde_json::to_vec(&serde_json::json!({
            "kind": kind, "region": region, "model": model,
        }))
        .unwrap_or_default();
        store
            .retrying("register provider-region", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .await?;
    }
    Ok(())
}

/// Runs the cell until a shutdown signal or the death of a background task.
pub async fn run(config: Config, telemetry: &common::telemetry::Telemetry) -> anyhow::Result<()> {
    let http = ProviderHttp::new()?;
    let model_dir = config.model_dir.clone();
    let embedder: Arc<dyn Embedder> = match &config.embedding_remote {
        Some(remote) => Arc::new(crate::embed::remote::RemoteEmbedder::new(
            provider(remote, &http)?,
            crate::embed::MINILM_DIMENSIONS,
            &model_dir,
        )?),
        None => Arc::new(tokio::task::spawn_blocking(move || MiniLm::load(&model_dir)).await??),
    };
    let dims = embedder.dimensions();
    let index_settings = config.vector;
    let (shard, optimizer): (Arc<dyn VectorStore>, _) = match &config.qdrant_server {
        None => {
            let shard_dir = config.data_dir.join("vectors");
            let shard = tokio::task::spawn_blocking(move || {
                VectorShard::open_with(&shard_dir, dims, index_settings)
            })
            .await??;
            let optimizer = tokio::spawn(
                shard
                    .clone()
                    .optimize_when_idle(std::time::Duration::from_secs(2)),
            );
            (Arc::new(shard), Some(optimizer))
        }
        Some(server) => {
            let store = QdrantServer::connect(
                &server.url,
                server.api_key.as_ref().map(|k| k.expose().to_owned()),
                &server.collection,
                dims,
                index_settings,
                Arc::new(crate::vector::lexical_model()?),
            )
            .await
            .with_context(|| format!("cannot open the vector shard in Qdrant at {}", server.url))?;
            tracing::info!(url = %server.url, collection = %server.collection, "vector shard in an external Qdrant server");
            (Arc::new(store), None)
        }
    };
    // The embedded engine's index builder, when there is one; never ends.
    let optimizer = async move {
        match optimizer {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(CellMetrics::register(&mut registry));
    let registry = Arc::new(registry);
    telemetry.export_metrics(registry.clone());
    let redis = RedisConn::new(config.redis.clone(), config.redis_timeout)?;
    let jobs = Arc::new(JobQueue::new(
        redis.clone(),
        &config.id,
        config.redis_timeout,
        config.ingest_claim_idle,
        config.limits.max_async_documents,
    ));
    let cache = SemanticCache::new(
        redis,
        CacheSettings {
            threshold: config.cache_threshold,
            ttl: config.cache_ttl,
            stale_grace: config.cache_stale_grace,
            timeout: config.redis_timeout,
            max_entries_per_tenant: config.cache_max_entries_per_tenant,
            memory_budget_bytes: config.cache_memory_budget_bytes,
        },
        dims,
        &config.id,
        metrics.clone(),
    );
    let cache_sync = cache.start_sync();

    let store = Store::connect(config.etcd.clone()).await?;
    let (cluster, watch_task) = ClusterWatch::start(store.clone(), config.keys.clone())
        .await
        .context("cannot read the cluster state from etcd")?;

    let provider_stats = Arc::new(crate::llm::health::ProviderStats::default());
    let reporter = tokio::spawn(crate::llm::health::report(
        store.clone(),
        config.keys.clone(),
        config.id.clone(),
        provider_stats.clone(),
    ));
    let providers = providers(&config, &http)?;
    let orchestrator = Arc::new(Orchestrator {
        cell_id: config.id.clone(),
        embedder: QueryEmbedder::new(
            embedder.clone(),
            config.embedding_lru_capacity,
            config.embedding_max_batch,
        ),
        shard: shard.clone(),
        cache: cache.clone(),
        breakers: config
            .providers
            .iter()
            .map(|_| crate::llm::resilience::Breaker::new(Default::default()))
            .collect(),
        retry: Default::default(),
        quality_check: config
            .quality_check
            .as_ref()
            .and_then(|q| crate::pipeline::quality_check::QualityChecker::new(q, &providers)),
        providers,
        retrieval: config.retrieval.clone(),
        max_query_chars: config.limits.max_query_chars,
        metrics: metrics.clone(),
        cluster: Some(cluster.clone()),
        provider_stats: provider_stats.clone(),
        prices: Arc::new(config.prices.clone()),
        hedging: config.hedging,
        misses: Default::default(),
    });
    let ingestor = Arc::new(Ingestor {
        cell_id: config.id.clone(),
        embedder,
        shard,
        cache,
        max_documents: config.limits.max_documents,
        limits: ChunkLimits::default(),
        metrics,
    });
    let ingest_worker = tokio::spawn(jobs.clone().work(ingestor.clone()));
    let app = routes(AppState {
        cell_id: config.id.clone(),
        orchestrator,
        ingestor,
        jobs,
        cluster,
        registry,
        max_body_bytes: config.limits.max_body_bytes,
        in_flight: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_concurrent_requests,
        )),
    });

    let listener = common::workers::listen(config.listen)?;
    let addr = listener.local_addr()?;
    let endpoint = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    publish_spec(
        &store,
        &config.keys,
        &config.id,
        CellSpec {
            region: config.region.clone(),
            endpoint: endpoint.clone(),
            template: config.template.clone(),
            lifecycle: Lifecycle::Joining,
        },
    )
    .await
    .context("cannot register the cell in etcd")?;
    register_providers(&store, &config)
        .await
        .context("cannot register the cell's provider-regions in etcd")?;
    let mut lease_task = keep_cell_alive(
        store.clone(),
        &config.keys,
        &config.id,
        &CellAlive {
            endpoint,
            started_at_ms: now_ms(),
        },
        LeaseSettings::default(),
    );
    // Each worker serves its connections with its own runtime, so the Redis
    // connection a request uses is that worker's own (see `RedisConn`).
    let mut workers = Workers::start(
        "cell",
        vec![app; config.workers],
        DEFAULT_HEADER_READ_TIMEOUT,
    )?;
    tracing::info!(cell = %config.id, region = %config.region, %addr, workers = config.workers, "cell serving");
    common::process::announce_ready("cell", addr);
    tokio::select! {
        e = workers.accept_from(&listener) => return Err(e.into()),
        () = common::process::shutdown_signal() => {}
        r = watch_task => anyhow::bail!("cluster watch stopped: {r:?}"),
        r = &mut lease_task => anyhow::bail!("lease keeper stopped: {r:?}"),
        r = cache_sync => anyhow::bail!("cache sync stopped: {r:?}"),
        r = reporter => anyhow::bail!("provider reporter stopped: {r:?}"),
        r = ingest_worker => anyhow::bail!("ingestion worker stopped: {r:?}"),
        r = optimizer => anyhow::bail!("vector index optimiser stopped: {r:?}"),
    }
    // Leave the ring first, so routers stop choosing this cell while it still
    // serves; then refuse new connections and finish those open. The lease
    // keeper stops first, so that a re-registration under way cannot put the
    // cell back.
    lease_task.abort();
    let alive = config.keys.cell_alive(&config.id);
    if let Err(e) = store
        .retrying("deregister", |mut c| {
            let alive = alive.clone();
            async move { c.delete(alive, None).await }
        })
        .await
    {
        tracing::warn!(cell = %config.id, error = %e, "cannot deregister; the lease will expire instead");
    }
    drop(listener);
    workers.drain().await;
    Ok(())
}
