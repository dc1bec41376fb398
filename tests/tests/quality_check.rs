//! The sampled quality check: a second model judges fresh answers against
//! the passages they cite, off the request path. Its verdict is a metric per
//! tenant and cell and an attribute of a `quality_check` span in the query's
//! trace; its tokens and cost are the tenant's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedSpan};
use e2e::{Cluster, ClusterOptions, eventually, metric};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

/// The harness's price of gpt-4o-mini, USD per million tokens.
const PRICE: (f64, f64) = (0.15, 0.6);

const ACME: &str = "tenant=\"acme\",cell=\"cell-a\"";

fn verdicts(metrics: &str, verdict: &str) -> f64 {
    metric(
        metrics,
        &format!("cellnet_quality_checks_total{{{ACME},verdict=\"{verdict}\"}}"),
    )
}

fn span_number(span: &ReceivedSpan, key: &str) -> f64 {
    span.attr(key)
        .unwrap_or_else(|| panic!("{} has no {key}: {span:#?}", span.name))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_model_judges_answers_off_the_request_path() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let provider = |name: &str, region: &str, timeout: &str| {
        json!({"kind": "azure_openai", "name": name, "region": region,
               "endpoint": format!("{{sim}}/{name}"), "deployment": "gpt-4o-mini",
               "api_key_env": "TEST_PROVIDER_KEY", "timeout": timeout})
    };
    let cluster = Cluster::start(ClusterOptions {
        providers: Some(json!([
            provider("azure-eastus", "eastus", "10s"),
            // The judge; a short timeout, for the judge that never answers.
            provider("azure-westeurope", "westeurope", "3s"),
        ])),
        cell_settings: json!({
            "telemetry": {"otlp_endpoint": receiver.grpc_url, "otlp_protocol": "grpc"},
            "quality_check": {"sample": 1.0, "provider": "azure-westeurope"},
        }),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = cluster
        .tenant_with_documents(
            "acme",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await
        .unwrap();
    let metrics = || async { cluster.cell_text("cell-a", "/metrics").await.unwrap() };

    // A grounded answer, judged supported.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = cluster
        .http
        .post(format!("{}/v1/query", cluster.router.url))
        .bearer_auth(&key)
        .header("traceparent", traceparent)
        .json(&json!({"query": "Where do orders ship from?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["provider"], "azure-eastus", "{answer}");
    eventually(20, "a supported verdict", || async {
        verdicts(&metrics().await, "supported") == 1.0
    })
    .await;

    // In the query's trace: a quality_check span under the query span, and
    // under it the judge's call to its provider-region.
    let trace = receiver
        .wait_for_trace(
            "4bf92f3577b34da6a3ce929d0e0e4736",
            Duration::from_secs(20),
            "the quality check's spans",
            |spans| {
                spans
                    .iter()
                    .any(|s| s.name == "quality_check" && s.attr("cellnet.cost_usd").is_some())
                    && spans.iter().any(|s| s.name == "query")
            },
        )
        .await
        .unwrap();
    let query = trace.iter().find(|s| s.name == "query").unwrap();
    let check = trace.iter().find(|s| s.name == "quality_check").unwrap();
    assert_eq!(check.parent_span_id, query.span_id, "{check:#?}");
    assert_eq!(check.attr("cellnet.quality.verdict"), Some("supported"));
    assert_eq!(
        check.attr("cellnet.quality.judge"),
        Some("azure-westeurope")
    );
    assert_eq!(check.attr("cellnet.tenant"), Some("acme"));
    let judge_call = trace
        .iter()
        .find(|s| s.parent_span_id == check.span_id)
        .expect("the judge's provider call");
    assert_eq!(judge_call.name, "chat gpt-4o-mini");
    assert_eq!(
        judge_call.attr("cellnet.provider"),
        Some("azure-westeurope")
    );
    assert_eq!(judge_call.attr("gen_ai.operation.name"), Some("chat"));
    // The judge was asked for this request, within its trace.
    let seen: Vec<Value> = cluster
        .http
        .get(format!("{}/sim/requests", cluster.sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let judge_request = seen
        .iter()
        .find(|r| {
            r["request_id"] == request_id.as_str()
                && r["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/azure-westeurope/")
        })
        .expect("the judge's request at the simulator");
    assert!(
        judge_request["traceparent"]
            .as_str()
            .unwrap()
            .contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{judge_request}"
    );

    // The judge's tokens and cost are the tenant's, on top of the answer's.
    let judge_in = span_number(judge_call, "gen_ai.usage.input_tokens");
    let judge_out = span_number(judge_call, "gen_ai.usage.output_tokens");
    let judge_cost = (judge_in * PRICE.0 + judge_out * PRICE.1) / 1e6;
    assert!((span_number(check, "cellnet.cost_usd") - judge_cost).abs() < 1e-12);
    let exposition = metrics().await;
    let tokens = |kind: &str| {
        metric(
            &exposition,
            &format!(
                "cellnet_tenant_tokens_total{{tenant=\"acme\",model=\"gpt-4o-mini\",kind=\"{kind}\"}}"
            ),
        )
    };
    assert_eq!(
        tokens("prompt"),
        answer["usage"]["prompt_tokens"].as_f64().unwrap() + judge_in
    );
    assert_eq!(
        tokens("completion"),
        answer["usage"]["completion_tokens"].as_f64().unwrap() + judge_out
    );
    let cost = metric(
        &exposition,
        &format!("cellnet_tenant_cost_usd_total{{{ACME}}}"),
    );
    assert!(
        (cost - answer["cost_usd"].as_f64().unwrap() - judge_cost).abs() < 1e-9,
        "{exposition}"
    );

    // A model that makes things up: its answer is judged unsupported.
    cluster
        .set_faults("azure-eastus", &json!({"confabulate": true}))
        .await
        .unwrap();
    let (status, made_up, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does delivery take?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{made_up}");
    assert_eq!(made_up["low_groundedness"], true, "{made_up}");
    eventually(20, "an unsupported verdict", || async {
        verdicts(&metrics().await, "unsupported") == 1.0
    })
    .await;

    // A judge that never answers: the request is served without waiting
    // for it, and the check counts as failed once the judge times out.
    cluster
        .set_faults("azure-eastus", &json!({}))
        .await
        .unwrap();
    cluster
        .set_faults("azure-westeurope", &json!({"hang": true}))
        .await
        .unwrap();
    let (status, served, _) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does standard delivery take inside the European Union?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["provider"], "azure-eastus", "{served}");
    assert_eq!(
        verdicts(&metrics().await, "failed"),
        0.0,
        "answered before the judge gave up"
    );
    eventually(20, "a failed verdict", || async {
        verdicts(&metrics().await, "failed") == 1.0
    })
    .await;
    let exposition = metrics().await;
    assert_eq!(verdicts(&exposition, "supported"), 1.0, "{exposition}");
    assert_eq!(verdicts(&exposition, "unsupported"), 1.0, "{exposition}");
}
