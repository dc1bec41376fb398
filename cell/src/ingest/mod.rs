//! Ingestion: validate a batch whole, chunk, embed, then write each document
//! durably to the vector shard. Nothing is written unless the whole batch is
//! valid, and nothing is acknowledged before it is on disk.

pub mod chunker;
pub mod jobs;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{Instrument, info_span};

use crate::cache::SemanticCache;
use crate::embed::{Embedder, embed_off_runtime};
use crate::error::CellError;
use crate::metrics::CellMetrics;
use crate::vector::{ChunkRecord, DocumentRecord, VectorError, VectorStore};
use chunker::{ChunkLimits, chunk};

/// Longest accepted document id.
const MAX_ID_BYTES: usize = 256;
/// Texts embedded per model call: big enough to amortise, small enough for latency.
const EMBED_BATCH: usize = 32;

/// One document in `POST /v1/documents`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `POST /v1/documents` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    pub documents: Vec<DocumentInput>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IngestedDocument {
    pub id: String,
    pub chunks: usize,
}

/// `POST /v1/documents` answer, sent once every document is durable.
#[derive(Debug, Serialize, Deserialize)]
pub struct IngestResponse {
    pub documents: Vec<IngestedDocument>,
    pub chunks: usize,
}

pub struct Ingestor {
    pub cell_id: String,
    pub embedder: Arc<dyn Embedder>,
    pub shard: Arc<dyn VectorStore>,
    pub cache: SemanticCache,
    pub max_documents: usize,
    pub limits: ChunkLimits,
    pub metrics: Arc<CellMetrics>,
}

/// Checks the whole batch before anything is written.
/// A document id as stored: not blank, at most [`MAX_ID_BYTES`].
pub fn validate_document_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("document_id must not be empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Err(format!("document_id is longer than {MAX_ID_BYTES} bytes"));
    }
    Ok(())
}

fn validate(req: &IngestRequest, max_documents: usize) -> Result<(), CellError> {
    if req.documents.is_empty() {
        return Err(CellError::BadRequest("documents must not be empty".into()));
    }
    if req.documents.len() > max_documents {
        return Err(CellError::BadRequest(format!(
            "documents has {} entries; at most {max_documents} per request",
            req.documents.len()
        )));
    }
    let mut seen = HashSet::new();
    for (i, d) in req.documents.iter().enumerate() {
        validate_document(i, d, &mut seen).map_err(CellError::BadRequest)?;
    }
    Ok(())
}

/// Checks `documents[i]`; `seen` holds the ids before it in the batch.
pub fn validate_document<'a>(
    i: usize,
    d: &'a DocumentInput,
    seen: &mut HashSet<&'a str>,
) -> Result<(), String> {
    if d.id.trim().is_empty() {
        return Err(format!("documents[{i}].id must not be empty"));
    }
    if d.id.len() > MAX_ID_BYTES {
        return Err(format!(
            "documents[{i}].id is longer than {MAX_ID_BYTES} bytes"
        ));
    }
    if d.text.trim().is_empty() {
        return Err(format!("documents[{i}].text must not be empty"));
    }
    if let Some(m) = &d.metadata
        && !m.is_object()
    {
        return Err(format!("documents[{i}].metadata must be a JSON object"));
    }
    if !seen.insert(d.id.as_str()) {
        return Err(format!(
            "documents[{i}].id {:?} appears twice in the batch",
            d.id
        ));
    }
    Ok(())
}

impl Ingestor {
    pub async fn ingest(
        &self,
        tenant: &str,
        req: IngestRequest,
    ) -> Result<IngestResponse, CellError> {
        let span = info_span!("ingest", cellnet.tenant = %tenant, cellnet.cell = %self.cell_id, documents = req.documents.len());
        self.run(tenant, req).instrument(span).await
    }

    async fn run(&self, tenant: &str, req: IngestRequest) -> Result<IngestResponse, CellError> {
        validate(&req, self.max_documents)?;
        let documents = self.store(tenant, req.documents).await?;
        // Older cached answers may now be wrong.
        self.bump(tenant).await;
        Ok(IngestResponse {
            chunks: documents.iter().map(|d| d.chunks).sum(),
            documents,
        })
    }

