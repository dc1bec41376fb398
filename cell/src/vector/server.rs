//! The vector shard in an external Qdrant server, through `qdrant-client`
//! (gRPC, usually port 6334).
//!
//! One collection per cell; the tenant is a payload field indexed with
//! `is_tenant = true`, so the server co-locates each tenant's points and every
//! search, count and delete filters on it, as in the embedded engine. Points
//! carry the same ids ([`point_uuid`]), payload and BM25 sparse vectors as
//! the embedded engine's, so a tenant's export from one imports into the
//! other. Every write waits for the server to apply it (`wait = true`)
//! before returning, so an acknowledged write is visible to the next read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as OutputVector;
use qdrant_client::qdrant::vectors_output::VectorsOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, HnswConfigDiffBuilder,
    KeywordIndexParamsBuilder, Modifier, NamedVectors, PointId, PointStruct,
    QuantizationSearchParamsBuilder, Query, QueryPointsBuilder, Range, ScalarQuantizationBuilder,
    ScoredPoint, ScrollPointsBuilder, SearchParams, SearchParamsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsOutput,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use qdrant_edge::bm25_embed::EdgeBm25;
use serde_json::{Map, Value};

use super::filter::Expected;
use super::{
    CHUNK, DOCUMENT, DocumentRecord, ExportedPoint, Hit, IndexSettings, LEXICAL, METADATA,
    SearchQuery, StoreFuture, StoredChunk, TENANT, VectorError, VectorStore, check_dimensions,
    document_points, lexical_step, list_depth,
};

/// The unnamed (default) dense vector's name in named-vector maps.
const DENSE: &str = "";
/// Per-request deadline: waited writes of a large batch take longer than the
/// client's default 5 s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Every client error as a shard error.
fn qdrant_err(e: QdrantError) -> VectorError {
    VectorError::Operation(format!("qdrant server: {e}"))
}

/// Exact keyword equality. `MatchValue::from(String)` would turn a value
/// with whitespace into a full-text match, which is not equality.
fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_owned()))
}

fn tenant_filter(tenant: &str) -> Filter {
    Filter::must([keyword(TENANT, tenant)])
}

fn document_filter(tenant: &str, document: &str) -> Filter {
    Filter::must([keyword(TENANT, tenant), keyword(DOCUMENT, document)])
}

/// The metadata filter as conditions on `metadata.<key>`, like the embedded
/// engine's [`super::MetadataFilter`] conditions.
fn metadata_conditions(filter: &super::MetadataFilter) -> Vec<Condition> {
    filter
        .entries()
        .iter()
        .map(|(key, expected)| {
            let field = format!("{METADATA}.{key}");
            match expected {
                Expected::Text(s) => keyword(&field, s),
                Expected::Integer(i) => Condition::matches(field, *i),
                Expected::Bool(b) => Condition::matches(field, *b),
                Expected::AnyText(v) => Condition::matches(field, v.clone()),
                Expected::AnyInteger(v) => Condition::matches(field, v.clone()),
                Expected::Range { gt, gte, lt, lte } => Condition::range(
                    field,
                    Range {
                        gt: *gt,
                        gte: *gte,
                        lt: *lt,
                        lte: *lte,
                    },
                ),
            }
        })
        .collect()
}

/// A point id as the cursor string handed to callers (ours are all uuids).
fn cursor(id: PointId) -> Option<String> {
    match id.point_id_options? {
        PointIdOptions::Uuid(s) => Some(s),
        PointIdOptions::Num(n) => Some(n.to_string()),
    }
}

/// A cursor string back into a point id.
fn cursor_id(after: String) -> PointId {
    match after.parse::<u64>() {
        Ok(n) => PointId::from(n),
        Err(_) => PointId::from(after),
    }
}

/// A payload as JSON (the serde feature's conversion of each value).
fn payload_json(payload: HashMap<String, qdrant_client::qdrant::Value>) -> Map<String, Value> {
    Map::from(Payload::from(payload))
}

