//! The cell's vector shard: chunks of every tenant's documents in Qdrant's
//! embedded engine (`qdrant-edge`), on disk in the cell's data dir.
//!
//! Tenant isolation is enforced here, not by callers: every search, count and
//! delete takes a tenant and filters on it; there is no tenant-less search.
//! Writes are flushed before they return, so an acknowledged write survives
//! `kill -9`.
//!
//! Every chunk carries two vectors: the dense embedding and a sparse BM25
//! vector of its words (IDF applied by the engine at query time), so lexical
//! retrieval can be fused with vector retrieval per tenant without
//! re-ingesting. New points land in an appendable segment that is searched
//! exhaustively; [`VectorShard::optimize`] builds the HNSW index (and the
//! quantized copy, when configured) in the background after bulk loads.

pub mod filter;
pub mod fusion;
pub mod server;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::ordered_float::NotNan;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, CreateVectorName, DEFAULT_VECTOR_NAME, Distance,
    EdgeConfigBuilder, EdgeOptimizersConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams,
    FieldCondition, FieldIndexOperations, Filter, HnswIndexConfig, JsonPath, Match, Modifier,
    NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, PointStructPersisted, QuantizationConfig,
    QuantizationSearchParams, QueryEnum, Range, ScalarQuantizationConfig, ScalarType,
    ScrollRequest, SearchParams, SearchRequest, SparseVectorConfig, UpdateOperation, Vector,
    VectorInternal, VectorNameConfig, VectorNameOperations, VectorStructInternal, Vectors,
    WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

pub use filter::MetadataFilter;

/// Payload fields.
const TENANT: &str = "tenant";
const DOCUMENT: &str = "document_id";
const CHUNK: &str = "chunk";
const TEXT: &str = "text";
const METADATA: &str = "metadata";
/// The sparse BM25 vector's name.
const LEXICAL: &str = "bm25";
/// Average chunk length in words, for BM25's length normalisation: chunks
/// hold at most 256 model tokens, about 100 to 180 words.
const AVERAGE_CHUNK_WORDS: f64 = 120.0;
/// Reciprocal-rank-fusion constant (the usual 60: flattens rank differences
/// deep in either list).
pub const RRF_K: f32 = 60.0;

/// Namespace for point ids: uuid v5 of (tenant, document, chunk index), so
/// re-ingesting a document overwrites its points instead of duplicating them.
const POINT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1c_5e2d_8f3b_4c71_9d0e_2b4f_7a18_c3e5);

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector shard at {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("vector shard operation failed: {0}")]
    Operation(String),
}

/// How the shard indexes vectors; from the cell template, overridable in the
/// cell config (`vector:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSettings {
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidate list while building.
    pub hnsw_ef_construct: usize,
    /// HNSW candidate list while searching.
    pub hnsw_ef: usize,
    /// Keep an int8 copy of the vectors for search (rescored with the
    /// originals): about a quarter of the memory per vector.
    pub scalar_quantization: bool,
    /// Keep the original vectors in memory-mapped files rather than in
    /// process memory (with quantization, only rescoring reads them).
    pub vectors_on_disk: bool,
    /// Segments larger than this (KiB of vectors) get an HNSW index.
    pub indexing_threshold_kb: usize,
    /// Points written since the last optimisation that trigger the next.
    pub optimize_after_points: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        Self {
            hnsw_m: 16,
            hnsw_ef_construct: 100,
            hnsw_ef: 128,
            scalar_quantization: false,
            vectors_on_disk: false,
            indexing_threshold_kb: 10_000,
            optimize_after_points: 20_000,
        }
    }
}

fn op_err(e: impl std::fmt::Display) -> VectorError {
    VectorError::Operation(e.to_string())
}

/// One chunk to store.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub text: String,
    pub vector: Vec<f32>,
}

/// What every backend stores for one chunk.
struct StoredChunk {
    id: uuid::Uuid,
    dense: Vec<f32>,
    lexical: qdrant_edge::SparseVector,
    payload: Value,
}

impl StoredChunk {
    /// The chunk's id, its dense vector, its text's BM25 vector and its
    /// payload, the same in every backend (so exports move between them).
    fn new(bm25: &EdgeBm25, tenant: &str, p: ExportedPoint) -> Self {
        Self {
            id: point_uuid(tenant, &p.document_id, p.chunk),
            dense: p.vector,
            lexical: bm25.embed_document(&p.text),
            payload: json!({
                TENANT: tenant,
                DOCUMENT: p.document_id,
                CHUNK: p.chunk,
                TEXT: p.text,
                METADATA: p.metadata,
            }),
        }
    }
}

