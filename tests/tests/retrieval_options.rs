//! Retrieval options through the router: metadata filters on a query, and
//! hybrid (BM25 + vector) retrieval switched on for one tenant, over the
//! evaluation corpus in `cell/tests/data/retrieval/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::{Value, json};

const CORPUS: &str = include_str!("../../cell/tests/data/retrieval/corpus.jsonl");

/// The corpus as one ingestion batch; each document's `section` is the
/// first word of its id (`error`, `retention`, `restore`, …).
fn corpus() -> Value {
    let documents: Vec<Value> = CORPUS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let d: Value = serde_json::from_str(l).unwrap();
            let id = d["id"].as_str().unwrap();
            json!({
                "id": id,
                "text": format!("{}. {}", d["title"].as_str().unwrap(), d["text"].as_str().unwrap()),
                "metadata": {"section": id.split('-').next().unwrap()}
            })
        })
        .collect();
    json!({ "documents": documents })
}

/// The document cited first for `question` with one passage, asked fresh.
async fn top_document(cluster: &Cluster, key: &str, question: &str) -> String {
    assert!(cluster.purge_cache(key).await.unwrap().is_success());
    let (status, body, _) = cluster
        .post(key, "/v1/query", &json!({"query": question, "top_k": 1}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    body["citations"][0]["document_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_narrow_retrieval_and_hybrid_finds_what_vectors_rank_lower() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let vectors = cluster
        .tenant_with_documents("vectors", &corpus())
        .await
        .unwrap();
    let hybrid = cluster
        .tenant_with_documents("hybrid", &corpus())
        .await
        .unwrap();

    // A filter keeps retrieval to matching documents.
    let (status, body, _) = cluster
        .post(
            &vectors,
            "/v1/query",
            &json!({"query": "What does error LX-1042 mean?", "top_k": 5,
                    "filter": {"section": "error"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let cited: Vec<&str> = body["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["document_id"].as_str().unwrap())
        .collect();
    assert!(!cited.is_empty(), "{body}");
    assert!(cited.iter().all(|d| d.starts_with("error-")), "{body}");
    assert_eq!(body["cache"], "miss", "filtered questions bypass the cache");
    let (status, body, _) = cluster
        .post(
            &vectors,
            "/v1/query",
            &json!({"query": "What does error LX-1042 mean?", "filter": {"section": "nothing"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["citations"].as_array().unwrap().is_empty(), "{body}");
    let (status, body, _) = cluster
        .post(
            &vectors,
            "/v1/query",
            &json!({"query": "What does error LX-1042 mean?", "filter": {"section": 1.5}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("filter.section"),
        "{body}"
    );

    // Hybrid retrieval, on for one tenant only.
    let summary = cluster
        .update_tenant("hybrid", &json!({"hybrid_retrieval": true}))
        .await
        .unwrap();
    assert_eq!(summary["hybrid_retrieval"], true, "{summary}");
    let questions = [
        (
            "How long does the Basic plan keep files after someone deletes them?",
            "retention-basic",
        ),
        (
            "Clients are getting LX-3050 every time they save.",
            "error-lx-3050",
        ),
        (
            "An Outlook PST file keeps failing with LX-1047.",
            "error-lx-1047",
        ),
    ];
    eventually(
        15,
        "the cell retrieves with BM25 for the hybrid tenant",
        || async { top_document(&cluster, &hybrid, questions[0].0).await == questions[0].1 },
    )
    .await;
    let mut vector_misses = 0;
    for (question, expected) in questions {
        assert_eq!(
            top_document(&cluster, &hybrid, question).await,
            expected,
            "{question}"
        );
        if top_document(&cluster, &vectors, question).await != expected {
            vector_misses += 1;
        }
    }
    assert!(
        vector_misses > 0,
        "vector-only retrieval ranked every one of these first too; the test shows nothing"
    );
}
