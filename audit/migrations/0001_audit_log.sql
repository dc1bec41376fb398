-- One row for every answered request, partitioned by month of created_at.
-- Partitions are created ahead of time and dropped past the retention by
-- audit::partitions; a row whose month has no partition is refused, not lost
-- silently (the writer keeps it and counts it as delayed).
CREATE TABLE audit_log (
    created_at      timestamptz      NOT NULL,
    request_id      text             NOT NULL,
    tenant          text             NOT NULL,
    cell            text             NOT NULL,
    route           text             NOT NULL,
    status          smallint         NOT NULL,
    latency_ms      real             NOT NULL,
    -- SHA-256 of the question as asked, hex; the text only where the tenant
    -- opted in.
    question_sha256 text,
    question        text,
    -- hit | miss | bypass, and the similarity of a vector-tier hit.
    cache_outcome   text,
    similarity      real,
    provider        text,
    region          text,
    model           text,
    fallback        text,
    tokens_in       integer          NOT NULL DEFAULT 0,
    tokens_out      integer          NOT NULL DEFAULT 0,
    cost_usd        double precision NOT NULL DEFAULT 0,
    groundedness    real,
    cited_documents text[]           NOT NULL DEFAULT '{}',
    -- Written again after a retry, the same row is one row; also the index
    -- a request id is looked up by.
    PRIMARY KEY (request_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX audit_log_tenant_created_at ON audit_log (tenant, created_at);