/// Documents to replace, as the points to write and, per document, how many
/// chunks it now has (its chunks from that index on are stale).
fn document_points(documents: Vec<DocumentRecord>) -> (Vec<ExportedPoint>, Vec<(String, usize)>) {
    let mut points = Vec::new();
    let mut counts = Vec::with_capacity(documents.len());
    for doc in documents {
        counts.push((doc.document.clone(), doc.chunks.len()));
        for (i, c) in doc.chunks.into_iter().enumerate() {
            points.push(ExportedPoint {
                document_id: doc.document.clone(),
                chunk: i as u32,
                text: c.text,
                metadata: doc.metadata.clone(),
                vector: c.vector,
            });
        }
    }
    (points, counts)
}

/// Refuses points whose vectors do not have the shard's dimensions.
fn check_dimensions(points: &[ExportedPoint], dimensions: usize) -> Result<(), VectorError> {
    match points.iter().find(|p| p.vector.len() != dimensions) {
        Some(p) => Err(VectorError::Operation(format!(
            "point {}#{} has {} dimensions, not {dimensions}",
            p.document_id,
            p.chunk,
            p.vector.len(),
        ))),
        None => Ok(()),
    }
}

impl Hit {
    /// A hit from a stored point's payload; `None` for another tenant's point
    /// (defence in depth: every search filters on the tenant) or a malformed one.
    fn from_payload(
        tenant: &str,
        payload: &serde_json::Map<String, Value>,
        score: f32,
    ) -> Option<Self> {
        if payload.get(TENANT).and_then(Value::as_str) != Some(tenant) {
            return None;
        }
        Some(Hit {
            document_id: payload.get(DOCUMENT)?.as_str()?.to_owned(),
            chunk: payload.get(CHUNK)?.as_u64()? as u32,
            text: payload.get(TEXT)?.as_str()?.to_owned(),
            score,
            metadata: payload.get(METADATA).cloned().unwrap_or(Value::Null),
        })
    }
}

/// How deep each ranked list goes: deeper than the answer for hybrid
/// retrieval, so that fusion has overlap to work on.
fn list_depth(limit: usize, hybrid: bool) -> usize {
    if hybrid { (limit * 4).max(20) } else { limit }
}

/// The BM25 query to fuse with the dense list, or `None` when the dense
/// list is the answer (cut to `limit`): vectors-only retrieval; nothing
/// semantically relevant, which words alone do not make so; or a query with
/// no word left after stop words.
fn lexical_step(
    bm25: &EdgeBm25,
    dense: &mut Vec<Hit>,
    text: Option<&str>,
    limit: usize,
) -> Option<qdrant_edge::SparseVector> {
    let query = text
        .filter(|_| !dense.is_empty())
        .map(|t| bm25.embed_query(t))
        .filter(|q| !q.indices.is_empty());
    if query.is_none() {
        dense.truncate(limit);
    }
    query
}

/// One document's chunks to store, replacing what it had.
#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub document: String,
    pub metadata: Value,
    pub chunks: Vec<ChunkRecord>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub document_id: String,
    pub chunk: u32,
    pub text: String,
    pub score: f32,
    pub metadata: Value,
}

/// The shard. Cheap to clone; blocking calls, run them off the async runtime.
#[derive(Clone)]
pub struct VectorShard {
    shard: Arc<EdgeShard>,
    /// Serialises writes, flushes and index builds: the engine's flush takes
    /// its locks with `try_lock` and must not race another writer.
    writes: Arc<Mutex<()>>,
    bm25: Arc<EdgeBm25>,
    settings: IndexSettings,
    /// Points written since the last optimisation.
    unoptimized: Arc<AtomicUsize>,
    dimensions: usize,
}

/// A retrieval with owned parts, for the [`VectorStore`] trait.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub vector: Vec<f32>,
    pub text: Option<String>,
    pub limit: usize,
    pub score_floor: Option<f32>,
    pub filter: MetadataFilter,
    pub exact: bool,
}

pub type StoreFuture<'a, T> = futures::future::BoxFuture<'a, Result<T, VectorError>>;

