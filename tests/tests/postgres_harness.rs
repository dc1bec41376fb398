//! The harness's PostgreSQL: a server of its own on a free port, with the
//! pgvector extension and the seed's index on a table partitioned by time,
//! gone after the drop.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::postgres::Postgres;

#[test]
fn a_private_server_with_pgvector_and_a_partitioned_hnsw_index() {
    let pg = Postgres::start().unwrap();
    assert_ne!(pg.port, 5432, "never the machine's own server");
    assert!(
        pg.psql("SHOW server_version").unwrap().starts_with("16."),
        "{}",
        pg.log()
    );
    pg.psql("CREATE EXTENSION vector").unwrap();
    assert_eq!(
        pg.psql("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .unwrap(),
        "0.6.2"
    );
    // The seed's shape: embeddings partitioned by creation time, an HNSW
    // index (m = 16, ef_construction = 64, cosine) on the parent that every
    // partition gets.
    pg.psql(
        "CREATE TABLE embeddings (id bigint, created_at timestamptz NOT NULL, embedding vector(3), \
           PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at);
         CREATE TABLE embeddings_2026_11 PARTITION OF embeddings
           FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
         CREATE INDEX ON embeddings USING hnsw (embedding vector_cosine_ops)
           WITH (m = 16, ef_construction = 64);
         CREATE TABLE embeddings_2026_12 PARTITION OF embeddings
           FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
         INSERT INTO embeddings VALUES
           (1, '2026-11-05', '[1,0,0]'), (2, '2026-12-05', '[0,1,0]'), (3, '2026-12-06', '[0.9,0.1,0]');",
    )
    .unwrap();
    let hnsw = pg
        .psql(
            "SELECT tablename FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%' ORDER BY tablename",
        )
        .unwrap();
    assert_eq!(
        hnsw, "embeddings\nembeddings_2026_11\nembeddings_2026_12",
        "the parent's index and one on each partition"
    );
    let nearest = pg
        .psql("SELECT id FROM embeddings ORDER BY embedding <=> '[1,0,0]' LIMIT 2")
        .unwrap();
    assert_eq!(nearest, "1\n3");
    // A wrong statement is an error, not an empty answer.
    assert!(pg.psql("SELECT nothing FROM nowhere").is_err());

    let port = pg.port;
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stops with its handle"
    );
}
