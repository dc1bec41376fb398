//! Traces over OTLP: a query is one connected trace from the client's
//! `traceparent` through the router and the cell to the provider, with a
//! span per pipeline stage and per provider attempt and the GenAI
//! attributes; a streamed chat completion too; a failover shows both
//! attempts. Every service's metrics arrive over OTLP as well. With the
//! collector down, requests are answered and the spans that could not be
//! sent are counted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::HashSet;
use std::time::Duration;

use e2e::otlp::{OtlpReceiver, ReceivedPoint, ReceivedSpan};
use e2e::{Cluster, ClusterOptions, metric};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

/// How long spans may take to arrive: the exporters send every second.
const ARRIVAL: Duration = Duration::from_secs(20);

/// `bytes` random bytes as hex, from the standard library's randomly keyed
/// hasher.
fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let word = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        out.push_str(&format!("{word:016x}"));
    }
    out.truncate(bytes * 2);
    out
}

/// A client's trace context: (trace id, its span id, the header).
fn client_context() -> (String, String, String) {
    let trace = random_hex(16);
    let span = random_hex(8);
    let header = format!("00-{trace}-{span}-01");
    (trace, span, header)
}

fn telemetry(receiver: &OtlpReceiver, protocol: &str) -> Value {
    let endpoint = match protocol {
        "grpc" => &receiver.grpc_url,
        _ => &receiver.http_url,
    };
    json!({"telemetry": {"otlp_endpoint": endpoint, "otlp_protocol": protocol,
                          "metric_interval": "200ms",
                          "resource_attributes": {"deployment.environment.name": "test"}}})
}

async fn traced_cluster(receiver: &OtlpReceiver) -> Cluster {
    // The router and the cell over gRPC, the control plane over HTTP.
    Cluster::start(ClusterOptions {
        router_settings: telemetry(receiver, "grpc"),
        cell_settings: telemetry(receiver, "grpc"),
        control_plane_settings: telemetry(receiver, "http/protobuf"),
        ..ClusterOptions::default()
    })
    .await
    .unwrap()
}