/// The cell's vector shard, whichever engine holds it: Qdrant's embedded
/// engine in the cell's data dir ([`VectorShard`], the default) or an
/// external Qdrant server ([`server::QdrantServer`]). Every operation is
/// scoped to one tenant, and every write is durable when it returns.
pub trait VectorStore: Send + Sync {
    /// Dimensions of the dense vectors.
    fn dimensions(&self) -> usize;
    /// Replaces each document's chunks; returns each one's chunk count.
    fn replace_documents(
        &self,
        tenant: String,
        documents: Vec<DocumentRecord>,
    ) -> StoreFuture<'_, Vec<usize>>;
    /// Removes a document; returns how many chunks it had.
    fn delete_document(&self, tenant: String, document: String) -> StoreFuture<'_, usize>;
    /// Chunks stored for the tenant.
    fn count(&self, tenant: String) -> StoreFuture<'_, usize>;
    /// Removes every chunk of the tenant; returns how many there were.
    fn delete_tenant(&self, tenant: String) -> StoreFuture<'_, usize>;
    /// One page of the tenant's points after the cursor `after`, with the
    /// cursor of the next page when there is one.
    fn export_page(
        &self,
        tenant: String,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, (Vec<ExportedPoint>, Option<String>)>;
    /// Writes exported points into the tenant; importing twice changes nothing.
    fn import(&self, tenant: String, points: Vec<ExportedPoint>) -> StoreFuture<'_, usize>;
    /// The tenant's best chunks for the query, best first.
    fn search(&self, tenant: String, query: SearchQuery) -> StoreFuture<'_, Vec<Hit>>;
}

/// Runs a blocking shard call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    tokio::task::spawn_blocking(f).await.map_err(op_err)?
}

fn cursor_text(id: &PointId) -> String {
    match id {
        PointId::Uuid(u) => u.to_string(),
        PointId::NumId(n) => n.to_string(),
    }
}

fn cursor_id(text: &str) -> Result<PointId, VectorError> {
    if let Ok(u) = uuid::Uuid::parse_str(text) {
        return Ok(PointId::Uuid(u));
    }
    text.parse::<u64>()
        .map(PointId::NumId)
        .map_err(|_| VectorError::Operation(format!("{text:?} is not an export cursor")))
}

impl VectorStore for VectorShard {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn replace_documents(
        &self,
        tenant: String,
        documents: Vec<DocumentRecord>,
    ) -> StoreFuture<'_, Vec<usize>> {
        let shard = self.clone();
        Box::pin(blocking(move || {
            shard.replace_documents(&tenant, documents)
        }))
    }

    fn delete_document(&self, tenant: String, document: String) -> StoreFuture<'_, usize> {
        let shard = self.clone();
        Box::pin(blocking(move || shard.delete_document(&tenant, &document)))
    }

    fn count(&self, tenant: String) -> StoreFuture<'_, usize> {
        let shard = self.clone();
        Box::pin(blocking(move || shard.count(&tenant)))
    }

    fn delete_tenant(&self, tenant: String) -> StoreFuture<'_, usize> {
        let shard = self.clone();
        Box::pin(blocking(move || shard.delete_tenant(&tenant)))
    }

    fn export_page(
        &self,
        tenant: String,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, (Vec<ExportedPoint>, Option<String>)> {
        let shard = self.clone();
        Box::pin(blocking(move || {
            let after = after.as_deref().map(cursor_id).transpose()?;
            let (points, next) = shard.export_page(&tenant, after, limit)?;
            Ok((points, next.as_ref().map(cursor_text)))
        }))
    }

    fn import(&self, tenant: String, points: Vec<ExportedPoint>) -> StoreFuture<'_, usize> {
        let shard = self.clone();
        Box::pin(blocking(move || shard.import(&tenant, points)))
    }

    fn search(&self, tenant: String, query: SearchQuery) -> StoreFuture<'_, Vec<Hit>> {
        let shard = self.clone();
        Box::pin(blocking(move || {
            shard.search(
                &tenant,
                &Retrieval {
                    vector: &query.vector,
                    text: query.text.as_deref(),
                    limit: query.limit,
                    score_floor: query.score_floor,
                    filter: &query.filter,
                    exact: query.exact,
                },
            )
        }))
    }
}

/// One retrieval: the tenant's chunks nearest to `vector` (and, when `text`
/// is given, fused by reciprocal rank with its best BM25 matches).
#[derive(Debug, Clone, Copy)]
pub struct Retrieval<'a> {
    pub vector: &'a [f32],
    /// The query's words, for hybrid retrieval; `None` for vectors only.
    pub text: Option<&'a str>,
    pub limit: usize,
    /// Dense similarity below which a chunk is not relevant. With none above
    /// it, nothing is returned, whatever the words match.
    pub score_floor: Option<f32>,
    pub filter: &'a MetadataFilter,
    /// Search every point exactly instead of through the index.
    pub exact: bool,
}

impl std::fmt::Debug for VectorShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorShard")
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

/// One stored chunk as exported for a move between cells (one JSON line each).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedPoint {
    pub document_id: String,
    pub chunk: u32,
    pub text: String,
    #[serde(default)]
    pub metadata: Value,
    pub vector: Vec<f32>,
}

