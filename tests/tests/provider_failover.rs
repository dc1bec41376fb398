//! A cell whose providers span three wire formats — Azure OpenAI, Vertex AI
//! and an OpenAI-compatible server — moves from one to the next as regions
//! fail, and names the one that answered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions};
use serde_json::json;

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_move_across_clouds_as_regions_fail() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        providers: Some(json!([
            {"kind": "azure_openai", "name": "azure-eastus", "region": "eastus",
             "endpoint": "{sim}/azure-eastus", "deployment": "gpt-4o-mini",
             "api_key_env": "TEST_PROVIDER_KEY", "timeout": "5s"},
            {"kind": "vertex_ai", "name": "vertex-us-central1", "region": "us-central1",
             "endpoint": "{sim}/vertex-us-central1", "project": "cellnet-test",
             "location": "us-central1", "model": "gemini-2.0-flash",
             "auth": {"access_token_env": "TEST_PROVIDER_KEY"}, "timeout": "5s"},
            {"kind": "openai_compatible", "name": "openai-local", "region": "local",
             "base_url": "{sim}/openai-local/v1", "model": "llama-3.1-8b-instruct",
             "api_key_env": "TEST_PROVIDER_KEY", "timeout": "5s"}
        ])),
        ..ClusterOptions::default()
    })
    .await?;
    let key = cluster.create_tenant("acme").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);

    let ask = |q: &'static str| {
        let cluster = &cluster;
        let key = key.clone();
        async move {
            let (status, body, _) = cluster
                .post(&key, "/v1/query", &json!({"query": q}))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let first = ask("Where do orders ship from?").await;
    assert_eq!(first["provider"], "azure-eastus", "{first}");
    // Checked against its passages: grounded, each sentence with its source.
    assert!(first["groundedness"].as_f64().unwrap() >= 0.6, "{first}");
    assert!(first.get("low_groundedness").is_none(), "{first}");
    assert_eq!(
        first["sentences"][0]["citations"][0]["document_id"], "shipping",
        "{first}"
    );
    // Priced model: the answer carries its cost at the configured prices.
    let usage = &first["usage"];
    let expected = (usage["prompt_tokens"].as_f64().unwrap() * 0.15
        + usage["completion_tokens"].as_f64().unwrap() * 0.6)
        / 1e6;
    let cost = first["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && (cost - expected).abs() < 1e-12, "{first}");
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.cells[0].1.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("cellnet_tenant_cost_usd_total{tenant=\"acme\",cell=\"cell-a\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "cellnet_tenant_tokens_total{tenant=\"acme\",model=\"gpt-4o-mini\",kind=\"prompt\"}"
        ),
        "{metrics}"
    );

    cluster
        .set_faults("azure-eastus", &json!({"outage": true}))
        .await?;
    let second = ask("How long does standard delivery take?").await;
    assert_eq!(second["provider"], "vertex-us-central1", "{second}");
    assert_eq!(second["region"], "us-central1");
    assert_eq!(second["model"], "gemini-2.0-flash");
    assert!(
        second["answer"]
            .as_str()
            .unwrap()
            .contains("three to five days"),
        "{second}"
    );
    assert_eq!(second["citations"][0]["document_id"], "shipping");
    assert_eq!(second["fallback"], "model_cascade", "{second}");
    // No price configured for this model: no cost claimed.
    assert!(second.get("cost_usd").is_none(), "{second}");

    cluster
        .set_faults("vertex-us-central1", &json!({"throttle_rate": 1.0}))
        .await?;
    let third = ask("Which city is the warehouse in?").await;
    assert_eq!(third["provider"], "openai-local", "{third}");
    assert_eq!(third["fallback"], "model_cascade", "{third}");
    assert_eq!(third["model"], "llama-3.1-8b-instruct");
    assert!(third["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // An enterprise tenant's plan allows no cheaper model: with its model's
    // only region down, the answer degrades instead.
    let vip = cluster.create_tenant_on_plan("vip", "enterprise").await?;
    cluster.wait_for_tenant(&vip).await?;
    let (status, _, _) = cluster
        .post(
            &vip,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, body, _) = cluster
        .post(
            &vip,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fallback"], "degraded", "{body}");
    assert!(body["provider"].is_null(), "{body}");
    // Its operator may allow the cascade after all.
    cluster
        .update_tenant(
            "vip",
            &json!({"fallbacks": {"next_region": true, "model_cascade": true, "stale_cache": true, "degrade": true}}),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, body, _) = cluster
            .post(
                &vip,
                "/v1/query",
                &json!({"query": "How long does delivery take?"}),
            )
            .await?;
        if body["fallback"] == "model_cascade" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        cluster.purge_cache(&vip).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_region_is_hedged_after_its_p95() {
    let cluster = Cluster::start(ClusterOptions {
        cell_settings: json!({"hedging": true}),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = cluster.create_tenant("hooli").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let fresh = |q: &'static str| {
        let cluster = &cluster;
        let key = key.clone();
        async move {
            cluster.purge_cache(&key).await.unwrap();
            let (status, body, _) = cluster
                .post(&key, "/v1/query", &json!({"query": q}))
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    // Enough answers for the first region's p95 to be known.
    for _ in 0..25 {
        assert_eq!(
            fresh("Where do orders ship from?").await["provider"],
            "azure-eastus"
        );
    }
    // Now it is slow (but would answer): the hedge to the next region wins.
    cluster
        .set_faults("azure-eastus", &json!({"latency": "3s"}))
        .await
        .unwrap();
    let body = fresh("Where do orders ship from?").await;
    assert_eq!(body["provider"], "azure-westeurope", "{body}");
    assert_eq!(body["fallback"], "next_region", "{body}");
    let metrics = cluster
        .cell_text(&cluster.cells[0].0, "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("cellnet_provider_hedges_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_mode_moves_the_answer_to_the_next_region() {
    let modes = [
        ("errors", json!({"error_rate": 1.0})),
        (
            "throttling",
            json!({"throttle_rate": 1.0, "retry_after": "1s"}),
        ),
        ("hang", json!({"hang": true})),
    ];
    for (mode, faults) in modes {
        let cluster = Cluster::start(ClusterOptions {
            providers: Some(json!([
                {"kind": "azure_openai", "name": "azure-eastus", "region": "eastus",
                 "endpoint": "{sim}/azure-eastus", "deployment": "gpt-4o-mini",
                 "api_key_env": "TEST_PROVIDER_KEY", "timeout": "1s"},
                {"kind": "azure_openai", "name": "azure-westeurope", "region": "westeurope",
                 "endpoint": "{sim}/azure-westeurope", "deployment": "gpt-4o-mini",
                 "api_key_env": "TEST_PROVIDER_KEY", "timeout": "5s"}
            ])),
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let key = cluster.create_tenant("acme").await.unwrap();
        cluster.wait_for_tenant(&key).await.unwrap();
        let (status, _, _) = cluster
            .post(
                &key,
                "/v1/documents",
                &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        cluster.set_faults("azure-eastus", &faults).await.unwrap();
        let (status, body, _) = cluster
            .post(
                &key,
                "/v1/query",
                &json!({"query": "Where do orders ship from?"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(body["provider"], "azure-westeurope", "{mode}: {body}");
        let stats: serde_json::Value = cluster
            .http
            .get(format!("{}/sim/stats", cluster.sim.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let eastus = &stats["regions"]["azure-eastus"];
        // The fault was met, not skipped.
        assert!(eastus["failed"].as_u64().unwrap() >= 1, "{mode}: {stats}");
    }
}
