//! The vector shard survives `kill -9`: every write the cell acknowledged
//! (ingested documents, a re-ingested one, a deleted one) is there, exactly,
//! when the cell comes back on the same data dir.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;

use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::{Value, json};

/// The tenant's points as document id → chunk count.
async fn documents(cluster: &Cluster, key: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for point in cluster.export_points(key).await.unwrap() {
        *out.entry(point["document_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_cell() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();

    for batch in 0..5 {
        let docs: Vec<Value> = (0..10)
            .map(|i| {
                let n = batch * 10 + i;
                json!({"id": format!("doc-{n:02}"), "text": format!(
                    "Bulletin {n}. The ferry to island {n} leaves pier {} at {} o'clock.",
                    n % 7, 6 + n % 12
                )})
            })
            .collect();
        let (status, body, _) = cluster
            .post(&key, "/v1/documents", &json!({"documents": docs}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // A re-ingest that grows a document, and a delete.
    let long = "The harbour office opens at dawn. ".repeat(120);
    let (status, body, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "doc-00", "text": long}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let grown = body["documents"][0]["chunks"].as_u64().unwrap() as usize;
    assert!(grown > 1);
    let resp = cluster
        .http
        .delete(format!("{}/v1/documents/doc-01", cluster.router.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let before = documents(&cluster, &key).await;
    assert_eq!(before.len(), 49);
    assert_eq!(before["doc-00"], grown);
    assert!(!before.contains_key("doc-01"));

    // No graceful shutdown, no flush on exit.
    cluster.cell_mut("cell-a").unwrap().kill();
    cluster.restart_cell("cell-a").unwrap();
    eventually(30, "the router reaches the restarted cell", || async {
        matches!(cluster.get(&key, "/v1/points/count").await, Ok((200, _, _)))
    })
    .await;

    assert_eq!(documents(&cluster, &key).await, before);
    let (status, answer, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "When does the ferry to island 37 leave?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["citations"][0]["document_id"], "doc-37", "{answer}");
}