impl ExportedPoint {
    /// A stored point as exported; `None` for another tenant's point
    /// (defence in depth: every export filters on the tenant).
    fn from_payload(
        tenant: &str,
        payload: &serde_json::Map<String, Value>,
        vector: Vec<f32>,
    ) -> Option<Self> {
        if payload.get(TENANT).and_then(Value::as_str) != Some(tenant) {
            return None;
        }
        let field = |name: &str| payload.get(name).cloned().unwrap_or(Value::Null);
        Some(ExportedPoint {
            document_id: field(DOCUMENT).as_str().unwrap_or_default().to_owned(),
            chunk: field(CHUNK).as_u64().unwrap_or_default() as u32,
            text: field(TEXT).as_str().unwrap_or_default().to_owned(),
            metadata: field(METADATA),
            vector,
        })
    }
}

/// The BM25 model that turns chunk and query words into sparse vectors:
/// English stop words and stemming, the usual k1 = 1.2 and b = 0.75.
pub fn lexical_model() -> Result<EdgeBm25, VectorError> {
    EdgeBm25::new(EdgeBm25Config {
        avg_len: NotNan::new(AVERAGE_CHUNK_WORDS).map_err(op_err)?,
        ..EdgeBm25Config::default()
    })
    .map_err(op_err)
}

/// A chunk's point id, the same in every backend.
pub fn point_uuid(tenant: &str, document: &str, chunk: u32) -> uuid::Uuid {
    let name = format!("{tenant}\u{0}{document}\u{0}{chunk}");
    uuid::Uuid::new_v5(&POINT_NAMESPACE, name.as_bytes())
}

pub fn point_id(tenant: &str, document: &str, chunk: u32) -> PointId {
    PointId::Uuid(point_uuid(tenant, document, chunk))
}

/// A top-level payload key (no nesting, so no parsing needed).
fn key(field: &str) -> JsonPath {
    JsonPath {
        first_key: field.to_owned(),
        rest: Vec::new(),
    }
}

fn tenant_condition(tenant: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(
        key(TENANT),
        Match::from(tenant.to_owned()),
    ))
}

fn document_filter(tenant: &str, document: &str) -> Vec<Condition> {
    vec![
        tenant_condition(tenant),
        Condition::Field(FieldCondition::new_match(
            key(DOCUMENT),
            Match::from(document.to_owned()),
        )),
    ]
}

fn must(conditions: Vec<Condition>) -> Filter {
    Filter {
        should: None,
        min_should: None,
        must: Some(conditions),
        must_not: None,
    }
}

impl VectorShard {
    /// Opens the shard in `dir` with default index settings.
    pub fn open(dir: &Path, dimensions: usize) -> Result<Self, VectorError> {
        Self::open_with(dir, dimensions, IndexSettings::default())
    }

    /// Opens the shard in `dir`, creating it on first use; index settings
    /// that changed since are applied at the next optimisation.
    pub fn open_with(
        dir: &Path,
        dimensions: usize,
        settings: IndexSettings,
    ) -> Result<Self, VectorError> {
        let fail = |e: &dyn std::fmt::Display| VectorError::Open {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let existing = dir.join("edge_config.json").exists();
        let hnsw = HnswIndexConfig {
            m: settings.hnsw_m,
            ef_construct: settings.hnsw_ef_construct,
            ..HnswIndexConfig::default()
        };
        let optimizers = EdgeOptimizersConfig {
            indexing_threshold: Some(settings.indexing_threshold_kb),
            ..EdgeOptimizersConfig::default()
        };
        let quantization = settings.scalar_quantization.then(|| {
            QuantizationConfig::from(ScalarQuantizationConfig {
                r#type: ScalarType::Int8,
                quantile: Some(0.99),
                always_ram: Some(true),
            })
        });
        let shard = if existing {
            let shard = EdgeShard::load(dir, None).map_err(|e| fail(&e))?;
            shard.set_hnsw_config(hnsw).map_err(|e| fail(&e))?;
            shard
                .set_optimizers_config(optimizers)
                .map_err(|e| fail(&e))?;
            // Shards made before lexical retrieval existed get its vector now;
            // their chunks gain it when re-ingested.
            let has_lexical = shard.config().sparse_vectors.contains_key(LEXICAL);
            if !has_lexical {
                shard
                    .update(UpdateOperation::VectorNameOperation(
                        VectorNameOperations::CreateVectorName(CreateVectorName {
                            vector_name: LEXICAL.into(),
                            config: VectorNameConfig::sparse(SparseVectorConfig {
                                modifier: Some(Modifier::Idf),
                                datatype: None,
                            }),
                        }),
                    ))
                    .map_err(|e| fail(&e))?;
                shard.flush();
            }
            shard
        } else {
            let mut dense = EdgeVectorParams::builder(dimensions, Distance::Cosine)
                .on_disk(settings.vectors_on_disk);
            if let Some(q) = quantization {
                dense = dense.quantization_config(q);
            }
            let config = EdgeConfigBuilder::new()
                .vector(DEFAULT_VECTOR_NAME, dense.build())
                .sparse_vector(
                    LEXICAL,
                    EdgeSparseVectorParams::builder()
                        .modifier(Modifier::Idf)
                        .build(),
                )
                .hnsw_config(hnsw)
                .optimizers(optimizers)
                .build();
            let shard = EdgeShard::new(dir, config).map_err(|e| fail(&e))?;
            for (field, schema) in [
                (TENANT, PayloadSchemaType::Keyword),
                (DOCUMENT, PayloadSchemaType::Keyword),
                (CHUNK, PayloadSchemaType::Integer),
            ] {
                shard
                    .update(UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(CreateIndex {
                            field_name: key(field),
                            field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                        }),
                    ))
                    .map_err(|e| fail(&e))?;
            }
            shard.flush();
            shard
        };
        let bm25 = lexical_model()?;
        // Points left unindexed by an earlier run count as written since the
        // last optimisation, so a restart after a bulk load still indexes them.
        let info = shard.info();
        let unindexed = info.points_count.saturating_sub(info.indexed_vectors_count);
        Ok(Self {
            shard: Arc::new(shard),
            writes: Arc::new(Mutex::new(())),
            bm25: Arc::new(bm25),
            settings,
            unoptimized: Arc::new(AtomicUsize::new(unindexed)),
            dimensions,
        })
    }