    /// Chunks, embeds and writes `documents` (already validated) for
    /// `tenant`, all durable at one flush before this returns.
    pub async fn store(
        &self,
        tenant: &str,
        documents: Vec<DocumentInput>,
    ) -> Result<Vec<IngestedDocument>, CellError> {
        // Chunk (token counting is CPU work: off the runtime).
        let started = Instant::now();
        let embedder = self.embedder.clone();
        let limits = self.limits;
        let texts: Vec<String> = documents.iter().map(|d| d.text.clone()).collect();
        let chunked: Vec<Vec<String>> = tokio::task::spawn_blocking(move || {
            let count = |s: &str| embedder.count_tokens(s);
            texts
                .iter()
                .map(|t| {
                    chunk(t, limits, &count)
                        .into_iter()
                        .map(|c| c.text)
                        .collect()
                })
                .collect()
        })
        .await
        .map_err(|e| CellError::Vector(VectorError::Operation(e.to_string())))?;
        self.metrics.observe_stage("chunk", started);

        // Embed every chunk of the batch.
        let started = Instant::now();
        let all: Vec<String> = chunked.iter().flatten().cloned().collect();
        let mut vectors = Vec::with_capacity(all.len());
        for batch in all.chunks(EMBED_BATCH) {
            vectors.extend(embed_off_runtime(self.embedder.clone(), batch.to_vec()).await?);
        }
        self.metrics.observe_stage("embed_chunks", started);

        // Write them all, durably.
        let started = Instant::now();
        let mut vectors = vectors.into_iter();
        let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
        let records: Vec<DocumentRecord> = documents
            .into_iter()
            .zip(chunked)
            .map(|(doc, chunks)| DocumentRecord {
                document: doc.id,
                metadata: doc
                    .metadata
                    .unwrap_or_else(|| Value::Object(Default::default())),
                chunks: chunks
                    .into_iter()
                    .zip(vectors.by_ref())
                    .map(|(text, vector)| ChunkRecord { text, vector })
                    .collect(),
            })
            .collect();
        let counts = self
            .shard
            .replace_documents(tenant.to_owned(), records)
            .await?;
        self.metrics.observe_stage("vector_write", started);
        self.metrics.documents_ingested.inc_by(ids.len() as u64);
        self.metrics
            .chunks_ingested
            .inc_by(counts.iter().sum::<usize>() as u64);
        Ok(ids
            .into_iter()
            .zip(counts)
            .map(|(id, chunks)| IngestedDocument { id, chunks })
            .collect())
    }

    /// Removes a document; 404 if the tenant has no such document.
    pub async fn delete(&self, tenant: &str, document: &str) -> Result<usize, CellError> {
        let removed = self
            .shard
            .delete_document(tenant.to_owned(), document.to_owned())
            .await?;
        if removed == 0 {
            return Err(CellError::NotFound(format!("no document {document:?}")));
        }
        self.bump(tenant).await;
        Ok(removed)
    }

    /// Marks the tenant's cached answers as older than its documents.
    pub async fn bump(&self, tenant: &str) {
        if let Err(e) = self.cache.bump_knowledge_version(tenant).await {
            self.metrics.cache_errors.inc();
            tracing::warn!(error = %e, "could not bump the tenant's knowledge version");
        }
    }

    /// Removes every document of `tenant`; returns the chunks removed.
    pub async fn delete_all(&self, tenant: &str) -> Result<usize, CellError> {
        let removed = self.shard.delete_tenant(tenant.to_owned()).await?;
        self.bump(tenant).await;
        Ok(removed)
    }

    /// Writes points exported from another cell into `tenant`'s shard.
    pub async fn import(
        &self,
        tenant: &str,
        points: Vec<crate::vector::ExportedPoint>,
    ) -> Result<usize, CellError> {
        let dimensions = self.shard.dimensions();
        if let Some((i, p)) = points
            .iter()
            .enumerate()
            .find(|(_, p)| p.vector.len() != dimensions)
        {
            return Err(CellError::BadRequest(format!(
                "line {}: vector has {} dimensions, this cell stores {dimensions}",
                i + 1,
                p.vector.len()
            )));
        }
        let written = self.shard.import(tenant.to_owned(), points).await?;
        self.bump(tenant).await;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, text: &str) -> DocumentInput {
        DocumentInput {
            id: id.into(),
            text: text.into(),
            metadata: None,
        }
    }

    #[test]
    fn rejects_bad_batches_naming_the_field() {
        let cases = [
            (vec![], "documents must not be empty"),
            (vec![doc("", "x")], "documents[0].id"),
            (vec![doc("a", "x"), doc("b", "  ")], "documents[1].text"),
            (vec![doc("a", "x"), doc("a", "y")], "appears twice"),
        ];
        for (docs, expected) in cases {
            let err = validate(&IngestRequest { documents: docs }, 10)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let mut bad_meta = doc("a", "x");
        bad_meta.metadata = Some(serde_json::json!([1]));
        let err = validate(
            &IngestRequest {
                documents: vec![bad_meta],
            },
            10,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("documents[0].metadata"), "{err}");
    }
}
