//! Streamed chat completions end to end: tokens relayed from the provider
//! as they come, failover until the first token, an explicit error event
//! when a provider breaks off after it, and streamed answers cached like
//! whole ones. Against the simulator's Azure OpenAI and Vertex AI streams.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

async fn tenant_with_documents(cluster: &Cluster, id: &str) -> String {
    let shipping = json!({"documents": [{"id": "shipping", "text": SHIPPING}]});
    cluster.tenant_with_documents(id, &shipping).await.unwrap()
}

/// A streamed chat completion: (status, data payloads).
async fn stream(cluster: &Cluster, key: &str, question: &str) -> (u16, Vec<String>) {
    stream_model(cluster, key, "gpt-4o-mini", question).await
}

async fn stream_model(
    cluster: &Cluster,
    key: &str,
    model: &str,
    question: &str,
) -> (u16, Vec<String>) {
    let response = cluster
        .http
        .post(format!("{}/v1/chat/completions", cluster.router.url))
        .bearer_auth(key)
        .json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["content-type"], "text/event-stream");
    }
    let text = response.text().await.unwrap_or_default();
    let events = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    (status, events)
}

fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn last_cellnet(chunks: &[Value]) -> Value {
    chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .map(|c| c["cellnet"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stream_from_the_provider_and_the_answer_is_cached() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = tenant_with_documents(&cluster, "acme").await;
    let (status, events) = stream(&cluster, &key, "Where do orders ship from?").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&events);
    // The simulator sends a few words per chunk: several content chunks arrived.
    let content_chunks = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(content_chunks >= 3, "{events:?}");
    let streamed = text_of(&chunks);
    assert!(streamed.contains("Lyon"), "{streamed}");
    let ext = last_cellnet(&chunks);
    assert_eq!(ext["cache"], "miss", "{ext}");
    assert_eq!(ext["provider"], "azure-eastus");
    assert_eq!(ext["citations"][0]["document_id"], "shipping");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["total_tokens"].as_u64().unwrap() > 0, "{usage}");

    // Stored like a whole answer: asked again, it is a cache hit with the same text.
    let (status, body, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["cache"], "hit", "{body}");
    assert_eq!(body["answer"], streamed.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_before_the_first_token_and_an_explicit_error_after_it() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = tenant_with_documents(&cluster, "globex").await;

    // Down before the first token: the next region streams instead.
    cluster
        .set_faults("azure-eastus", &json!({"outage": true}))
        .await
        .unwrap();
    let (status, events) = stream(&cluster, &key, "Where do orders ship from?").await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let ext = last_cellnet(&chunks(&events));
    assert_eq!(ext["provider"], "azure-westeurope", "{ext}");
    assert_eq!(ext["fallback"], "next_region", "{ext}");

    // Cut after its first chunks: the stream ends with an error event and
    // no [DONE]; nothing is cached.
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster
            .set_faults(region, &json!({"cut_after_chunks": 2}))
            .await
            .unwrap();
    }
    let (status, events) = stream(&cluster, &key, "How long does standard delivery take?").await;
    assert_eq!(status, 200);
    assert_ne!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    assert!(!text_of(&chunks(&events[..events.len() - 1])).is_empty());
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster.set_faults(region, &json!({})).await.unwrap();
    }
    let (_, body, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does standard delivery take?"}),
        )
        .await
        .unwrap();
    assert_eq!(body["cache"], "miss", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_streams_through_stream_generate_content() {
    let cluster = Cluster::start(ClusterOptions {
        providers: Some(json!([
            {"kind": "vertex_ai", "name": "vertex-us-central1", "region": "us-central1",
             "endpoint": "{sim}/vertex-us-central1", "project": "cellnet-test",
             "location": "us-central1", "model": "gemini-2.0-flash",
             "auth": {"access_token_env": "TEST_PROVIDER_KEY"}, "timeout": "5s"}
        ])),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = tenant_with_documents(&cluster, "initech").await;
    let (status, events) = stream_model(
        &cluster,
        &key,
        "gemini-2.0-flash",
        "Where do orders ship from?",
    )
    .await;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks = chunks(&events);
    assert!(text_of(&chunks).contains("Lyon"));
    let ext = last_cellnet(&chunks);
    assert_eq!(ext["provider"], "vertex-us-central1", "{ext}");
    assert_eq!(chunks[0]["model"], "gemini-2.0-flash");
    assert!(
        chunks.last().unwrap()["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}
