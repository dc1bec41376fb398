//! Asynchronous ingestion: `POST /v1/documents?async=true` puts the batch on
//! a durable queue, a Redis stream per cell read through a consumer group,
//! and answers 202 with a job id at once; a worker in the cell chunks, embeds
//! and writes the documents, and `GET /v1/jobs/{id}` reports its progress.
//!
//! What makes it safe:
//! - the job record and its stream entry are created by one script, and a job
//!   id derives from (tenant, request id), so a retried or replayed request
//!   (router hints replay with the same request id) finds its job instead of
//!   queueing it twice;
//! - a document's outcome is recorded only after its vector write is flushed,
//!   and the stream entry is acknowledged only after every document has one;
//! - entries left pending by a worker that died are read again by the same
//!   cell when it restarts, and claimed by any worker once idle for
//!   `claim_idle`; documents with an outcome are skipped, the rest redone,
//!   which is harmless because a document's write replaces it whole;
//! - a failure of Redis or of the vector shard leaves the entry pending to be
//!   retried; only a document that can never be ingested (it fails
//!   validation) is reported as an error.
//!
//! Keys carry the cell id as a hash tag, so on a Redis Cluster a cell's queue
//! and jobs live on one shard and the script may touch them all.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::{DocumentInput, IngestRequest, Ingestor, validate_document};
use crate::cache::{CacheConn, CacheError, RedisConn};
use crate::error::CellError;

/// The consumer group every worker of a cell reads through.
const GROUP: &str = "ingest";
/// Documents chunked, embedded and flushed together.
const DOCUMENTS_PER_WRITE: usize = 16;
/// How long a finished job's record is kept.
const JOB_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the worker blocks waiting for new entries.
const READ_BLOCK: Duration = Duration::from_secs(2);

/// Creates the job and queues it, unless a job with this id exists.
/// KEYS: job record, stream. ARGV: job id, tenant, documents, now (s), body, ttl (s).
const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'tenant', ARGV[2], 'state', 'queued', 'documents', ARGV[3], 'created_at', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('XADD', KEYS[2], '*', 'job', ARGV[1], 'tenant', ARGV[2], 'body', ARGV[5])
return 1
";

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// Every document has an outcome; `failed` says how many were refused.
    Completed,
}

/// One document's error in a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentError {
    pub index: usize,
    pub id: String,
    pub error: String,
}

/// `GET /v1/jobs/{id}` and the 202 answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub status: JobState,
    pub documents: usize,
    pub processed: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub chunks: usize,
    pub errors: Vec<DocumentError>,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<u64>,
}

/// A document's outcome, one field of the job's outcomes hash.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A job's id: the same for the same tenant and request id, so every
/// replica of a tenant names the job alike and a replay finds it.
pub fn job_id(tenant: &str, request_id: &str) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x1b7e_04c2_93d5_4a6f_8e21_57c0_d9a3_6f18);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{tenant}\u{0}{request_id}").as_bytes()).to_string()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> CellError {
    CellError::QueueUnavailable(format!(
        "the ingestion queue is unavailable ({e}); retry, or ingest synchronously"
    ))
}

/// A cell's ingestion queue.
#[derive(Clone)]
pub struct JobQueue {
    redis: RedisConn,
    cell: String,
    timeout: Duration,
    /// Entries pending this long with another consumer are taken over.
    claim_idle: Duration,
    max_documents: usize,
}

impl JobQueue {
    pub fn new(
        redis: RedisConn,
        cell: &str,
        timeout: Duration,
        claim_idle: Duration,
        max_documents: usize,
    ) -> Self {
        Self {
            redis,
            cell: cell.to_owned(),
            timeout,
            claim_idle,
            max_documents,
        }
    }

    fn stream(&self) -> String {
        control_plane::model::ingest_stream(&self.cell)
    }

    fn job_key(&self, job: &str) -> String {
        format!("cn:{{{}}}:job:{job}", self.cell)
    }

    fn outcomes_key(&self, job: &str) -> String {
        format!("cn:{{{}}}:job:{job}:outcomes", self.cell)
    }

    async fn conn(&self) -> Result<CacheConn, CacheError> {
        self.redis.get().await
    }

