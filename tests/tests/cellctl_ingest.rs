//! `cellctl ingest` uploads a folder of files through the router: text and
//! Markdown files as documents named by their paths, JSON and JSON lines as
//! document objects; bad files are reported, the rest still arrive.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_ingested_and_bad_files_are_reported() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("nested")).unwrap();
    std::fs::write(
        docs.join("shipping.md"),
        "# Shipping\n\nOrders ship from our warehouse in Lyon.",
    )
    .unwrap();
    std::fs::write(
        docs.join("nested/refunds.txt"),
        "Refunds are accepted within 30 days of purchase.",
    )
    .unwrap();
    std::fs::write(
        docs.join("faq.jsonl"),
        "{\"id\": \"hours\", \"text\": \"The support desk opens at nine.\"}\n{\"id\": \"phone\", \"text\": \"Call us on weekdays.\"}\n",
    )
    .unwrap();
    std::fs::write(docs.join("broken.json"), "{\"title\": \"no text\"}").unwrap();
    std::fs::write(docs.join("ignored.png"), [0u8, 1, 2]).unwrap();

    let out = std::process::Command::new(e2e::process::binary("cellctl").unwrap())
        .arg("ingest")
        .arg(&docs)
        .args(["--router-url", &cluster.router.url, "--batch", "2"])
        .env("API_KEY", &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a bad file makes the run fail: {stdout}"
    );
    assert!(stdout.contains("ingested 4 documents"), "{stdout}");
    assert!(stdout.contains("broken.json"), "{stdout}");

    let (status, count, _) = cluster.get(&key, "/v1/points/count").await.unwrap();
    assert_eq!(status, 200);
    assert!(count["points"].as_u64().unwrap() >= 4, "{count}");
    let (_, answer, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert!(
        answer["citations"][0]["document_id"]
            .as_str()
            .unwrap()
            .ends_with("shipping.md"),
        "{answer}"
    );
}
