//! One contract, both vector backends: Qdrant's embedded engine always, and
//! an external Qdrant server through qdrant-client when `QDRANT_URL` names
//! its gRPC endpoint (e.g. `QDRANT_URL=http://127.0.0.1:6334`); without it
//! the server run says it was skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;

use cell::vector::server::QdrantServer;
use cell::vector::{
    ChunkRecord, DocumentRecord, IndexSettings, MetadataFilter, SearchQuery, VectorShard,
    VectorStore, lexical_model,
};
use serde_json::json;

const DIMS: usize = 16;

/// A unit vector pointing mostly along axis `axis`.
fn axis(axis: usize) -> Vec<f32> {
    let mut v = vec![0.05; DIMS];
    v[axis % DIMS] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn document(id: &str, metadata: serde_json::Value, texts: &[(&str, usize)]) -> DocumentRecord {
    DocumentRecord {
        document: id.into(),
        metadata,
        chunks: texts
            .iter()
            .map(|(text, a)| ChunkRecord {
                text: (*text).into(),
                vector: axis(*a),
            })
            .collect(),
    }
}

fn query(a: usize, text: Option<&str>, filter: serde_json::Value) -> SearchQuery {
    SearchQuery {
        vector: axis(a),
        text: text.map(str::to_owned),
        limit: 5,
        score_floor: Some(0.5),
        filter: MetadataFilter::parse(&filter).unwrap(),
        exact: false,
    }
}

async fn contract(store: Arc<dyn VectorStore>, prefix: &str) {
    let acme = format!("{prefix}acme");
    let globex = format!("{prefix}globex");
    let counts = store
        .replace_documents(
            acme.clone(),
            vec![
                document(
                    "refunds",
                    json!({"lang": "en", "year": 2024}),
                    &[("Refunds within 30 days.", 0), ("Gift cards are final.", 1)],
                ),
                document(
                    "codes",
                    json!({"lang": "de", "year": 2021}),
                    &[("Error LX-1042 means the disk is full.", 2)],
                ),
            ],
        )
        .await
        .unwrap();
    assert_eq!(counts, [2, 1]);
    store
        .replace_documents(
            globex.clone(),
            vec![document(
                "refunds",
                json!({}),
                &[("Globex never refunds.", 0)],
            )],
        )
        .await
        .unwrap();

    // Tenants see only their own chunks.
    let hits = store
        .search(acme.clone(), query(0, None, json!({})))
        .await
        .unwrap();
    assert_eq!(hits[0].document_id, "refunds");
    assert_eq!(hits[0].chunk, 0);
    assert!(hits.iter().all(|h| !h.text.contains("Globex")));
    let hits = store
        .search(globex.clone(), query(0, None, json!({})))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(store.count(acme.clone()).await.unwrap(), 3);

    // Metadata filters and hybrid retrieval.
    let hits = store
        .search(acme.clone(), query(2, None, json!({"lang": "en"})))
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document_id == "refunds"), "{hits:?}");
    let hits = store
        .search(acme.clone(), query(2, None, json!({"year": {"lt": 2022}})))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].document_id, "codes");
    let hits = store
        .search(
            acme.clone(),
            query(0, Some("what does LX-1042 mean?"), json!({})),
        )
        .await
        .unwrap();
    assert!(hits.iter().any(|h| h.document_id == "codes"), "{hits:?}");

    // Re-ingest shrinks, delete removes, and the tenant round-trips.
    let counts = store
        .replace_documents(
            acme.clone(),
            vec![document(
                "refunds",
                json!({}),
                &[("Refunds within 14 days.", 0)],
            )],
        )
        .await
        .unwrap();
    assert_eq!(counts, [1]);
    assert_eq!(store.count(acme.clone()).await.unwrap(), 2);
    assert_eq!(
        store
            .delete_document(acme.clone(), "codes".into())
            .await
            .unwrap(),
        1
    );
    let mut exported = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = store.export_page(acme.clone(), after, 1).await.unwrap();
        exported.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].text, "Refunds within 14 days.");
    assert_eq!(exported[0].vector.len(), DIMS);
    assert_eq!(store.delete_tenant(acme.clone()).await.unwrap(), 1);
    assert_eq!(store.count(acme.clone()).await.unwrap(), 0);
    assert_eq!(store.import(acme.clone(), exported).await.unwrap(), 1);
    assert_eq!(store.count(acme.clone()).await.unwrap(), 1);
    assert_eq!(store.count(globex.clone()).await.unwrap(), 1);
}

#[tokio::test]
async fn the_embedded_engine_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let shard = VectorShard::open(dir.path(), DIMS).unwrap();
    contract(Arc::new(shard), "").await;
}

#[tokio::test]
async fn a_qdrant_server_keeps_the_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        println!("SKIPPED: set QDRANT_URL to a Qdrant server's gRPC endpoint to run this test");
        return;
    };
    let collection = format!("cellnet-test-{}", std::process::id());
    let server = QdrantServer::connect(
        &url,
        std::env::var("QDRANT_API_KEY").ok(),
        &collection,
        DIMS,
        IndexSettings::default(),
        Arc::new(lexical_model().unwrap()),
    )
    .await
    .unwrap();
    contract(Arc::new(server), "run-").await;
}
