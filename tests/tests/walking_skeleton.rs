//! One tenant's question from router to provider and back, on real etcd and
//! Redis, with the real binaries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use e2e::{Cluster, ClusterOptions};
use serde_json::json;

const REFUNDS: &str = "Refund policy. Customers can request a full refund within 30 days of purchase. \
Refunds are paid back to the original payment method within five business days. \
Gift cards cannot be refunded.";
const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

fn two_regions() -> ClusterOptions {
    ClusterOptions {
        cells: vec![
            ("cell-a".into(), "eu-west".into()),
            ("cell-b".into(), "us-east".into()),
            ("cell-c".into(), "eu-west".into()),
        ],
        ..ClusterOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cited_answer_then_cache_hit_and_tenants_stay_apart() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let acme = cluster.create_tenant("acme").await?;
    let globex = cluster.create_tenant("globex").await?;
    cluster.wait_for_tenant(&acme).await?;
    cluster.wait_for_tenant(&globex).await?;

    let (status, body, _) = cluster
        .post(
            &acme,
            "/v1/documents",
            &json!({"documents": [
                {"id": "refunds", "text": REFUNDS, "metadata": {"source": "policy.md"}},
                {"id": "shipping", "text": SHIPPING}
            ]}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["documents"][0]["id"], "refunds");
    assert!(
        body["documents"][0]["chunks"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    assert!(body["chunks"].as_u64().unwrap_or(0) >= 2, "{body}");

    let question = json!({"query": "How long do I have to request a refund?", "top_k": 5});
    let before = cluster.provider_requests("azure-eastus").await?;
    let (status, first, headers) = cluster.post(&acme, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["cache"], "miss");
    assert!(
        first["answer"].as_str().unwrap_or("").contains("30 days"),
        "{first}"
    );
    assert_eq!(first["citations"][0]["document_id"], "refunds", "{first}");
    assert!(
        first["citations"][0]["score"].as_f64().unwrap_or(0.0) > 0.3,
        "{first}"
    );
    assert_eq!(first["provider"], "azure-eastus");
    assert_eq!(first["model"], "gpt-4o-mini");
    assert!(
        first["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(cluster.provider_requests("azure-eastus").await?, before + 1);

    // The same question again: answered from the cache, no provider call.
    let (status, second, _) = cluster.post(&acme, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["cache"], "hit", "{second}");
    assert_eq!(second["answer"], first["answer"]);
    assert_eq!(second["citations"], first["citations"]);
    assert_eq!(cluster.provider_requests("azure-eastus").await?, before + 1);

    // A paraphrase close enough for the vector tier.
    let (_, third, _) = cluster
        .post(
            &acme,
            "/v1/query",
            &json!({"query": "how long do I have to request a refund"}),
        )
        .await?;
    assert_eq!(third["cache"], "hit", "{third}");
    assert!(
        third["similarity"].as_f64().unwrap_or(0.0) > 0.92,
        "{third}"
    );
    assert!(third["cache_age_ms"].is_u64(), "{third}");

    // An operator raises this tenant's threshold: the paraphrase no longer hits.
    let resp = cluster
        .http
        .patch(format!("{}/admin/tenants/acme", cluster.control_plane.url))
        .bearer_auth(e2e::cluster::ADMIN_TOKEN)
        .json(&json!({"cache_threshold": 0.9999}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let paraphrase = json!({"query": "How long do I have to ask for a refund?"});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, strict, _) = cluster.post(&acme, "/v1/query", &paraphrase).await?;
        if strict["cache"] == "miss" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "threshold override never applied: {strict}"
        );
    }

    // The other tenant asks the identical question: it must see neither the
    // documents nor the cached answer of the first.
    let (status, other, _) = cluster.post(&globex, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["cache"], "miss", "{other}");
    assert_eq!(other["citations"], json!([]), "{other}");
    assert!(
        !other["answer"].as_str().unwrap_or("").contains("30 days"),
        "{other}"
    );

    // Its own documents give its own answer, and its own cache entry.
    let (status, _, _) = cluster
        .post(&globex, "/v1/documents", &json!({"documents": [
            {"id": "refunds", "text": "Refund policy. Refunds can be requested within 90 days. Refunds are paid as store credit."}
        ]}))
        .await?;
    assert_eq!(status, 200);
    let (_, own, _) = cluster.post(&globex, "/v1/query", &question).await?;
    assert_eq!(own["cache"], "miss", "{own}");
    assert!(
        own["answer"].as_str().unwrap_or("").contains("90 days"),
        "{own}"
    );
    let (_, own_again, _) = cluster.post(&globex, "/v1/query", &question).await?;
    assert_eq!(own_again["cache"], "hit");
    assert!(
        own_again["answer"]
            .as_str()
            .unwrap_or("")
            .contains("90 days")
    );
    let (_, acme_again, _) = cluster.post(&acme, "/v1/query", &question).await?;
    assert!(
        acme_again["answer"]
            .as_str()
            .unwrap_or("")
            .contains("30 days"),
        "{acme_again}"
    );

    // New documents make old answers stale: the next ask is a miss.
    let (status, _, _) = cluster
        .post(
            &acme,
            "/v1/documents",
            &json!({"documents": [{"id": "extra", "text": "Our office is closed on Sundays."}]}),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, after_ingest, _) = cluster.post(&acme, "/v1/query", &question).await?;
    assert_eq!(after_ingest["cache"], "miss", "{after_ingest}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_writes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        router_max_body_bytes: 4096,
        ..ClusterOptions::default()
    })
    .await?;
    let key = cluster.create_tenant("initech").await?;
    cluster.wait_for_tenant(&key).await?;
    let url = format!("{}/v1/query", cluster.router.url);

    // No key, a wrong key.
    let resp = cluster
        .http
        .post(&url)
        .json(&json!({"query": "x"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let resp = cluster
        .http
        .post(&url)
        .bearer_auth("cn_wrong")
        .json(&json!({"query": "x"}))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);

    // Too large.
    let big = "a".repeat(10_000);
    let (status, body, _) = cluster
        .post(&key, "/v1/query", &json!({"query": big}))
        .await?;
    assert_eq!(status, 413, "{body}");

    // Malformed JSON, a missing field, an empty query, an unknown field.
    let resp = cluster
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let (status, body, _) = cluster
        .post(&key, "/v1/query", &json!({"top_k": 3}))
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("query"),
        "{body}"
    );
    let (status, body, _) = cluster
        .post(&key, "/v1/query", &json!({"query": "   "}))
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("empty"),
        "{body}"
    );

    // A batch with one empty document is refused whole: its valid sibling is
    // not written either.
    let (status, body, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [
                {"id": "good", "text": "The launch code is swordfish."},
                {"id": "bad", "text": ""}
            ]}),
        )
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("documents[1].text"),
        "{body}"
    );
    let (status, body, _) = cluster
        .post(&key, "/v1/documents", &json!({"documents": [{"id": "x"}]}))
        .await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("text"),
        "{body}"
    );
    let (status, answer, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "What is the launch code?"}),
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(answer["citations"], json!([]), "{answer}");
    assert!(
        !answer["answer"]
            .as_str()
            .unwrap_or("")
            .contains("swordfish")
    );

    // A cell refuses a request that did not come through the router: no
    // tenant, a forged tenant without a signature, a signature made with
    // another key, and a genuine signature moved to another tenant.
    let cell = &cluster.cells[0].1;
    let url = format!("{}/v1/query", cell.url);
    let body = serde_json::to_vec(&json!({"query": "What is the launch code?"}))?;
    let resp = cluster.http.post(&url).body(body.clone()).send().await?;
    assert_eq!(resp.status(), 401);
    let forged = |tenant: &str, signature: &str, timestamp: u64| {
        cluster
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-cellnet-tenant", tenant)
            .header("x-request-id", "r-1")
            .header(common::signing::TIMESTAMP_HEADER, timestamp)
            .header(common::signing::SIGNATURE_HEADER, signature)
            .body(body.clone())
            .send()
    };
    let now = common::signing::now_secs();
    assert_eq!(forged("initech", "v1=00", now).await?.status(), 401);
    let parts = |tenant: &'static str| common::signing::SignedParts {
        method: "POST",
        path_and_query: "/v1/query",
        tenant,
        request_id: "r-1",
        timestamp: now,
        body: &body,
    };
    let wrong_key = common::signing::sign(&[7u8; 32], &parts("initech"));
    assert_eq!(forged("initech", &wrong_key, now).await?.status(), 401);
    // With the real key (read from etcd, as a router would) the cell answers,
    // so the refusals above are the signature's doing.
    let key = cluster.cell_auth_key().await?;
    let genuine = common::signing::sign(&key, &parts("initech"));
    assert_eq!(forged("initech", &genuine, now).await?.status(), 200);
    let other = cluster.create_tenant("other").await?;
    cluster.wait_for_tenant(&other).await?;
    assert_eq!(forged("other", &genuine, now).await?.status(), 401);
    let stale = common::signing::sign(
        &key,
        &common::signing::SignedParts {
            timestamp: now - 600,
            ..parts("initech")
        },
    );
    assert_eq!(forged("initech", &stale, now - 600).await?.status(), 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_refuses_nothing_in_flight_and_retires_the_old_key()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster
        .tenant_with_documents(
            "initech",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    let question = json!({"query": "Where do orders ship from?"});
    // Straight to a cell, signed under `signing_key` as a router would sign.
    let cell = &cluster.cells[0].1.url;
    let body = serde_json::to_vec(&question)?;
    let direct = |signing_key: Vec<u8>| {
        let body = body.clone();
        let cluster = &cluster;
        async move {
            cluster
                .post_signed(
                    cell,
                    &signing_key,
                    "initech",
                    "/v1/query",
                    "r-rotation",
                    body,
                )
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let first = cluster.cell_auth_key().await?;
    assert_eq!(direct(first.clone()).await, 200);

    // Rotated while requests flow through the router: none is refused.
    let fingerprint = cluster.rotate_signing_key().await?;
    let second = cluster.cell_auth_key().await?;
    assert_ne!(second, first);
    assert_eq!(
        fingerprint,
        control_plane::model::key_fingerprint(&second),
        "the fingerprint names the new key"
    );
    for _ in 0..20 {
        let (status, body, _) = cluster.post(&key, "/v1/query", &question).await?;
        assert_eq!(status, 200, "{body}");
    }
    // The cell takes both the new key and the one it replaced.
    e2e::eventually(10, "the cell to take the new key", || {
        let second = second.clone();
        async { direct(second).await == 200 }
    })
    .await;
    assert_eq!(direct(first.clone()).await, 200);

    // One more rotation retires the first key; the second is still taken.
    cluster.rotate_signing_key().await?;
    e2e::eventually(10, "the cell to refuse the retired key", || {
        let first = first.clone();
        async { direct(first).await == 401 }
    })
    .await;
    assert_eq!(direct(second).await, 200);
    for _ in 0..20 {
        let (status, body, _) = cluster.post(&key, "/v1/query", &question).await?;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(direct(vec![7u8; 32]).await, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_cell_is_routed_around_within_the_lease_window() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(two_regions()).await?;
    let key = cluster.create_tenant("umbrella").await?;
    cluster.wait_for_tenant(&key).await?;
    let question = json!({"query": "Where do orders ship from?"});

    let (status, body, headers) = cluster.post(&key, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{body}");
    let home = headers
        .get("x-cellnet-cell")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!home.is_empty());

    cluster.cell_mut(&home).expect("home cell").kill();

    // Straight away, before the lease expires: the router skips the dead cell.
    let (status, body, headers) = cluster.post(&key, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{body}");
    let served_by = headers
        .get("x-cellnet-cell")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_ne!(served_by, home);
    // Answered while the dead cell still counts as alive: the router did not
    // wait for its lease to expire.
    let ready = cluster.router_text("/readyz").await?;
    assert_eq!(
        ready.trim(),
        "ok: 3 cells",
        "the dead cell's lease expired first"
    );

    // Once the lease expires the ring drops the cell.
    cluster.wait_for_cells(2).await?;
    for _ in 0..5 {
        let (status, body, headers) = cluster.post(&key, "/v1/query", &question).await?;
        assert_eq!(status, 200, "{body}");
        assert_ne!(
            headers.get("x-cellnet-cell").and_then(|v| v.to_str().ok()),
            Some(home.as_str())
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_down_serves_stale_then_degrades() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("hooli").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(&key, "/v1/documents", &json!({"documents": [{"id": "refunds", "text": REFUNDS}, {"id": "shipping", "text": SHIPPING}]}))
        .await?;
    assert_eq!(status, 200);
    let question = json!({"query": "How long do I have to request a refund?"});
    let (_, fresh, _) = cluster.post(&key, "/v1/query", &question).await?;
    assert_eq!(fresh["cache"], "miss");

    // New documents make the cached answer outdated: no longer a hit...
    let (status, _, _) = cluster
        .post(&key, "/v1/documents", &json!({"documents": [{"id": "hours", "text": "The support desk opens at nine every weekday."}]}))
        .await?;
    assert_eq!(status, 200);

    // ...but when every region is down it is the best answer there is.
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster.set_faults(region, &json!({"outage": true})).await?;
    }
    let (status, stale, _) = cluster.post(&key, "/v1/query", &question).await?;
    assert_eq!(status, 200, "{stale}");
    assert_eq!(stale["cache"], "stale", "{stale}");
    assert_eq!(stale["fallback"], "stale_cache");
    assert_eq!(stale["answer"], fresh["answer"]);

    // A question never answered before degrades to an extract of the best passage.
    let (status, degraded, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await?;
    assert_eq!(status, 200, "{degraded}");
    assert_eq!(degraded["fallback"], "degraded", "{degraded}");
    assert!(
        degraded["answer"].as_str().unwrap_or("").contains("Lyon"),
        "{degraded}"
    );
    assert_eq!(degraded["citations"][0]["document_id"], "shipping");

    // The regions return: fresh answers again, and the degraded one was not cached.
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster.set_faults(region, &json!({})).await?;
    }
    let (_, back, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await?;
    assert_eq!(back["cache"], "miss", "{back}");
    assert!(back.get("fallback").is_none(), "{back}");
    assert!(back["provider"].is_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_region_down_moves_to_the_next() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("soylent").await?;
    cluster.wait_for_tenant(&key).await?;
    cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    cluster
        .set_faults("azure-eastus", &json!({"outage": true}))
        .await?;
    let (status, body, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "azure-westeurope", "{body}");
    assert_eq!(body["fallback"], "next_region", "{body}");
    assert!(body["answer"].as_str().unwrap_or("").contains("Lyon"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_bypasses_the_cache_and_recovers() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("wayne").await?;
    cluster.wait_for_tenant(&key).await?;
    cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    let question = json!({"query": "Where do orders ship from?"});
    cluster.post(&key, "/v1/query", &question).await?;
    let (_, hit, _) = cluster.post(&key, "/v1/query", &question).await?;
    assert_eq!(hit["cache"], "hit");

    // Redis dies: answers keep coming, straight from the pipeline.
    cluster.redis.kill();
    // The cell's Redis timeout bounds the bypass; the guard, far above it,
    // only turns a hang into a failure.
    let (status, body, _) = tokio::time::timeout(
        Duration::from_secs(60),
        cluster.post(&key, "/v1/query", &question),
    )
    .await
    .expect("a query with Redis down hung")?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cache"], "miss");
    assert!(
        body["answer"].as_str().unwrap_or("").contains("Lyon"),
        "{body}"
    );
    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.cells[0].1.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("cellnet_cache_errors_total"),
        "bypass not counted"
    );
    assert!(
        !metrics.contains("cellnet_cache_errors_total 0\n"),
        "bypass not counted"
    );

    // Redis returns (empty: it keeps nothing here); the cache fills and hits again.
    cluster.redis.restart()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, again, _) = cluster.post(&key, "/v1/query", &question).await?;
        if again["cache"] == "hit" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never came back: {again}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_replica_and_a_dead_one_gets_them_later() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(two_regions()).await?;
    let key = cluster.create_tenant("initrode").await?;
    cluster.wait_for_tenant(&key).await?;

    // An acknowledged write is on both members of the replica set.
    let resp = cluster
        .http
        .post(format!("{}/v1/documents", cluster.router.url))
        .bearer_auth(&key)
        .json(&json!({"documents": [{"id": "shipping", "text": SHIPPING}]}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let replicas: Vec<String> = resp
        .headers()
        .get("x-cellnet-replicas")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    let question = json!({"query": "Where do orders ship from?"});
    let (_, first, headers) = cluster.post(&key, "/v1/query", &question).await?;
    let primary = headers
        .get("x-cellnet-cell")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(replicas.contains(&primary), "{primary} not in {replicas:?}");
    assert_eq!(first["citations"][0]["document_id"], "shipping");
    let secondary = replicas
        .iter()
        .find(|c| **c != primary)
        .cloned()
        .unwrap_or_default();

    // kill -9 the primary right after: the secondary answers from its own copy.
    cluster.cell_mut(&primary).expect("primary").kill();
    let (status, body, headers) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does standard delivery take?"}),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("x-cellnet-cell").and_then(|v| v.to_str().ok()),
        Some(secondary.as_str())
    );
    assert_eq!(body["citations"][0]["document_id"], "shipping", "{body}");

    // A write while the primary is down: acknowledged by the secondary, a
    // hint left for the primary.
    cluster.wait_for_cells(2).await?;
    let resp = cluster
        .http
        .post(format!("{}/v1/documents", cluster.router.url))
        .bearer_auth(&key)
        .json(&json!({"documents": [{"id": "returns", "text": "Returns are accepted at the Lyon warehouse for sixty days."}]}))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-cellnet-hinted")
            .and_then(|v| v.to_str().ok()),
        Some(primary.as_str())
    );
    assert_eq!(cluster.pending_hints(&primary)?, 1);

    // The primary returns: the hint is replayed and both hold the document.
    cluster.restart_cell(&primary)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while cluster.pending_hints(&primary)? > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hint never replayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.cell_mut(&secondary).expect("secondary").kill();
    let returns = json!({"query": "Where are returns accepted?"});
    let (status, body, headers) = cluster.post(&key, "/v1/query", &returns).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("x-cellnet-cell").and_then(|v| v.to_str().ok()),
        Some(primary.as_str())
    );
    assert_eq!(body["citations"][0]["document_id"], "returns", "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_questions_missing_together_reach_the_provider_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster
        .tenant_with_documents(
            "hooli",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    let regions = ["azure-eastus", "azure-westeurope"];
    // Slow answers, so that the other requests arrive while the first is out.
    for region in regions {
        cluster
            .set_faults(region, &json!({"latency": "3s"}))
            .await?;
    }
    let provider_requests = || async {
        let mut total = 0;
        for region in regions {
            total += cluster.provider_requests(region).await.unwrap();
        }
        total
    };
    let before = provider_requests().await;
    let ask = || {
        let url = format!("{}/v1/query", cluster.router.url);
        let key = key.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(key)
                .json(&json!({"query": "Where do orders ship from?"}))
                .send()
                .await?;
            let cell = resp.headers()["x-cellnet-cell"].to_str()?.to_owned();
            anyhow::Ok((resp.status(), resp.json::<serde_json::Value>().await?, cell))
        }
    };
    let first = tokio::spawn(ask());
    e2e::eventually(10, "the first question reached a provider", || async {
        let mut in_flight = 0;
        for region in regions {
            in_flight += cluster.provider_in_flight(region).await.unwrap();
        }
        in_flight == 1
    })
    .await;
    let others: Vec<_> = (0..10).map(|_| tokio::spawn(ask())).collect();

    let (status, body, cell) = first.await??;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cache"], "miss", "{body}");
    for other in others {
        let (status, answer, served_by) = other.await??;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(served_by, cell);
        assert_eq!(answer["cache"], "hit", "{answer}");
        assert_eq!(answer["answer"], body["answer"]);
    }
    assert_eq!(
        provider_requests().await - before,
        1,
        "the waiting questions were asked again"
    );
    let url = cluster
        .cells
        .iter()
        .find(|(id, _)| *id == cell)
        .map(|(_, service)| service.url.clone())
        .unwrap();
    let metrics = cluster
        .http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("cellnet_cache_coalesced_total 10\n"),
        "{metrics}"
    );
    Ok(())
}