/// The default dense vector of a returned point, whether the server sent it
/// alone or among named vectors, and in the newer `vector` or deprecated
/// `data` shape (`into_vector` handles both).
fn dense_vector(vectors: Option<VectorsOutput>) -> Option<Vec<f32>> {
    let output = match vectors?.vectors_options? {
        VectorsOptions::Vector(v) => v,
        VectorsOptions::Vectors(mut named) => named.vectors.remove(DENSE)?,
    };
    match output.into_vector() {
        OutputVector::Dense(dense) => Some(dense.data),
        _ => None,
    }
}

/// A search hit from a scored point (see [`Hit::from_payload`]).
fn hit(tenant: &str, point: ScoredPoint) -> Option<Hit> {
    Hit::from_payload(tenant, &payload_json(point.payload), point.score)
}

/// The shard in an external Qdrant server. Cheap to clone; async.
#[derive(Clone)]
pub struct QdrantServer {
    client: Qdrant,
    collection: String,
    dimensions: usize,
    settings: IndexSettings,
    bm25: Arc<EdgeBm25>,
}

impl std::fmt::Debug for QdrantServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantServer")
            .field("collection", &self.collection)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

impl QdrantServer {
    /// Connects and creates the collection (and its payload indexes) on
    /// first use. An existing collection is used as it is.
    pub async fn connect(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dimensions: usize,
        settings: IndexSettings,
        bm25: Arc<EdgeBm25>,
    ) -> Result<Self, VectorError> {
        let fail = |e: &dyn std::fmt::Display| VectorError::Open {
            path: format!("{url}/{collection}"),
            message: e.to_string(),
        };
        // The compatibility check would block this async task on a private
        // runtime; the first request below surfaces an unreachable server.
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(REQUEST_TIMEOUT)
            .skip_compatibility_check()
            .build()
            .map_err(|e| fail(&e))?;
        let server = Self {
            client,
            collection: collection.to_owned(),
            dimensions,
            settings,
            bm25,
        };
        let exists = server
            .client
            .collection_exists(collection)
            .await
            .map_err(|e| fail(&e))?;
        if !exists {
            server.create_collection().await.map_err(|e| fail(&e))?;
            tracing::info!(collection, dimensions, "qdrant collection created");
        }
        Ok(server)
    }