    /// Queues `req` as a job of `tenant`; returns its status (that of the
    /// existing job when this request was queued before).
    pub async fn enqueue(
        &self,
        tenant: &str,
        request_id: &str,
        req: &IngestRequest,
    ) -> Result<JobStatus, CellError> {
        if req.documents.is_empty() {
            return Err(CellError::BadRequest("documents must not be empty".into()));
        }
        if req.documents.len() > self.max_documents {
            return Err(CellError::BadRequest(format!(
                "documents has {} entries; at most {} per asynchronous request",
                req.documents.len(),
                self.max_documents
            )));
        }
        let id = job_id(tenant, request_id);
        let body = serde_json::to_string(&req.documents)
            .map_err(|e| CellError::BadRequest(e.to_string()))?;
        let mut conn = self.conn().await.map_err(unavailable)?;
        let script = redis::Script::new(ENQUEUE);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.job_key(&id))
            .key(self.stream())
            .arg(&id)
            .arg(tenant)
            .arg(req.documents.len())
            .arg(now_secs())
            .arg(body)
            .arg(JOB_TTL.as_secs());
        let created: i64 = self
            .redis
            .bounded(invocation.invoke_async(&mut conn))
            .await
            .map_err(unavailable)?;
        if created == 1 {
            tracing::info!(%tenant, job = %id, documents = req.documents.len(), "ingestion job queued");
        }
        self.status(tenant, &id)
            .await?
            .ok_or_else(|| unavailable("the job vanished right after it was queued"))
    }

    /// The job's status, or `None` when `tenant` has no such job.
    pub async fn status(&self, tenant: &str, job: &str) -> Result<Option<JobStatus>, CellError> {
        let mut conn = self.conn().await.map_err(unavailable)?;
        let record: HashMap<String, String> = self
            .redis
            .bounded(conn.hgetall(self.job_key(job)))
            .await
            .map_err(unavailable)?;
        // Another tenant's job does not exist for this one.
        if record.get("tenant").map(String::as_str) != Some(tenant) {
            return Ok(None);
        }
        let outcomes: HashMap<usize, String> = self
            .redis
            .bounded(conn.hgetall(self.outcomes_key(job)))
            .await
            .map_err(unavailable)?;
        let number = |field: &str| record.get(field).and_then(|v| v.parse::<u64>().ok());
        let mut status = JobStatus {
            job_id: job.to_owned(),
            status: match record.get("state").map(String::as_str) {
                Some("running") => JobState::Running,
                Some("completed") => JobState::Completed,
                _ => JobState::Queued,
            },
            documents: number("documents").unwrap_or(0) as usize,
            processed: outcomes.len(),
            succeeded: 0,
            failed: 0,
            chunks: 0,
            errors: Vec::new(),
            created_at: number("created_at").unwrap_or(0),
            started_at: number("started_at"),
            completed_at: number("completed_at"),
        };
        for (index, raw) in outcomes {
            let Ok(outcome) = serde_json::from_str::<Outcome>(&raw) else {
                continue;
            };
            match outcome.error {
                Some(error) => {
                    status.failed += 1;
                    status.errors.push(DocumentError {
                        index,
                        id: outcome.id,
                        error,
                    });
                }
                None => {
                    status.succeeded += 1;
                    status.chunks += outcome.chunks.unwrap_or(0);
                }
            }
        }
        status.errors.sort_by_key(|e| e.index);
        Ok(Some(status))
    }

    /// Works the queue for ever: first the entries this cell left pending
    /// when it last stopped, then new ones, taking over entries that another
    /// worker left idle. Errors are logged and retried with backoff.
    pub async fn work(self: Arc<Self>, ingestor: Arc<Ingestor>) {
        let consumer = self.cell.clone();
        let mut backoff = Duration::from_millis(100);
        let mut group_ready = false;
        let mut own_pending_done = false;
        loop {
            let round = async {
                if !group_ready {
                    self.create_group().await?;
                    group_ready = true;
                }
                let entry = if own_pending_done {
                    match self.claim_idle(&consumer).await? {
                        Some(entry) => Some(entry),
                        None => self.read_new(&consumer).await?,
                    }
                } else {
                    let entry = self.read_own_pending(&consumer).await?;
                    own_pending_done = entry.is_none();
                    entry
                };
                if let Some(entry) = entry {
                    self.process(&ingestor, &consumer, entry).await?;
                }
                Ok::<_, CellError>(())
            };
            match round.await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // Redis may have lost the group (a restart without
                    // persistence): make it again next round.
                    group_ready = false;
                    // An entry that keeps failing must not hold up the new
                    // ones: it is taken up again once idle, like any other.
                    own_pending_done = true;
                    ingestor.metrics.ingest_job_errors.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "ingestion worker round failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn create_group(&self) -> Result<(), CellError> {
        let mut conn = self.conn().await.map_err(unavailable)?;
        let created: Result<(), CacheError> = self
            .redis
            .bounded(conn.xgroup_create_mkstream(self.stream(), GROUP, "0"))
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(CacheError::Redis(e)) if e.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn read_own_pending(&self, consumer: &str) -> Result<Option<Entry>, CellError> {
        let mut conn = self.conn().await.map_err(unavailable)?;
        let options = redis::streams::StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(1);
        let reply: Option<redis::streams::StreamReadReply> = self
            .redis
            .bounded(conn.xread_options(&[self.stream()], &["0"], &options))
            .await
            .map_err(unavailable)?;
        Ok(first_entry(reply))
    }

    async fn claim_idle(&self, consumer: &str) -> Result<Option<Entry>, CellError> {
        let mut conn = self.conn().await.map_err(unavailable)?;
        let reply: redis::streams::StreamAutoClaimReply = self
            .redis
            .bounded(conn.xautoclaim_options(
                self.stream(),
                GROUP,
                consumer,
                self.claim_idle.as_millis() as u64,
                "0-0",
                redis::streams::StreamAutoClaimOptions::default().count(1),
            ))
            .await
            .map_err(unavailable)?;
        Ok(reply.claimed.into_iter().next().map(Entry::parse))
    }

    async fn read_new(&self, consumer: &str) -> Result<Option<Entry>, CellError> {
        // A blocking read holds its connection: give it one of its own.
        let mut conn = self
            .redis
            .dedicated(READ_BLOCK)
            .await
            .map_err(unavailable)?;
        let options = redis::streams::StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(1)
            .block(READ_BLOCK.as_millis() as usize);
        let stream = [self.stream()];
        let read = conn.xread_options(&stream, &[">"], &options);
        let reply: Option<redis::streams::StreamReadReply> =
            tokio::time::timeout(READ_BLOCK + self.timeout, read)
                .await
                .map_err(|_| unavailable("a blocking read did not return"))?
                .map_err(unavailable)?;
        Ok(first_entry(reply))
    }

    /// Runs one job to completion, then acknowledges its entry.
    async fn process(
        &self,
        ingestor: &Ingestor,
        consumer: &str,
        entry: Entry,
    ) -> Result<(), CellError> {
        let mut conn = self.conn().await.map_err(unavailable)?;
        if entry.job.is_empty() || entry.tenant.is_empty() {
            // Cannot happen for entries this code queued; do not retry for ever.
            tracing::error!(entry = %entry.id, "ingestion queue entry without a job; dropping it");
            return self.finish(&entry, &mut conn).await;
        }
        let job_key = self.job_key(&entry.job);
        let outcomes_key = self.outcomes_key(&entry.job);
        let started: (bool, ()) = self
            .redis
            .bounded(
                redis::pipe()
                    .hset_nx(&job_key, "started_at", now_secs())
                    .hset(&job_key, "state", "running")
                    .query_async(&mut conn),
            )
            .await
            .map_err(unavailable)?;
        if started.0 {
            tracing::info!(tenant = %entry.tenant, job = %entry.job, "ingestion job started");
        }
        let done: HashSet<usize> = self
            .redis
            .bounded(conn.hkeys::<_, Vec<usize>>(&outcomes_key))
            .await
            .map_err(unavailable)?
            .into_iter()
            .collect();

        let documents: Vec<DocumentInput> = match serde_json::from_str(&entry.body) {
            Ok(d) => d,
            Err(e) => {
                // Cannot happen for entries this code queued; do not retry for ever.
                tracing::error!(job = %entry.job, error = %e, "unreadable ingestion job; dropping it");
                return self.finish(&entry, &mut conn).await;
            }
        };
        // Validation decides per document: the valid ones are still ingested.
        let mut seen = HashSet::new();
        let mut refused = Vec::new();
        let mut valid = Vec::new();
        for (i, doc) in documents.iter().enumerate() {
            match validate_document(i, doc, &mut seen) {
                Err(error) => refused.push((i, doc.id.clone(), error)),
                Ok(()) if !done.contains(&i) => valid.push(i),
                Ok(()) => {}
            }
        }
        let refused: Vec<(usize, String)> = refused
            .into_iter()
            .filter(|(i, _, _)| !done.contains(i))
            .map(|(i, id, error)| {
                let outcome = Outcome {
                    id,
                    chunks: None,
                    error: Some(error),
                };
                (i, serde_json::to_string(&outcome).unwrap_or_default())
            })
            .collect();
        if !refused.is_empty() {
            let _: () = self
                .redis
                .bounded(conn.hset_multiple(&outcomes_key, &refused))
                .await
                .map_err(unavailable)?;
        }

        let mut wrote_any = false;
        for group in valid.chunks(DOCUMENTS_PER_WRITE) {
            let batch: Vec<DocumentInput> = group.iter().map(|&i| documents[i].clone()).collect();
            // Durable on return; only then is the outcome recorded.
            let stored = ingestor.store(&entry.tenant, batch).await?;
            wrote_any = true;
            let outcomes: Vec<(usize, String)> = group
                .iter()
                .zip(stored)
                .map(|(&i, doc)| {
                    let outcome = Outcome {
                        id: doc.id,
                        chunks: Some(doc.chunks),
                        error: None,
                    };
                    (i, serde_json::to_string(&outcome).unwrap_or_default())
                })
                .collect();
            let _: () = self
                .redis
                .bounded(conn.hset_multiple(&outcomes_key, &outcomes))
                .await
                .map_err(unavailable)?;
            let _: () = self
                .redis
                .bounded(conn.expire(&outcomes_key, JOB_TTL.as_secs() as i64))
                .await
                .map_err(unavailable)?;
            // Still at work on it: keep other workers from taking it over.
            let _: redis::Value = self
                .redis
                .bounded(
                    redis::cmd("XCLAIM")
                        .arg(self.stream())
                        .arg(GROUP)
                        .arg(consumer)
                        .arg(0)
                        .arg(&entry.id)
                        .arg("JUSTID")
                        .query_async(&mut conn),
                )
                .await
                .map_err(unavailable)?;
        }
        // Also when redoing an entry whose writes all happened before a
        // crash: the bump may not have.
        if wrote_any || !done.is_empty() {
            ingestor.bump(&entry.tenant).await;
        }
        self.finish(&entry, &mut conn).await?;
        ingestor.metrics.ingest_jobs_completed.inc();
        tracing::info!(tenant = %entry.tenant, job = %entry.job, "ingestion job completed");
        Ok(())
    }

    /// Marks the job completed and acknowledges (and drops) its entry.
    async fn finish(&self, entry: &Entry, conn: &mut CacheConn) -> Result<(), CellError> {
        let job_key = self.job_key(&entry.job);
        let _: () = self
            .redis
            .bounded(
                redis::pipe()
                    .hset(&job_key, "state", "completed")
                    .hset(&job_key, "completed_at", now_secs())
                    .expire(&job_key, JOB_TTL.as_secs() as i64)
                    .xack(self.stream(), GROUP, &[&entry.id])
                    .xdel(self.stream(), &[&entry.id])
                    .ignore()
                    .query_async(conn),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

/// One queued job as read from the stream.
#[derive(Debug)]
struct Entry {
    id: String,
    job: String,
    tenant: String,
    body: String,
}

impl Entry {
    /// Missing fields read as empty; such an entry is dropped, not retried.
    fn parse(raw: redis::streams::StreamId) -> Self {
        let field = |name: &str| -> String {
            raw.map
                .get(name)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default()
        };
        Self {
            job: field("job"),
            tenant: field("tenant"),
            body: field("body"),
            id: raw.id,
        }
    }
}

fn first_entry(reply: Option<redis::streams::StreamReadReply>) -> Option<Entry> {
    reply?
        .keys
        .into_iter()
        .flat_map(|k| k.ids)
        .next()
        .map(Entry::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_per_tenant_and_request() {
        assert_eq!(job_id("acme", "r1"), job_id("acme", "r1"));
        assert_ne!(job_id("acme", "r1"), job_id("globex", "r1"));
        assert_ne!(job_id("acme", "r1"), job_id("acme", "r2"));
    }
}
