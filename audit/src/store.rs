//! Rows of the audit log: written in batches (one multi-row statement; a
//! row already there, from a retried batch, is skipped), one read back by
//! request id, and usage totals.

use std::time::SystemTime;

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::AuditError;

/// One answered request.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub created_at: SystemTime,
    pub request_id: String,
    pub tenant: String,
    pub cell: String,
    pub route: String,
    pub status: i16,
    pub latency_ms: f32,
    /// SHA-256 of the question, hex.
    pub question_sha256: Option<String>,
    /// The question itself, only for tenants that opted in.
    pub question: Option<String>,
    /// `hit`, `miss` or `bypass`.
    pub cache_outcome: Option<String>,
    pub similarity: Option<f32>,
    pub provider: Option<String>,
    pub region: Option<String>,
    pub model: Option<String>,
    pub fallback: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub cost_usd: f64,
    pub groundedness: Option<f32>,
    pub cited_documents: Vec<String>,
}

const COLUMNS: &str = "created_at, request_id, tenant, cell, route, status, latency_ms, \
    question_sha256, question, cache_outcome, similarity, provider, region, model, fallback, \
    tokens_in, tokens_out, cost_usd, groundedness, cited_documents";
const PER_ROW: usize = 20;
/// Rows per statement: PostgreSQL takes at most 65,535 parameters.
const MAX_ROWS: usize = 65_535 / PER_ROW;

impl AuditRow {
    fn params(&self) -> [&(dyn ToSql + Sync); PER_ROW] {
        [
            &self.created_at,
            &self.request_id,
            &self.tenant,
            &self.cell,
            &self.route,
            &self.status,
            &self.latency_ms,
            &self.question_sha256,
            &self.question,
            &self.cache_outcome,
            &self.similarity,
            &self.provider,
            &self.region,
            &self.model,
            &self.fallback,
            &self.tokens_in,
            &self.tokens_out,
            &self.cost_usd,
            &self.groundedness,
            &self.cited_documents,
        ]
    }

    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            created_at: row.try_get(0)?,
            request_id: row.try_get(1)?,
            tenant: row.try_get(2)?,
            cell: row.try_get(3)?,
            route: row.try_get(4)?,
            status: row.try_get(5)?,
            latency_ms: row.try_get(6)?,
            question_sha256: row.try_get(7)?,
            question: row.try_get(8)?,
            cache_outcome: row.try_get(9)?,
            similarity: row.try_get(10)?,
            provider: row.try_get(11)?,
            region: row.try_get(12)?,
            model: row.try_get(13)?,
            fallback: row.try_get(14)?,
            tokens_in: row.try_get(15)?,
            tokens_out: row.try_get(16)?,
            cost_usd: row.try_get(17)?,
            groundedness: row.try_get(18)?,
            cited_documents: row.try_get(19)?,
        })
    }
}

/// Writes `rows`; returns how many were new. All or none: a row whose month
/// has no partition fails the batch, which the caller keeps to try again.
pub async fn insert(client: &mut Client, rows: &[AuditRow]) -> Result<u64, AuditError> {
    let tx = client.transaction().await?;
    let mut inserted = 0;
    for chunk in rows.chunks(MAX_ROWS) {
        let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..PER_ROW {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i * PER_ROW + c + 1));
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flat_map(AuditRow::params).collect();
        inserted += tx.execute(&sql, &params).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// The row of one request, if it was written.
pub async fn get(client: &Client, request_id: &str) -> Result<Option<AuditRow>, AuditError> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM audit_log WHERE request_id = $1 LIMIT 1"),
            &[&request_id],
        )
        .await?;
    Ok(row.as_ref().map(AuditRow::from_row).transpose()?)
}

/// How usage totals are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The UTC day, `2026-12-08`.
    Day,
    Model,
    Provider,
    Tenant,
}

impl GroupBy {
    fn expression(self) -> &'static str {
        match self {
            GroupBy::Day => "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            GroupBy::Model => "coalesce(model, '-')",
            GroupBy::Provider => "coalesce(provider, '-')",
            GroupBy::Tenant => "tenant",
        }
    }
}

/// Totals over one group of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub group: String,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    /// Share of rows answered from the cache.
    pub cache_hit_share: f64,
    /// Over the rows that have a groundedness.
    pub mean_groundedness: Option<f64>,
}

/// Usage since `since`, of one tenant or of all, grouped `by`, in group order.
pub async fn usage(
    client: &Client,
    tenant: Option<&str>,
    since: SystemTime,
    by: GroupBy,
) -> Result<Vec<Usage>, AuditError> {
    let sql = format!(
        "SELECT {g} AS grp, count(*), coalesce(sum(tokens_in), 0)::bigint,
                coalesce(sum(tokens_out), 0)::bigint, coalesce(sum(cost_usd), 0),
                avg(CASE WHEN cache_outcome = 'hit' THEN 1.0 ELSE 0.0 END)::float8,
                avg(groundedness)::float8
           FROM audit_log
          WHERE created_at >= $1 AND ($2::text IS NULL OR tenant = $2)
          GROUP BY grp ORDER BY grp",
        g = by.expression()
    );
    let rows = client.query(&sql, &[&since, &tenant]).await?;
    rows.iter()
        .map(|r| {
            Ok(Usage {
                group: r.try_get(0)?,
                requests: r.try_get(1)?,
                tokens_in: r.try_get(2)?,
                tokens_out: r.try_get(3)?,
                cost_usd: r.try_get(4)?,
                cache_hit_share: r.try_get::<_, Option<f64>>(5)?.unwrap_or(0.0),
                mean_groundedness: r.try_get(6)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(AuditError::from)
}