    /// The collection with the embedded engine's layout: unnamed dense
    /// cosine vector, BM25 sparse vector with IDF applied by the server,
    /// and indexes on tenant (tenant-optimised), document and chunk.
    async fn create_collection(&self) -> Result<(), QdrantError> {
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            LEXICAL,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        let mut create = CreateCollectionBuilder::new(&self.collection)
            .vectors_config(
                VectorParamsBuilder::new(self.dimensions as u64, Distance::Cosine)
                    .on_disk(self.settings.vectors_on_disk),
            )
            .hnsw_config(
                HnswConfigDiffBuilder::default()
                    .m(self.settings.hnsw_m as u64)
                    .ef_construct(self.settings.hnsw_ef_construct as u64),
            )
            .sparse_vectors_config(sparse);
        if self.settings.scalar_quantization {
            create = create.quantization_config(
                ScalarQuantizationBuilder::default()
                    .quantile(0.99)
                    .always_ram(true),
            );
        }
        self.client.create_collection(create).await?;
        let indexes = [
            CreateFieldIndexCollectionBuilder::new(&self.collection, TENANT, FieldType::Keyword)
                .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true)),
            CreateFieldIndexCollectionBuilder::new(&self.collection, DOCUMENT, FieldType::Keyword),
            CreateFieldIndexCollectionBuilder::new(&self.collection, CHUNK, FieldType::Integer),
        ];
        for index in indexes {
            self.client.create_field_index(index.wait(true)).await?;
        }
        Ok(())
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// One point as the server stores it (see [`StoredChunk`]).
    fn point(&self, tenant: &str, p: ExportedPoint) -> Result<PointStruct, VectorError> {
        let c = StoredChunk::new(&self.bm25, tenant, p);
        let vectors = NamedVectors::default()
            .add_vector(DENSE, Vector::new_dense(c.dense))
            .add_vector(
                LEXICAL,
                Vector::new_sparse(c.lexical.indices, c.lexical.values),
            );
        let payload = Payload::try_from(c.payload).map_err(qdrant_err)?;
        Ok(PointStruct::new(c.id.to_string(), vectors, payload))
    }

    /// Writes points and waits for the server to apply them.
    async fn upsert(&self, points: Vec<PointStruct>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(qdrant_err)?;
        Ok(())
    }

    /// Deletes what `filter` matches and waits for the server to apply it.
    async fn delete(&self, filter: Filter) -> Result<(), VectorError> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(qdrant_err)?;
        Ok(())
    }

    /// Exact number of points `filter` matches.
    async fn count_matching(&self, filter: Filter) -> Result<usize, VectorError> {
        let response = self
            .client
            .count(
                CountPointsBuilder::new(&self.collection)
                    .filter(filter)
                    .exact(true),
            )
            .await
            .map_err(qdrant_err)?;
        Ok(response.result.map_or(0, |r| r.count) as usize)
    }

    /// Counts, then deletes, what `filter` matches; returns the count.
    async fn delete_counted(&self, filter: Filter) -> Result<usize, VectorError> {
        let existing = self.count_matching(filter.clone()).await?;
        if existing > 0 {
            self.delete(filter).await?;
        }
        Ok(existing)
    }

    /// Replaces each document's chunks for `tenant`; returns each document's
    /// chunk count. New points overwrite old ones in place (same ids), then
    /// chunks beyond the new count are removed, so a re-ingested document is
    /// never absent.
    pub async fn replace_documents(
        &self,
        tenant: &str,
        documents: Vec<DocumentRecord>,
    ) -> Result<Vec<usize>, VectorError> {
        let (points, counts) = document_points(documents);
        let points = points
            .into_iter()
            .map(|p| self.point(tenant, p))
            .collect::<Result<Vec<_>, _>>()?;
        let stale: Vec<Condition> = counts
            .iter()
            .map(|(document, count)| {
                let mut beyond = document_filter(tenant, document);
                beyond.must.push(Condition::range(
                    CHUNK,
                    Range {
                        gte: Some(*count as f64),
                        ..Range::default()
                    },
                ));
                Condition::from(beyond)
            })
            .collect();
        self.upsert(points).await?;
        // One request for every document's stale chunks. Never with an empty
        // `should`: that would match, and delete, all of the tenant's points.
        if !stale.is_empty() {
            let mut filter = tenant_filter(tenant);
            filter.should = stale;
            self.delete(filter).await?;
        }
        Ok(counts.into_iter().map(|(_, count)| count).collect())
    }

    /// Removes every chunk of `document`; returns how many there were.
    pub async fn delete_document(
        &self,
        tenant: &str,
        document: &str,
    ) -> Result<usize, VectorError> {
        self.delete_counted(document_filter(tenant, document)).await
    }

    /// Chunks stored for `tenant`.
    pub async fn count(&self, tenant: &str) -> Result<usize, VectorError> {
        self.count_matching(tenant_filter(tenant)).await
    }

    /// Removes every chunk of `tenant`; returns how many there were.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<usize, VectorError> {
        self.delete_counted(tenant_filter(tenant)).await
    }

    /// One page of `tenant`'s points with their vectors, after `after` (the
    /// point id, a uuid string, returned with the previous page); with the
    /// cursor for the next page when there is one.
    pub async fn export_page(
        &self,
        tenant: &str,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<ExportedPoint>, Option<String>), VectorError> {
        let mut request = ScrollPointsBuilder::new(&self.collection)
            .filter(tenant_filter(tenant))
            .limit(u32::try_from(limit.max(1)).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(true);
        if let Some(after) = after {
            request = request.offset(cursor_id(after));
        }
        let response = self.client.scroll(request).await.map_err(qdrant_err)?;
        let mut points = Vec::with_capacity(response.result.len());
        for record in response.result {
            let payload = payload_json(record.payload);
            let Some(vector) = dense_vector(record.vectors) else {
                continue;
            };
            points.extend(ExportedPoint::from_payload(tenant, &payload, vector));
        }
        Ok((points, response.next_page_offset.and_then(cursor)))
    }

    /// Writes exported points into `tenant`; the ids are derived again, so
    /// importing the same export twice changes nothing.
    pub async fn import(
        &self,
        tenant: &str,
        points: Vec<ExportedPoint>,
    ) -> Result<usize, VectorError> {
        check_dimensions(&points, self.dimensions)?;
        let count = points.len();
        let structs = points
            .into_iter()
            .map(|p| self.point(tenant, p))
            .collect::<Result<Vec<_>, _>>()?;
        self.upsert(structs).await?;
        Ok(count)
    }

    /// The chunks of `tenant` that best match `query`, best first. Hybrid
    /// retrieval fuses the dense and the lexical lists by reciprocal rank;
    /// a hit's score is then its fused score.
    pub async fn search(&self, tenant: &str, query: &SearchQuery) -> Result<Vec<Hit>, VectorError> {
        let mut filter = tenant_filter(tenant);
        filter.must.extend(metadata_conditions(&query.filter));
        let mut params = SearchParamsBuilder::default()
            .hnsw_ef(self.settings.hnsw_ef.max(query.limit) as u64)
            .exact(query.exact);
        if self.settings.scalar_quantization {
            params = params.quantization(
                QuantizationSearchParamsBuilder::default()
                    .ignore(false)
                    .rescore(true)
                    .oversampling(2.0),
            );
        }
        let depth = list_depth(query.limit, query.text.is_some());
        let mut dense = self
            .search_one(
                tenant,
                Query::new_nearest(VectorInput::new_dense(query.vector.clone())),
                None,
                &filter,
                Some(params.build()),
                depth,
                query.score_floor,
            )
            .await?;
        let Some(lexical_query) =
            lexical_step(&self.bm25, &mut dense, query.text.as_deref(), query.limit)
        else {
            return Ok(dense);
        };
        let lexical = self
            .search_one(
                tenant,
                Query::new_nearest(VectorInput::new_sparse(
                    lexical_query.indices,
                    lexical_query.values,
                )),
                Some(LEXICAL),
                &filter,
                None,
                depth,
                None,
            )
            .await?;
        Ok(super::fusion::reciprocal_rank(
            &[dense, lexical],
            super::RRF_K,
            query.limit,
        ))
    }

    /// One ranked list: nearest points to `query` in vector `using` (the
    /// default dense vector when `None`).
    #[allow(clippy::too_many_arguments)]
    async fn search_one(
        &self,
        tenant: &str,
        query: Query,
        using: Option<&str>,
        filter: &Filter,
        params: Option<SearchParams>,
        limit: usize,
        score_floor: Option<f32>,
    ) -> Result<Vec<Hit>, VectorError> {
        let mut request = QueryPointsBuilder::new(&self.collection)
            .query(query)
            .filter(filter.clone())
            .limit(limit as u64)
            .with_payload(true);
        if let Some(name) = using {
            request = request.using(name);
        }
        if let Some(params) = params {
            request = request.params(params);
        }
        if let Some(floor) = score_floor {
            request = request.score_threshold(floor);
        }
        let response = self.client.query(request).await.map_err(qdrant_err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| hit(tenant, p))
            .collect())
    }
}

