//! Answer-quality metrics per tenant and cell, counted from what tenants were
//! actually served: every answer, its groundedness, its flags (low
//! groundedness, "I don't know", degraded, stale) and the cache tier that
//! answered, with the similarity at hit time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions, metric};
use serde_json::{Value, json};

const REFUNDS: &str = "Refund policy. Customers can request a full refund within 30 days of purchase. \
Refunds are paid back to the original payment method within five business days.";
const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

/// What the cell's metrics should have counted for these answers.
#[derive(Default)]
struct Expected {
    answers: f64,
    grounded: f64,
    groundedness_sum: f64,
    low_groundedness: f64,
    dont_know: f64,
    degraded: f64,
    stale: f64,
}

impl Expected {
    fn add(&mut self, answer: &Value) {
        self.answers += 1.0;
        if let Some(g) = answer["groundedness"].as_f64() {
            self.grounded += 1.0;
            self.groundedness_sum += g;
        }
        if answer["low_groundedness"] == true {
            self.low_groundedness += 1.0;
        }
        if answer["answer"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .starts_with("i don't know")
        {
            self.dont_know += 1.0;
        }
        if answer["fallback"] == "degraded" {
            self.degraded += 1.0;
        }
        if answer["cache"] == "stale" {
            self.stale += 1.0;
        }
    }

    fn check(&self, metrics: &str, tenant: &str) {
        let labels = format!("tenant=\"{tenant}\",cell=\"cell-a\"");
        let value = |name: &str| metric(metrics, &format!("{name}{{{labels}}}"));
        let flag = |f: &str| {
            metric(
                metrics,
                &format!("cellnet_answer_flags_total{{{labels},flag=\"{f}\"}}"),
            )
        };
        assert_eq!(value("cellnet_answers_total"), self.answers, "{metrics}");
        assert_eq!(value("cellnet_answer_groundedness_count"), self.grounded);
        assert!(
            (value("cellnet_answer_groundedness_sum") - self.groundedness_sum).abs() < 1e-4,
            "{metrics}"
        );
        assert_eq!(flag("low_groundedness"), self.low_groundedness, "{metrics}");
        assert_eq!(flag("dont_know"), self.dont_know, "{metrics}");
        assert_eq!(flag("degraded"), self.degraded, "{metrics}");
        assert_eq!(flag("stale"), self.stale, "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_metrics_count_what_each_tenant_was_served() {
    let cluster = Cluster::start(ClusterOptions {
        // Low enough for a paraphrase to reach the vector tier's guard.
        cell_settings: json!({"cache": {"threshold": 0.85}}),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let acme = cluster
        .tenant_with_documents(
            "acme",
            &json!({"documents": [{"id": "refunds", "text": REFUNDS}, {"id": "shipping", "text": SHIPPING}]}),
        )
        .await
        .unwrap();
    let globex = cluster.create_tenant("globex").await.unwrap();
    cluster.wait_for_tenant(&globex).await.unwrap();
    let ask = |key: &str, query: &str| {
        let body = json!({ "query": query });
        let key = key.to_owned();
        let cluster = &cluster;
        async move {
            let (status, answer, _) = cluster.post(&key, "/v1/query", &body).await.unwrap();
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    let mut acme_expected = Expected::default();
    let mut globex_expected = Expected::default();

    let fresh = ask(&acme, "How long do refunds take?").await;
    assert_eq!(fresh["cache"], "miss", "{fresh}");
    acme_expected.add(&fresh);
    let exact = ask(&acme, "How long do refunds take?").await;
    assert_eq!(exact["cache"], "hit", "{exact}");
    acme_expected.add(&exact);
    let semantic = ask(&acme, "how long does it take for refunds").await;
    assert_eq!(semantic["cache"], "hit", "{semantic}");
    let similarity = semantic["similarity"].as_f64().unwrap();
    assert!(similarity < 1.0, "{semantic}");
    acme_expected.add(&semantic);

    // Another tenant, with no documents, asks the same: it is told "I don't
    // know", and that is counted for it alone.
    let unknown = ask(&globex, "How long do refunds take?").await;
    assert_eq!(unknown["cache"], "miss", "{unknown}");
    globex_expected.add(&unknown);
    assert_eq!(globex_expected.dont_know, 1.0, "{unknown}");

    // Every region down: an outdated cached answer is served stale, a new
    // question degrades to an extract.
    let (status, _, _) = cluster
        .post(
            &acme,
            "/v1/documents",
            &json!({"documents": [{"id": "hours", "text": "The support desk opens at nine every weekday."}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster
            .set_faults(region, &json!({"outage": true}))
            .await
            .unwrap();
    }
    let stale = ask(&acme, "How long do refunds take?").await;
    assert_eq!(stale["cache"], "stale", "{stale}");
    acme_expected.add(&stale);
    let degraded = ask(&acme, "Where do orders ship from?").await;
    assert_eq!(degraded["fallback"], "degraded", "{degraded}");
    acme_expected.add(&degraded);

    let metrics = cluster.cell_text("cell-a", "/metrics").await.unwrap();
    acme_expected.check(&metrics, "acme");
    globex_expected.check(&metrics, "globex");

    let acme_labels = "tenant=\"acme\",cell=\"cell-a\"";
    for (tier, hits) in [("exact", 1.0), ("semantic", 1.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!("cellnet_cache_hits_total{{{acme_labels},tier=\"{tier}\"}}")
            ),
            hits,
            "{metrics}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            &format!("cellnet_cache_hit_similarity_count{{{acme_labels}}}")
        ),
        1.0
    );
    assert!(
        (metric(
            &metrics,
            &format!("cellnet_cache_hit_similarity_sum{{{acme_labels}}}")
        ) - similarity)
            .abs()
            < 1e-4,
        "{metrics}"
    );
    // globex was never answered from the cache, acme's answers never said
    // they did not know: nothing crosses between tenants.
    assert!(!metrics.contains("cellnet_cache_hits_total{tenant=\"globex\""));
    assert_eq!(acme_expected.dont_know, 0.0);
}
