//! A cell that embeds through a provider's embeddings API instead of the
//! local model: ingestion, retrieval and the semantic cache all run on the
//! remote vectors. And the embedding calls of each client against the
//! simulator.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use cell::llm::AnyProvider;
use cell::llm::oauth::{OAuthTokens, TokenSource};
use cell::llm::openai_compatible::OpenAiCompatible;
use cell::llm::vertex::VertexAi;
use e2e::{Cluster, ClusterOptions};
use serde_json::json;

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";
const REFUNDS: &str = "Refunds. Customers can request a full refund within 30 days of purchase.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_embedding_with_azure_openai_answers_from_its_documents() {
    let cluster = Cluster::start(ClusterOptions {
        cell_settings: json!({"embedding": {"remote": {
            "kind": "azure_openai", "name": "azure-embeddings", "region": "eastus",
            "endpoint": "{sim}/azure-eastus", "deployment": "text-embedding-3-small",
            "api_key_env": "TEST_PROVIDER_KEY"
        }}}),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();
    let before = cluster.provider_requests("azure-eastus").await.unwrap();
    let (status, body, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}, {"id": "refunds", "text": REFUNDS}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let after_ingest = cluster.provider_requests("azure-eastus").await.unwrap();
    assert!(after_ingest > before, "ingestion embedded remotely");

    let (status, answer, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["citations"][0]["document_id"], "shipping",
        "{answer}"
    );
    assert!(answer["answer"].as_str().unwrap().contains("Lyon"));
    let (_, again, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert_eq!(again["cache"], "hit", "{again}");

    // The OpenAI-compatible embeddings route uses the same embedder, under its name.
    let (status, embedded, _) = cluster
        .post(
            &key,
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "refund policy"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{embedded}");
    assert_eq!(
        embedded["data"][0]["embedding"].as_array().unwrap().len(),
        384
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_embeds_in_its_wire_format() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let sim = cluster.sim.url.clone();
    let http = cell::llm::http::ProviderHttp::new().unwrap();
    let vertex = AnyProvider::Vertex(std::sync::Arc::new(VertexAi {
        name: "vertex-us-central1".into(),
        region: "us-central1".into(),
        endpoint: format!("{sim}/vertex-us-central1"),
        project: "p".into(),
        location: "us-central1".into(),
        model: "text-embedding-005".into(),
        auth: OAuthTokens::new(TokenSource::Static(common::config::Secret::new(
            e2e::cluster::PROVIDER_KEY,
        ))),
        timeout: Duration::from_secs(5),
        http: http.clone(),
    }));
    let openai = AnyProvider::OpenAiCompatible(std::sync::Arc::new(OpenAiCompatible {
        name: "openai-local".into(),
        region: "local".into(),
        base_url: format!("{sim}/azure-eastus/v1"),
        model: "text-embedding-3-small".into(),
        api_key: Some(common::config::Secret::new(e2e::cluster::PROVIDER_KEY)),
        timeout: Duration::from_secs(5),
        http,
    }));
    for provider in [vertex, openai] {
        let texts = [
            "orders ship from Lyon",
            "where do orders ship from",
            "refund policy",
        ];
        let v = provider.embed(&texts, 256).await.unwrap();
        assert_eq!(v.len(), 3, "{}", provider.name());
        assert!(v.iter().all(|e| e.len() == 256));
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]), "{}", provider.name());
    }
}