    pub fn settings(&self) -> IndexSettings {
        self.settings
    }

    /// One point as the engine stores it (see [`StoredChunk`]).
    fn point(&self, tenant: &str, p: ExportedPoint) -> PointStructPersisted {
        let c = StoredChunk::new(&self.bm25, tenant, p);
        PointStruct::new(
            PointId::Uuid(c.id),
            Vectors::new_named([
                (DEFAULT_VECTOR_NAME, Vector::new_dense(c.dense)),
                (LEXICAL, Vector::from(c.lexical)),
            ]),
            c.payload,
        )
        .into()
    }

    /// Points written since the last optimisation.
    pub fn unoptimized_points(&self) -> usize {
        self.unoptimized.load(Ordering::Relaxed)
    }

    /// Builds the HNSW index (and quantized vectors) for what was written
    /// since the last run, merging small segments. Blocks writes, not
    /// searches, while it runs; returns whether anything changed.
    pub fn optimize(&self) -> Result<bool, VectorError> {
        self.write(|shard| {
            // Writes wait on the lock, so everything counted is covered.
            let changed = shard.optimize().map_err(op_err)?;
            self.unoptimized.store(0, Ordering::Relaxed);
            Ok(changed)
        })
    }

    /// Whether enough was written since the last optimisation to run one:
    /// `optimize_after_points` once writing has paused, or twice that even
    /// while it goes on. The bound matters: the appendable segment searches
    /// its vectors exhaustively, and the engine's in-memory BM25 index
    /// rewrites a word's whole posting list on every insert, so a segment
    /// left to grow makes each write slower than the last.
    pub fn optimization_due(&self, writing_paused: bool) -> bool {
        let pending = self.unoptimized_points();
        let after = self.settings.optimize_after_points;
        pending >= after.saturating_mul(2) || (writing_paused && pending >= after)
    }

