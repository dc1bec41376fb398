//! A tenant's points: counted, exported as JSON lines (vectors and payload,
//! streamed), deleted all at once, and imported back, through the router and
//! on every replica, never touching another tenant's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";
const REFUNDS: &str = "Refunds. Customers can request a full refund within 30 days of purchase. \
Gift cards cannot be refunded.";

async fn export(cluster: &Cluster, key: &str) -> String {
    let resp = cluster
        .http
        .get(format!("{}/v1/points", cluster.router.url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    resp.text().await.unwrap()
}

async fn count(cluster: &Cluster, key: &str) -> u64 {
    let (status, body, _) = cluster.get(key, "/v1/points/count").await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["points"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_delete_all_and_import_round_trip_within_one_tenant() {
    let cluster = Cluster::start(ClusterOptions::two_regions()).await.unwrap();
    let acme = cluster.create_tenant("acme").await.unwrap();
    let globex = cluster.create_tenant("globex").await.unwrap();
    cluster.wait_for_tenant(&acme).await.unwrap();
    cluster.wait_for_tenant(&globex).await.unwrap();
    let (status, _, _) = cluster
        .post(
            &acme,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING, "metadata": {"team": "ops"}}, {"id": "refunds", "text": REFUNDS}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = cluster
        .post(
            &globex,
            "/v1/documents",
            &json!({"documents": [{"id": "other", "text": "Globex builds doomsday devices."}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    let stored = count(&cluster, &acme).await;
    assert!(stored >= 2);
    let lines = export(&cluster, &acme).await;
    let points: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(points.len() as u64, stored);
    assert!(
        points
            .iter()
            .all(|p| p["vector"].as_array().unwrap().len() == 384)
    );
    assert!(points.iter().any(|p| p["metadata"]["team"] == "ops"));
    assert!(!lines.contains("doomsday"), "another tenant's text leaked");

    // Delete everything: on every replica, and nothing of globex.
    let resp = cluster
        .http
        .delete(format!("{}/v1/documents", cluster.router.url))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-cellnet-replicas"]
            .to_str()
            .unwrap()
            .split(',')
            .count(),
        2
    );
    assert_eq!(count(&cluster, &acme).await, 0);
    assert_eq!(count(&cluster, &globex).await, 1);
    let (_, answer, _) = cluster
        .post(
            &acme,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert!(
        answer["citations"].as_array().unwrap().is_empty(),
        "{answer}"
    );

    // Import the export back (as a move between cells would), twice: idempotent.
    for _ in 0..2 {
        let resp = cluster
            .http
            .post(format!("{}/v1/points", cluster.router.url))
            .bearer_auth(&acme)
            .header("content-type", "application/x-ndjson")
            .body(lines.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(count(&cluster, &acme).await, stored);
    let (_, answer, _) = cluster
        .post(
            &acme,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert_eq!(
        answer["citations"][0]["document_id"], "shipping",
        "{answer}"
    );

    // A bad line refuses the whole import, naming the line.
    let resp = cluster
        .http
        .post(format!("{}/v1/points", cluster.router.url))
        .bearer_auth(&globex)
        .body(format!(
            "{}\n{{\"document_id\": \"x\"}}\n",
            lines.lines().next().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 2"),
        "{body}"
    );
    assert_eq!(count(&cluster, &globex).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_succeeds_when_one_replica_already_lacks_the_document() {
    let cluster = Cluster::start(ClusterOptions::two_regions()).await.unwrap();
    let acme = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&acme).await.unwrap();
    let docs = json!({"documents": [{"id": "shipping", "text": SHIPPING}]});
    let (status, body, _) = cluster.post(&acme, "/v1/documents", &docs).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // One replica loses the document behind the router's back, as a move's
    // destination lacks what the copy has not reached yet.
    let key = cluster.cell_auth_key().await.unwrap();
    let gone = cluster
        .send_signed(
            reqwest::Method::DELETE,
            cluster.cell_url("cell-b").unwrap(),
            &key,
            ("acme", "behind-the-back"),
            "/v1/documents/shipping",
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(gone.status(), 200);

    let delete = || {
        cluster
            .http
            .delete(format!("{}/v1/documents/shipping", cluster.router.url))
            .bearer_auth(&acme)
            .send()
    };
    let resp = delete().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    for cell in ["cell-a", "cell-b"] {
        assert_eq!(cluster.points_on(cell, "acme").await.unwrap(), 0, "{cell}");
    }
    // Now no replica holds it: the answer is 404, with a body that says so.
    let resp = delete().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shipping"),
        "{body}"
    );
}