fn named<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    let found = named(spans, service, name);
    assert_eq!(
        found.len(),
        1,
        "one {service} span {name:?} expected: {:#?}",
        spans
            .iter()
            .map(|s| (&s.service, &s.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// Every span's parent is in the trace, except the root's, which is the
/// client's span.
fn assert_connected(spans: &[ReceivedSpan], client_span: &str) {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in spans {
        assert!(
            ids.contains(s.parent_span_id.as_str()) || s.parent_span_id == client_span,
            "{}:{} has parent {} outside the trace",
            s.service,
            s.name,
            s.parent_span_id
        );
    }
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == client_span)
        .collect();
    assert_eq!(roots.len(), 1, "one span under the client's: {roots:#?}");
    assert_eq!(roots[0].service, "cellnet-router");
}

fn child_of<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .collect()
}

/// Tenant `acme` with the shipping document; its API key.
async fn shipping_tenant(cluster: &Cluster) -> String {
    cluster
        .tenant_with_documents(
            "acme",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await
        .unwrap()
}

/// POSTs `body` to the router's `path` with a fresh client trace context:
/// (the trace id, the client's span id, the response).
async fn traced_post(
    cluster: &Cluster,
    key: &str,
    path: &str,
    body: &Value,
) -> (String, String, reqwest::Response) {
    let (trace, client_span, traceparent) = client_context();
    let response = cluster
        .http
        .post(format!("{}{path}", cluster.router.url))
        .bearer_auth(key)
        .header("traceparent", &traceparent)
        .json(body)
        .send()
        .await
        .unwrap();
    (trace, client_span, response)
}

/// The trace context the simulator received with the request `request_id`.
async fn provider_traceparents(cluster: &Cluster, request_id: &str) -> Vec<String> {
    let seen: Vec<Value> = cluster
        .http
        .get(format!("{}/sim/requests", cluster.sim.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen.iter()
        .filter(|r| r["request_id"] == request_id)
        .filter_map(|r| r["traceparent"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_connected_traces_from_client_to_provider() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let cluster = traced_cluster(&receiver).await;
    let key = shipping_tenant(&cluster).await;

    // A query, with the client's trace context.
    let (trace, client_span, response) = traced_post(
        &cluster,
        &key,
        "/v1/query",
        &json!({"query": "Where do orders ship from?"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["provider"], "azure-eastus", "{answer}");

    let stages = [
        "preprocess",
        "semantic_cache",
        "embed",
        "retrieve",
        "prompt",
        "llm",
        "postprocess",
        "cache_store",
    ];
    receiver
        .wait_until(ARRIVAL, "the query's trace", |spans| {
            let in_trace: Vec<_> = spans
                .iter()
                .filter(|s| s.trace_id == trace)
                .cloned()
                .collect();
            named(&in_trace, "cellnet-router", "POST /v1/query").len() == 1
                && stages
                    .iter()
                    .all(|stage| in_trace.iter().any(|s| span_is(s, stage)))
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nrouter log:\n{}",
                std::fs::read_to_string(&cluster.router.log).unwrap_or_default()
            )
        });
    let spans = receiver.trace(&trace);
    assert_connected(&spans, &client_span);

    // router (server) → cell call (client) → cell (server) → query → stages
    let route = one(&spans, "cellnet-router", "POST /v1/query");
    assert_eq!(route.kind, "SPAN_KIND_SERVER");
    assert_eq!(route.attr("cellnet.tenant"), Some("acme"));
    assert_eq!(route.attr("cellnet.cell"), Some("cell-a"));
    assert_eq!(route.attr("http.response.status_code"), Some("200"));
    assert_eq!(route.attr("request_id"), Some(request_id.as_str()));
    assert_eq!(
        route
            .resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    let call = one(&spans, "cellnet-router", "cell cell-a");
    assert_eq!(call.kind, "SPAN_KIND_CLIENT");
    assert_eq!(call.parent_span_id, route.span_id);
    let served = one(&spans, "cellnet-cell", "POST /v1/query");
    assert_eq!(served.kind, "SPAN_KIND_SERVER");
    assert_eq!(served.parent_span_id, call.span_id);
    assert_eq!(
        served.resource.get("cellnet.cell").map(String::as_str),
        Some("cell-a")
    );
    assert_eq!(
        served.resource.get("cloud.region").map(String::as_str),
        Some("eu-west")
    );
    let query = one(&spans, "cellnet-cell", "query");
    assert_eq!(query.parent_span_id, served.span_id);
    let under_query: Vec<&str> = child_of(&spans, query)
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for stage in [
        "preprocess",
        "semantic_cache",
        "embed",
        "retrieve",
        "prompt",
        "postprocess",
        "cache_store",
    ] {
        assert!(
            under_query.contains(&stage),
            "{stage} not under query: {under_query:?}"
        );
    }

    // cellnet's attributes on the query.
    assert_eq!(query.attr("cellnet.tenant"), Some("acme"));
    assert_eq!(query.attr("cellnet.cell"), Some("cell-a"));
    assert_eq!(query.attr("cellnet.cache.outcome"), Some("miss"));
    assert_eq!(query.attr("cellnet.provider"), Some("azure-eastus"));
    assert_eq!(query.attr("cloud.region"), Some("eastus"));
    let cost: f64 = query.attr("cellnet.cost_usd").unwrap().parse().unwrap();
    assert!((cost - answer["cost_usd"].as_f64().unwrap()).abs() < 1e-12);
    let groundedness: f64 = query.attr("cellnet.groundedness").unwrap().parse().unwrap();
    assert!((groundedness - answer["groundedness"].as_f64().unwrap()).abs() < 1e-6);
    assert!(query.attr("cellnet.fallback").is_none());

    // The provider attempt, in GenAI terms.
    let llm = one(&spans, "cellnet-cell", "chat gpt-4o-mini");
    assert_eq!(llm.parent_span_id, query.span_id);
    assert_eq!(llm.kind, "SPAN_KIND_CLIENT");
    assert_eq!(llm.attr("gen_ai.operation.name"), Some("chat"));
    assert_eq!(llm.attr("gen_ai.provider.name"), Some("azure.ai.openai"));
    assert_eq!(llm.attr("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(llm.attr("gen_ai.response.model"), answer["model"].as_str());
    assert_eq!(
        llm.attr("gen_ai.usage.input_tokens"),
        Some(answer["usage"]["prompt_tokens"].to_string().as_str())
    );
    assert_eq!(
        llm.attr("gen_ai.usage.output_tokens"),
        Some(answer["usage"]["completion_tokens"].to_string().as_str())
    );
    assert_eq!(llm.attr("cellnet.provider"), Some("azure-eastus"));
    assert_eq!(llm.attr("cloud.region"), Some("eastus"));
    assert_eq!(llm.status, "STATUS_CODE_UNSET");

    // The provider was sent the attempt's context.
    let sent = provider_traceparents(&cluster, &request_id).await;
    assert_eq!(sent, vec![format!("00-{trace}-{}-01", llm.span_id)]);

    // The same question again: a cache hit, recorded as such, no LLM span.
    let (trace2, client_span2, response) = traced_post(
        &cluster,
        &key,
        "/v1/query",
        &json!({"query": "Where do orders ship from?"}),
    )
    .await;
    let hit: Value = response.json().await.unwrap();
    assert_eq!(hit["cache"], "hit", "{hit}");
    let spans = receiver
        .wait_for_trace(&trace2, ARRIVAL, "the cache hit's trace", |spans| {
            spans.iter().any(|s| s.name == "query")
                && spans
                    .iter()
                    .any(|s| s.name == "POST /v1/query" && s.service == "cellnet-router")
        })
        .await
        .unwrap();
    assert_connected(&spans, &client_span2);
    let query = one(&spans, "cellnet-cell", "query");
    assert_eq!(query.attr("cellnet.cache.outcome"), Some("hit"));
    assert_eq!(query.attr("cellnet.cache.similarity"), Some("1"));
    let cache = one(&spans, "cellnet-cell", "semantic_cache");
    assert_eq!(cache.attr("cellnet.cache.outcome"), Some("hit"));
    assert!(named(&spans, "cellnet-cell", "chat gpt-4o-mini").is_empty());

    // A streamed chat completion is one trace too; its attempt span carries
    // the usage known only at the stream's end.
    let (trace3, client_span3, response) = traced_post(
        &cluster,
        &key,
        "/v1/chat/completions",
        &json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "How long does standard delivery take?"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let spans = receiver
        .wait_for_trace(&trace3, ARRIVAL, "the stream's trace", |spans| {
            spans
                .iter()
                .any(|s| s.name == "query" && s.attr("cellnet.cache.outcome").is_some())
                && spans.iter().any(|s| s.name == "chat gpt-4o-mini")
                && spans
                    .iter()
                    .any(|s| s.service == "cellnet-router" && s.kind == "SPAN_KIND_SERVER")
        })
        .await
        .unwrap();
    assert_connected(&spans, &client_span3);
    let served = one(&spans, "cellnet-cell", "POST /v1/chat/completions");
    let query = one(&spans, "cellnet-cell", "query");
    assert_eq!(query.parent_span_id, served.span_id);
    assert_eq!(query.attr("cellnet.stream"), Some("true"));
    let llm = one(&spans, "cellnet-cell", "chat gpt-4o-mini");
    assert_eq!(llm.parent_span_id, query.span_id);
    assert_eq!(llm.attr("cellnet.stream"), Some("true"));
    let output: u64 = llm
        .attr("gen_ai.usage.output_tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(output > 0, "{llm:#?}");

    // A failover: the failed attempt and the one that answered, in order.
    cluster
        .set_faults("azure-eastus", &json!({"outage": true}))
        .await
        .unwrap();
    let (trace4, client_span4, response) = traced_post(
        &cluster,
        &key,
        "/v1/query",
        &json!({"query": "Where is the warehouse that orders ship from?"}),
    )
    .await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["provider"], "azure-westeurope", "{answer}");
    assert_eq!(answer["fallback"], "next_region", "{answer}");
    let spans = receiver
        .wait_for_trace(&trace4, ARRIVAL, "the failover's trace", |spans| {
            spans
                .iter()
                .any(|s| s.name == "query" && s.attr("cellnet.fallback").is_some())
                && spans
                    .iter()
                    .any(|s| s.service == "cellnet-router" && s.kind == "SPAN_KIND_SERVER")
        })
        .await
        .unwrap();
    assert_connected(&spans, &client_span4);
    let query = one(&spans, "cellnet-cell", "query");
    assert_eq!(query.attr("cellnet.fallback"), Some("next_region"));
    let mut attempts = named(&spans, "cellnet-cell", "chat gpt-4o-mini");
    attempts.sort_by_key(|s| s.attr("cellnet.attempt").map(str::to_owned));
    let by_provider: Vec<(&str, &str)> = attempts
        .iter()
        .map(|s| (s.attr("cellnet.provider").unwrap(), s.status.as_str()))
        .collect();
    assert!(
        by_provider.len() >= 2
            && by_provider[..by_provider.len() - 1]
                .iter()
                .all(|a| *a == ("azure-eastus", "STATUS_CODE_ERROR"))
            && by_provider.last() == Some(&("azure-westeurope", "STATUS_CODE_UNSET")),
        "{by_provider:?}"
    );
    assert_eq!(
        attempts[0].attr("error.type"),
        Some("503"),
        "{:#?}",
        attempts[0]
    );
    assert!(attempts.iter().all(|s| s.parent_span_id == query.span_id));

    // The control plane's admin API is traced too, over HTTP/protobuf.
    cluster
        .admin(reqwest::Method::GET, "/admin/leader", None)
        .await
        .unwrap();
    receiver
        .wait_until(ARRIVAL, "an admin span", |spans| {
            spans
                .iter()
                .any(|s| s.service == "cellnet-control-plane" && s.name == "GET /admin/leader")
        })
        .await
        .unwrap();

    // The services' metrics arrive too (the cell's and router's over gRPC,
    // the control plane's over HTTP), with the cell's resource attributes.
    let pushed = receiver
        .wait_for_metrics(ARRIVAL, "every service's metrics", |m| {
            m.get("cellnet-cell").is_some_and(|points| {
                find(points, "cellnet_answers", "acme").is_some_and(|p| p.value >= 4.0)
            }) && m.contains_key("cellnet-router")
                && m.contains_key("cellnet-control-plane")
        })
        .await
        .unwrap();
    let cell_points = &pushed["cellnet-cell"];
    let answers = find(cell_points, "cellnet_answers", "acme").unwrap();
    assert_eq!(
        (answers.kind, answers.monotonic),
        ("sum", true),
        "{answers:?}"
    );
    let latency = cell_points
        .iter()
        .find(|p| p.metric == "cellnet_request_seconds" && p.attr("route") == Some("/v1/query"))
        .unwrap_or_else(|| panic!("{cell_points:#?}"));
    assert_eq!(latency.kind, "histogram");
    assert_eq!(
        latency.bucket_counts.len(),
        latency.explicit_bounds.len() + 1
    );
    assert_eq!(
        latency.bucket_counts.iter().sum::<u64>() as f64,
        latency.value,
        "{latency:?}"
    );
    assert!(latency.value >= 3.0, "{latency:?}");
    assert!(
        pushed["cellnet-router"]
            .iter()
            .any(|p| p.metric == "cellnet_router_responses" && p.value >= 4.0),
        "{:#?}",
        pushed["cellnet-router"]
    );
    assert!(
        pushed["cellnet-control-plane"]
            .iter()
            .any(|p| p.metric == "otel_spans_exported"),
        "{:#?}",
        pushed["cellnet-control-plane"]
    );

    // Nothing was dropped on the way.
    let metrics = cluster.router_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("otel_spans_dropped_total{reason=\"export_failed\"} 0"),
        "{metrics}"
    );
}

/// Tenant `tenant`'s point of metric `name`, summed over nothing: the test
/// cluster has one cell.
fn find<'a>(points: &'a [ReceivedPoint], name: &str, tenant: &str) -> Option<&'a ReceivedPoint> {
    points
        .iter()
        .find(|p| p.metric == name && p.attr("tenant") == Some(tenant))
}

/// Whether `s` is the span of pipeline stage `stage` (the LLM's is named
/// after its model).
fn span_is(s: &ReceivedSpan, stage: &str) -> bool {
    match stage {
        "llm" => s.name.starts_with("chat "),
        other => s.name == other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_are_answered_and_drops_counted() {
    // Nothing listens on this port: every export fails.
    let port = e2e::process::free_port().unwrap();
    let down = json!({"telemetry": {"otlp_endpoint": format!("http://127.0.0.1:{port}")}});
    let cluster = Cluster::start(ClusterOptions {
        router_settings: down.clone(),
        cell_settings: down.clone(),
        control_plane_settings: down,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = shipping_tenant(&cluster).await;
    for i in 0..20 {
        let (status, body, _) = cluster
            .post(
                &key,
                "/v1/query",
                &json!({"query": format!("Where do orders ship from, question {i}?")}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let failed = "otel_spans_dropped_total{reason=\"export_failed\"}";
    e2e::eventually(
        30,
        "router and cell count the spans they could not send",
        || async {
            let router = cluster.router_text("/metrics").await.unwrap_or_default();
            let cell = cluster
                .http
                .get(format!("{}/metrics", cluster.cells[0].1.url))
                .send()
                .await
                .ok();
            let cell = match cell {
                Some(r) => r.text().await.unwrap_or_default(),
                None => String::new(),
            };
            // Each of the 20 queries ended a route span and a cell-call span in
            // the router, and at least the request, query and cache spans in
            // the cell.
            metric(&router, failed) >= 40.0 && metric(&cell, failed) >= 60.0
        },
    )
    .await;
    let router = cluster.router_text("/metrics").await.unwrap();
    assert_eq!(
        metric(&router, "otel_spans_exported_total"),
        0.0,
        "{router}"
    );
}