impl VectorStore for QdrantServer {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn replace_documents(
        &self,
        tenant: String,
        documents: Vec<DocumentRecord>,
    ) -> StoreFuture<'_, Vec<usize>> {
        Box::pin(async move { QdrantServer::replace_documents(self, &tenant, documents).await })
    }

    fn delete_document(&self, tenant: String, document: String) -> StoreFuture<'_, usize> {
        Box::pin(async move { QdrantServer::delete_document(self, &tenant, &document).await })
    }

    fn count(&self, tenant: String) -> StoreFuture<'_, usize> {
        Box::pin(async move { QdrantServer::count(self, &tenant).await })
    }

    fn delete_tenant(&self, tenant: String) -> StoreFuture<'_, usize> {
        Box::pin(async move { QdrantServer::delete_tenant(self, &tenant).await })
    }

    fn export_page(
        &self,
        tenant: String,
        after: Option<String>,
        limit: usize,
    ) -> StoreFuture<'_, (Vec<ExportedPoint>, Option<String>)> {
        Box::pin(async move { QdrantServer::export_page(self, &tenant, after, limit).await })
    }

    fn import(&self, tenant: String, points: Vec<ExportedPoint>) -> StoreFuture<'_, usize> {
        Box::pin(async move { QdrantServer::import(self, &tenant, points).await })
    }

    fn search(&self, tenant: String, query: SearchQuery) -> StoreFuture<'_, Vec<Hit>> {
        Box::pin(async move { QdrantServer::search(self, &tenant, &query).await })
    }
}
