//! The cell's vector shard: chunks of every tenant's documents in Qdrant's
//! embedded engine (`qdrant-edge`), on disk in the cell's data dir.
//!
//! Tenant isolation is enforced here, not by callers: every search, count and
//! delete takes a tenant and filters on it; there is no tenant-less search.
//! Writes are flushed before they return, so an acknowledged write survives
//! `kill -9`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder,
    EdgeShard, EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, JsonPath, Match,
    NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, QueryEnum, Range, ScrollRequest, SearchRequest, UpdateOperation,
    VectorInternal, VectorStructInternal, WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

/// Payload fields.
const TENANT: &str = "tenant";
const DOCUMENT: &str = "document_id";
const CHUNK: &str = "chunk";
const TEXT: &str = "text";
const METADATA: &str = "metadata";

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

fn op_err(e: impl std::fmt::Display) -> VectorError {
    VectorError::Operation(e.to_string())
}

/// One chunk to store.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub text: String,
    pub vector: Vec<f32>,
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
    dimensions: usize,
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

pub fn point_id(tenant: &str, document: &str, chunk: u32) -> PointId {
    let name = format!("{tenant}\u{0}{document}\u{0}{chunk}");
    PointId::Uuid(uuid::Uuid::new_v5(&POINT_NAMESPACE, name.as_bytes()))
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
    /// Opens the shard in `dir`, creating it on first use.
    pub fn open(dir: &Path, dimensions: usize) -> Result<Self, VectorError> {
        let fail = |e: &dyn std::fmt::Display| VectorError::Open {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let existing = dir.join("edge_config.json").exists();
        let shard = if existing {
            EdgeShard::load(dir, None).map_err(|e| fail(&e))?
        } else {
            let config = EdgeConfigBuilder::new()
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParams::builder(dimensions, Distance::Cosine).build(),
                )
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
        Ok(Self {
            shard: Arc::new(shard),
            writes: Arc::new(Mutex::new(())),
            dimensions,
        })
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
    /// New points overwrite old ones in place (same ids), then chunks beyond
    /// the new count are removed, so the document is never absent.
    pub fn replace_document(
        &self,
        tenant: &str,
        document: &str,
        metadata: &Value,
        chunks: Vec<ChunkRecord>,
    ) -> Result<usize, VectorError> {
        let count = chunks.len();
        let points: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let chunk = i as u32;
                PointStruct::new(
                    point_id(tenant, document, chunk),
                    c.vector,
                    json!({
                        TENANT: tenant,
                        DOCUMENT: document,
                        CHUNK: chunk,
                        TEXT: c.text,
                        METADATA: metadata,
                    }),
                )
                .into()
            })
            .collect();
        self.write(|shard| {
            if !points.is_empty() {
                shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                    ))
                    .map_err(op_err)?;
            }
            let mut stale = document_filter(tenant, document);
            stale.push(Condition::Field(FieldCondition::new_range(
                key(CHUNK),
                Range {
                    gte: Some(OrderedFloat(count as f64)),
                    gt: None,
                    lt: None,
                    lte: None,
                },
            )));
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(must(stale)),
                ))
                .map_err(op_err)?;
            Ok(count)
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
            // Defence in depth: the filter already guarantees this.
            if payload.get(TENANT).and_then(Value::as_str) != Some(tenant) {
                continue;
            }
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
            let field = |name: &str| payload.get(name).cloned().unwrap_or(Value::Null);
            points.push(ExportedPoint {
                document_id: field(DOCUMENT).as_str().unwrap_or_default().to_owned(),
                chunk: field(CHUNK).as_u64().unwrap_or_default() as u32,
                text: field(TEXT).as_str().unwrap_or_default().to_owned(),
                metadata: field(METADATA),
                vector,
            });
        }
        Ok((points, next))
    }

    /// Writes exported points into `tenant`, durably; the ids are derived
    /// again, so importing the same export twice changes nothing.
    pub fn import(&self, tenant: &str, points: Vec<ExportedPoint>) -> Result<usize, VectorError> {
        let count = points.len();
        for p in &points {
            if p.vector.len() != self.dimensions {
                return Err(VectorError::Operation(format!(
                    "point {}#{} has {} dimensions, not {}",
                    p.document_id,
                    p.chunk,
                    p.vector.len(),
                    self.dimensions
                )));
            }
        }
        let structs: Vec<_> = points
            .into_iter()
            .map(|p| {
                PointStruct::new(
                    point_id(tenant, &p.document_id, p.chunk),
                    p.vector,
                    json!({
                        TENANT: tenant,
                        DOCUMENT: p.document_id,
                        CHUNK: p.chunk,
                        TEXT: p.text,
                        METADATA: p.metadata,
                    }),
                )
                .into()
            })
            .collect();
        if structs.is_empty() {
            return Ok(0);
        }
        self.write(|shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(structs)),
                ))
                .map_err(op_err)?;
            Ok(count)
        })
    }

    /// The `limit` chunks of `tenant` nearest to `vector`, best first.
    pub fn search(
        &self,
        tenant: &str,
        vector: &[f32],
        limit: usize,
        score_floor: Option<f32>,
    ) -> Result<Vec<Hit>, VectorError> {
        let points = self
            .shard
            .search(SearchRequest {
                query: QueryEnum::Nearest(NamedQuery {
                    query: vector.to_vec().into(),
                    using: None,
                }),
                filter: Some(must(vec![tenant_condition(tenant)])),
                params: None,
                limit,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: Some(WithVector::Bool(false)),
                score_threshold: score_floor,
            })
            .map_err(op_err)?;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let payload = p.payload?.0;
                // Defence in depth: the filter already guarantees this.
                if payload.get(TENANT).and_then(Value::as_str) != Some(tenant) {
                    return None;
                }
                Some(Hit {
                    document_id: payload.get(DOCUMENT)?.as_str()?.to_owned(),
                    chunk: payload.get(CHUNK)?.as_u64()? as u32,
                    text: payload.get(TEXT)?.as_str()?.to_owned(),
                    score: p.score,
                    metadata: payload.get(METADATA).cloned().unwrap_or(Value::Null),
                })
            })
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
        let hits = shard.search("a", &unit(1), 10, None).unwrap();
        assert_eq!(hits.len(), 3);
        assert!(shard.search("c", &unit(1), 10, None).unwrap().is_empty());
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
        let hits = target.search("acme", &exported[2].vector, 1, None).unwrap();
        assert_eq!(hits[0].chunk, exported[2].chunk);
        let mut wrong = exported[0].clone();
        wrong.vector.pop();
        assert!(target.import("acme", vec![wrong]).is_err());

        assert_eq!(shard.delete_tenant("acme").unwrap(), 5);
        assert_eq!(shard.count("acme").unwrap(), 0);
        assert_eq!(shard.count("globex").unwrap(), 3);
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
        let hits = shard.search("a", &unit(2), 1, None).unwrap();
        assert_eq!(hits[0].chunk, 2);
        assert_eq!(hits[0].metadata, json!({"k": 1}));
    }
}