    /// Runs [`Self::optimize`] in the background when [`Self::optimization_due`]
    /// says so, looking every `tick` (writing has paused when nothing new was
    /// written during one).
    pub async fn optimize_when_idle(self, tick: std::time::Duration) {
        let mut interval = tokio::time::interval(tick);
        let mut last_seen = usize::MAX;
        loop {
            interval.tick().await;
            let pending = self.unoptimized_points();
            if self.optimization_due(pending == last_seen) {
                let shard = self.clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || shard.optimize()).await {
                    Ok(Ok(changed)) => {
                        let (indexed, points) = self.indexed_share();
                        tracing::info!(
                            pending,
                            changed,
                            indexed,
                            points,
                            seconds = started.elapsed().as_secs_f64(),
                            "vector index optimised"
                        );
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "vector index optimisation failed"),
                    Err(e) => tracing::error!(error = %e, "vector index optimisation panicked"),
                }
            }
            last_seen = self.unoptimized_points();
        }
    }

    /// Dense vectors held in an HNSW index, and all points. The engine counts
    /// indexed vectors of every name together, and every point's sparse BM25
    /// vector is indexed as written, so the dense count is the rest.
    pub fn indexed_share(&self) -> (usize, usize) {
        let info = self.shard.info();
        (
            info.indexed_vectors_count.saturating_sub(info.points_count),
            info.points_count,
        )
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, VectorError>,
    ) -> Result<T, VectorError> {
        let _guard = self
            .writes
            .lock()
            .map_err(|_| VectorError::Operation("a previous write panicked".into()))?;
        let out = f(&self.shard)?;
        // The engine does not replay its WAL on load: only a flush makes the
        // write survive a crash, so acknowledge nothing before it.
        self.shard.flush();
        Ok(out)
    }

    /// Replaces `document`'s chunks for `tenant` with `chunks`, durably.
    pub fn replace_document(
        &self,
        tenant: &str,
        document: &str,
        metadata: &Value,
        chunks: Vec<ChunkRecord>,
    ) -> Result<usize, VectorError> {
        let counts = self.replace_documents(
            tenant,
            vec![DocumentRecord {
                document: document.to_owned(),
                metadata: metadata.clone(),
                chunks,
            }],
        )?;
        Ok(counts[0])
    }

    /// Replaces each document's chunks for `tenant`, all durable at one
    /// flush; returns each document's chunk count. New points overwrite old
    /// ones in place (same ids), then chunks beyond the new count are removed,
    /// so a re-ingested document is never absent.
    pub fn replace_documents(
        &self,
        tenant: &str,
        documents: Vec<DocumentRecord>,
    ) -> Result<Vec<usize>, VectorError> {
        let (points, counts) = document_points(documents);
        let points: Vec<_> = points.into_iter().map(|p| self.point(tenant, p)).collect();
        let stale: Vec<Filter> = counts
            .iter()
            .map(|(document, count)| {
                let mut conditions = document_filter(tenant, document);
                conditions.push(Condition::Field(FieldCondition::new_range(
                    key(CHUNK),
                    Range {
                        gte: Some(OrderedFloat(*count as f64)),
                        gt: None,
                        lt: None,
                        lte: None,
                    },
                )));
                must(conditions)
            })
            .collect();
        let written = points.len();
        self.write(|shard| {
            if !points.is_empty() {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                    ))
                    .map_err(op_err)?;
            }
            self.unoptimized.fetch_add(written, Ordering::Relaxed);
            for filter in stale {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(filter),
                    ))
                    .map_err(op_err)?;
            }
            Ok(counts.into_iter().map(|(_, count)| count).collect())
        })
    }

    /// Removes every chunk of `document`; returns how many there were.
    pub fn delete_document(&self, tenant: &str, document: &str) -> Result<usize, VectorError> {
        self.write(|shard| {
            let filter = must(document_filter(tenant, document));
            let existing = shard
                .count(CountRequest {
                    filter: Some(filter.clone()),
                    exact: true,
                })
                .map_err(op_err)?;
            if existing > 0 {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(filter),
                    ))
                    .map_err(op_err)?;
            }
            Ok(existing)
        })
    }

    /// Chunks stored for `tenant`.
    pub fn count(&self, tenant: &str) -> Result<usize, VectorError> {
        self.shard
            .count(CountRequest {
                filter: Some(must(vec![tenant_condition(tenant)])),
                exact: true,
            })
            .map_err(op_err)
    }

    /// Removes every chunk of `tenant`; returns how many there were.
    pub fn delete_tenant(&self, tenant: &str) -> Result<usize, VectorError> {
        self.write(|shard| {
            let filter = must(vec![tenant_condition(tenant)]);
            let existing = shard
                .count(CountRequest {
                    filter: Some(filter.clone()),
                    exact: true,
                })
                .map_err(op_err)?;
            if existing > 0 {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(filter),
                    ))
                    .map_err(op_err)?;
            }
            Ok(existing)
        })
    }

    /// One page of `tenant`'s points with their vectors, after `after`;
    /// with the cursor for the next page when there is one.
    pub fn export_page(
        &self,
        tenant: &str,
        after: Option<PointId>,
        limit: usize,
    ) -> Result<(Vec<ExportedPoint>, Option<PointId>), VectorError> {
        let (records, next) = self
            .shard
            .scroll(ScrollRequest {
                offset: after,
                limit: Some(limit.max(1)),
                filter: Some(must(vec![tenant_condition(tenant)])),
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(true),
                order_by: None,
            })
            .map_err(op_err)?;
        let mut points = Vec::with_capacity(records.len());
        for r in records {
            let Some(payload) = r.payload.map(|p| p.0) else {
                continue;
            };
            let vector = match r.vector {
                Some(VectorStructInternal::Single(v)) => v,
                Some(VectorStructInternal::Named(mut named)) => {
                    match named.remove(DEFAULT_VECTOR_NAME) {
                        Some(VectorInternal::Dense(v)) => v,
                        _ => continue,
                    }
                }
                _ => continue,
            };
            points.extend(ExportedPoint::from_payload(tenant, &payload, vector));
        }
        Ok((points, next))
    }

    /// Writes exported points into `tenant`, durably; the ids are derived
    /// again, so importing the same export twice changes nothing.
    pub fn import(&self, tenant: &str, points: Vec<ExportedPoint>) -> Result<usize, VectorError> {
        check_dimensions(&points, self.dimensions)?;
        let count = points.len();
        let structs: Vec<_> = points.into_iter().map(|p| self.point(tenant, p)).collect();
        if structs.is_empty() {
            return Ok(0);
        }
        self.write(|shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(structs)),
                ))
                .map_err(op_err)?;
            self.unoptimized.fetch_add(count, Ordering::Relaxed);
            Ok(count)
        })
    }

    /// The chunks of `tenant` that best match `query`, best first. Hybrid
    /// retrieval fuses the dense and the lexical lists by reciprocal rank;
    /// a hit's score is then its fused score.
    pub fn search(&self, tenant: &str, query: &Retrieval<'_>) -> Result<Vec<Hit>, VectorError> {
        let mut conditions = vec![tenant_condition(tenant)];
        conditions.extend(query.filter.conditions(METADATA));
        let filter = must(conditions);
        let params = SearchParams {
            hnsw_ef: Some(self.settings.hnsw_ef.max(query.limit)),
            exact: query.exact,
            quantization: self
                .settings
                .scalar_quantization
                .then_some(QuantizationSearchParams {
                    ignore: false,
                    rescore: Some(true),
                    oversampling: Some(2.0),
                }),
            ..SearchParams::default()
        };
        let depth = list_depth(query.limit, query.text.is_some());
        let mut dense = self.search_one(
            tenant,
            NamedQuery::default_dense(query.vector.to_vec()),
            &filter,
            params,
            depth,
            query.score_floor,
        )?;
        let Some(lexical_query) = lexical_step(&self.bm25, &mut dense, query.text, query.limit)
        else {
            return Ok(dense);
        };
        let lexical = self.search_one(
            tenant,
            NamedQuery::new(VectorInternal::Sparse(lexical_query), LEXICAL),
            &filter,
            SearchParams::default(),
            depth,
            None,
        )?;
        Ok(fusion::reciprocal_rank(
            &[dense, lexical],
            RRF_K,
            query.limit,
        ))
    }

    fn search_one(
        &self,
        tenant: &str,
        query: NamedQuery<VectorInternal>,
        filter: &Filter,
        params: SearchParams,
        limit: usize,
        score_floor: Option<f32>,
    ) -> Result<Vec<Hit>, VectorError> {
        let points = self
            .shard
            .search(SearchRequest {
                query: QueryEnum::Nearest(query),
                filter: Some(filter.clone()),
                params: Some(params),
                limit,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: Some(WithVector::Bool(false)),
                score_threshold: score_floor,
            })
            .map_err(op_err)?;
        Ok(points
            .into_iter()
            .filter_map(|p| Hit::from_payload(tenant, &p.payload?.0, p.score))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: usize = 8;

    fn unit(seed: u32) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMS as u32)
            .map(|i| ((seed * 31 + i * 7) % 13) as f32 + 0.5)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn nearest(shard: &VectorShard, tenant: &str, vector: &[f32], limit: usize) -> Vec<Hit> {
        shard
            .search(
                tenant,
                &Retrieval {
                    vector,
                    text: None,
                    limit,
                    score_floor: None,
                    filter: &MetadataFilter::default(),
                    exact: false,
                },
            )
            .unwrap()
    }

    fn chunks(n: u32) -> Vec<ChunkRecord> {
        (0..n)
            .map(|i| ChunkRecord {
                text: format!("chunk {i}"),
                vector: unit(i),
            })
            .collect()
    }

    #[test]
    fn search_never_crosses_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let shard = VectorShard::open(dir.path(), 8).unwrap();
        shard
            .replace_document("a", "doc", &json!({}), chunks(3))
            .unwrap();
        shard
            .replace_document("b", "doc", &json!({}), chunks(3))
            .unwrap();
        let hits = nearest(&shard, "a", &unit(1), 10);
        assert_eq!(hits.len(), 3);
        assert!(nearest(&shard, "c", &unit(1), 10).is_empty());
        assert_eq!(shard.count("b").unwrap(), 3);
    }

    #[test]
    fn reingest_replaces_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let shard = VectorShard::open(dir.path(), 8).unwrap();
        shard
            .replace_document("a", "doc", &json!({}), chunks(5))
            .unwrap();
        shard
            .replace_document("a", "doc", &json!({}), chunks(2))
            .unwrap();
        assert_eq!(shard.count("a").unwrap(), 2);
        shard
            .replace_document("a", "doc", &json!({}), chunks(2))
            .unwrap();
        assert_eq!(shard.count("a").unwrap(), 2);
        assert_eq!(shard.delete_document("a", "doc").unwrap(), 2);
        assert_eq!(shard.count("a").unwrap(), 0);
    }

    #[test]
    fn a_tenant_exports_imports_and_deletes_only_its_own_points() {
        let dir = tempfile::tempdir().unwrap();
        let shard = VectorShard::open(dir.path(), DIMS).unwrap();
        shard
            .replace_document("acme", "a", &json!({"k": 1}), chunks(5))
            .unwrap();
        shard
            .replace_document("globex", "g", &Value::Null, chunks(3))
            .unwrap();
        let mut exported = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = shard.export_page("acme", after, 2).unwrap();
            exported.extend(page);
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(exported.len(), 5);
        assert!(
            exported
                .iter()
                .all(|p| p.document_id == "a" && p.vector.len() == DIMS)
        );
        assert_eq!(exported[0].metadata, json!({"k": 1}));

        let other = tempfile::tempdir().unwrap();
        let target = VectorShard::open(other.path(), DIMS).unwrap();
        assert_eq!(target.import("acme", exported.clone()).unwrap(), 5);
        assert_eq!(target.import("acme", exported.clone()).unwrap(), 5);
        assert_eq!(
            target.count("acme").unwrap(),
            5,
            "importing twice changes nothing"
        );
        let hits = nearest(&target, "acme", &exported[2].vector, 1);
        assert_eq!(hits[0].chunk, exported[2].chunk);
        let mut wrong = exported[0].clone();
        wrong.vector.pop();
        assert!(target.import("acme", vec![wrong]).is_err());

        assert_eq!(shard.delete_tenant("acme").unwrap(), 5);
        assert_eq!(shard.count("acme").unwrap(), 0);
        assert_eq!(shard.count("globex").unwrap(), 3);
    }

    #[test]
    fn searches_go_on_while_the_index_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let settings = IndexSettings {
            // Index even this small shard.
            indexing_threshold_kb: 1,
            ..IndexSettings::default()
        };
        let shard = VectorShard::open_with(dir.path(), DIMS, settings).unwrap();
        let points: Vec<ExportedPoint> = (0..3000u32)
            .map(|i| ExportedPoint {
                document_id: format!("d{i}"),
                chunk: 0,
                text: format!("point {i}"),
                metadata: json!({}),
                vector: unit(i),
            })
            .collect();
        shard.import("a", points).unwrap();
        assert_eq!(shard.unoptimized_points(), 3000);
        assert_eq!(shard.indexed_share(), (0, 3000));

        let builder = {
            let shard = shard.clone();
            std::thread::spawn(move || shard.optimize())
        };
        // Search until the build is over (at least once meanwhile).
        loop {
            assert_eq!(nearest(&shard, "a", &unit(7), 3).len(), 3);
            if builder.is_finished() {
                break;
            }
        }
        assert!(builder.join().unwrap().unwrap(), "the index was built");
        let (indexed, _) = shard.indexed_share();
        assert!(indexed >= 3000, "indexed {indexed}");
        assert_eq!(shard.unoptimized_points(), 0);
        assert_eq!(shard.count("a").unwrap(), 3000);
        // Writes go on after it, and the index survives a reopen.
        shard
            .replace_document("a", "late", &json!({}), chunks(1))
            .unwrap();
        drop(shard);
        let shard = VectorShard::open_with(dir.path(), DIMS, settings).unwrap();
        assert_eq!(shard.count("a").unwrap(), 3001);
        assert!(shard.indexed_share().0 >= 3000);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let shard = VectorShard::open(dir.path(), 8).unwrap();
            shard
                .replace_document("a", "doc", &json!({"k": 1}), chunks(4))
                .unwrap();
        }
        let shard = VectorShard::open(dir.path(), 8).unwrap();
        assert_eq!(shard.count("a").unwrap(), 4);
        let hits = nearest(&shard, "a", &unit(2), 1);
        assert_eq!(hits[0].chunk, 2);
        assert_eq!(hits[0].metadata, json!({"k": 1}));
    }
}
