//! The router protects cells and tenants from each other: per-tenant rate
//! limits and token quotas (429 with Retry-After), per-cell concurrency
//! limits (503 with Retry-After), a bound on how long a client may take to
//! send its headers, a router out of file descriptors that waits instead of
//! spinning, and a shutdown, of the router or of a cell, that finishes what
//! it took.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::json;

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_gets_429_and_others_do_not() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    // The free plan: 2 requests/s, bursts of 10.
    let free = cluster.create_tenant_on_plan("freeloader", "free").await?;
    let paying = cluster.create_tenant("initech").await?;
    cluster.wait_for_tenant(&free).await?;
    cluster.wait_for_tenant(&paying).await?;

    let sends = (0..30).map(|_| cluster.get(&free, "/v1/models"));
    let results = futures_join(sends).await;
    let ok = results.iter().filter(|(s, _, _)| *s == 200).count();
    let limited: Vec<_> = results.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(
        (5..=12).contains(&ok),
        "{ok} of 30 admitted at once on a burst of 10"
    );
    assert_eq!(ok + limited.len(), 30);
    let (_, body, headers) = limited[0];
    assert_eq!(body["error"]["type"], "rate_limited", "{body}");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=1).contains(&retry), "retry-after {retry}");

    // The paying tenant is unaffected.
    let (status, _, _) = cluster.get(&paying, "/v1/models").await?;
    assert_eq!(status, 200);

    let metrics = cluster
        .http
        .get(format!("{}/metrics", cluster.router.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("cellnet_router_refusals_total{reason=\"rate_limited\"}"),
        "{metrics}"
    );
    Ok(())
}

async fn futures_join<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut out = Vec::new();
    let handles: Vec<F> = futures.collect();
    for r in futures::future::join_all(handles).await {
        out.push(r.expect("request failed"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_token_quota_is_refused_until_midnight() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("hooli").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    cluster
        .update_tenant(
            "hooli",
            &json!({"limits": {"requests_per_second": 100.0, "burst": 100, "tokens_per_day": 50}}),
        )
        .await?;
    // The router applies the change through its watch; its quota headers tell when.
    eventually(10, "condition", || async {
        let (_, _, h) = cluster.get(&key, "/v1/models").await.unwrap();
        h.get("x-ratelimit-limit-tokens")
            .is_some_and(|v| v.as_bytes() == b"50")
    })
    .await;

    let (status, answer, headers) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let spent: u64 = headers["x-cellnet-usage-tokens"].to_str()?.parse()?;
    assert!(spent > 50, "the answer cost {spent} tokens");

    // The count reaches the router off the response path; then it refuses.
    eventually(10, "condition", || async {
        let (status, body, _) = cluster.get(&key, "/v1/models").await.unwrap();
        status == 429 && body["error"]["type"] == "quota_exceeded"
    })
    .await;
    let (status, body, headers) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does delivery take?"}),
        )
        .await?;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = headers["retry-after"].to_str()?.parse()?;
    assert!((1..=86_400).contains(&retry));

    // An operator lifts the quota; the tenant is served again.
    cluster
        .update_tenant("hooli", &json!({"limits": null}))
        .await?;
    eventually(10, "condition", || async {
        let (status, _, _) = cluster.get(&key, "/v1/models").await.unwrap();
        status == 200
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_count_against_the_token_quota() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("pied-piper").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    cluster
        .update_tenant(
            "pied-piper",
            &json!({"limits": {"requests_per_second": 100.0, "burst": 100, "tokens_per_day": 50}}),
        )
        .await?;
    eventually(10, "condition", || async {
        let (_, _, h) = cluster.get(&key, "/v1/models").await.unwrap();
        h.get("x-ratelimit-limit-tokens")
            .is_some_and(|v| v.as_bytes() == b"50")
    })
    .await;
    let streamed = cluster
        .http
        .post(format!("{}/v1/chat/completions", cluster.router.url))
        .bearer_auth(&key)
        .json(&json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Where do orders ship from?"}],
            "stream": true
        }))
        .send()
        .await?;
    assert_eq!(streamed.status(), 200);
    assert!(streamed.headers().get("x-cellnet-usage-tokens").is_none());
    let text = streamed.text().await?;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    eventually(10, "condition", || async {
        let (status, body, _) = cluster.get(&key, "/v1/models").await.unwrap();
        status == 429 && body["error"]["type"] == "quota_exceeded"
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_at_their_concurrency_limit_shed_with_503() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        router_settings: json!({"max_in_flight_per_cell": 1}),
        ..ClusterOptions::two_regions()
    })
    .await?;
    let key = cluster.create_tenant("umbrella").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    // Answers take a while, so requests overlap.
    for region in ["azure-eastus", "azure-westeurope"] {
        cluster
            .set_faults(region, &json!({"latency": "1500ms"}))
            .await?;
    }
    let questions = [
        "Where do orders ship from?",
        "How long does standard delivery take?",
        "Which warehouse sends my order?",
    ];
    let bodies: Vec<_> = questions.iter().map(|q| json!({"query": q})).collect();
    let sends = bodies.iter().map(|b| cluster.post(&key, "/v1/query", b));
    let results = futures_join(sends).await;
    let mut statuses: Vec<u16> = results.iter().map(|(s, _, _)| *s).collect();
    statuses.sort_unstable();
    // One request per cell at a time: two are served, one on each replica; the third is shed.
    assert_eq!(statuses, [200, 200, 503], "{results:?}");
    let served: std::collections::BTreeSet<String> = results
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, h)| h["x-cellnet-cell"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(served.len(), 2, "both replicas served");
    let (_, body, headers) = results.iter().find(|(s, _, _)| *s == 503).unwrap();
    assert_eq!(body["error"]["type"], "overloaded", "{body}");
    assert_eq!(headers["retry-after"], "1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_at_its_own_limit_sheds_instead_of_queueing() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        router_settings: json!({"max_in_flight": 1}),
        ..ClusterOptions::default()
    })
    .await?;
    let key = cluster.create_tenant("wonka").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    cluster
        .set_faults("azure-eastus", &json!({"latency": "1500ms"}))
        .await?;
    let bodies = [
        json!({"query": "Where do orders ship from?"}),
        json!({"query": "How long does standard delivery take?"}),
    ];
    let results = futures_join(bodies.iter().map(|b| cluster.post(&key, "/v1/query", b))).await;
    let mut statuses: Vec<u16> = results.iter().map(|(s, _, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503], "{results:?}");
    let (_, body, headers) = results.iter().find(|(s, _, _)| *s == 503).unwrap();
    assert_eq!(body["error"]["type"], "overloaded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("router"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");
    Ok(())
}

/// Starts a query that waits 2 s on its provider, and returns once the
/// provider has it: from then on it is in flight in the router and in the
/// cell that asked. Also returns the cell that answers the tenant.
async fn a_query_in_flight(
    cluster: &Cluster,
) -> anyhow::Result<(
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    String,
)> {
    let key = cluster.create_tenant("massive").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster
        .post(
            &key,
            "/v1/documents",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await?;
    assert_eq!(status, 200);
    let (status, _, headers) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "How long does standard delivery take?"}),
        )
        .await?;
    assert_eq!(status, 200);
    let cell = headers["x-cellnet-cell"].to_str()?.to_owned();
    cluster
        .set_faults("azure-eastus", &json!({"latency": "2s"}))
        .await?;
    let url = format!("{}/v1/query", cluster.router.url);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(key)
            .json(&json!({"query": "Where do orders ship from?"}))
            .send()
            .await
    });
    eventually(10, "the query reached the provider", || async {
        cluster.provider_in_flight("azure-eastus").await.unwrap() == 1
    })
    .await;
    Ok((in_flight, cell))
}

/// The answer to `a_query_in_flight`'s question, in full.
async fn assert_answered_in_full(response: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await?;
    assert!(
        body["answer"].as_str().unwrap_or("").contains("Lyon"),
        "{body}"
    );
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_and_takes_no_new_ones() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let (in_flight, _) = a_query_in_flight(&cluster).await?;
    cluster.router.guard.terminate()?;

    // The listener closes at once: new connections are refused.
    let health = format!("{}/healthz", cluster.router.url);
    eventually(10, "the router's listener closed", || async {
        reqwest::get(&health).await.is_err_and(|e| e.is_connect())
    })
    .await;
    // The request taken before the signal is answered in full.
    assert_answered_in_full(in_flight.await??).await?;
    let exit = tokio::task::spawn_blocking(move || cluster.router.guard.wait()).await??;
    assert!(exit.success(), "router exited with {exit}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_that_is_stopped_finishes_requests_in_flight() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let (in_flight, cell) = a_query_in_flight(&cluster).await?;
    let url = {
        let service = cluster.cell_mut(&cell).expect("the cell that answered");
        service.guard.terminate()?;
        service.url.clone()
    };

    // It leaves the ring while it still serves, so routers stop choosing it
    // before its listener closes.
    let ready = format!("{}/readyz", cluster.router.url);
    eventually(
        10,
        "the router no longer routes to the stopped cell",
        || async {
            let body = reqwest::get(&ready).await.unwrap().text().await.unwrap();
            body.trim() == "no cell is serving"
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the query in flight ended before the cell left the ring"
    );
    let health = format!("{url}/healthz");
    eventually(10, "the cell's listener closed", || async {
        reqwest::get(&health).await.is_err_and(|e| e.is_connect())
    })
    .await;
    // Answered by the cell that was stopped, not by its replica after a retry.
    let response = in_flight.await??;
    assert_eq!(response.headers()["x-cellnet-cell"], cell.as_str());
    let body = assert_answered_in_full(response).await?;
    // By the provider it was waiting on: the call in flight was not cut.
    assert_eq!(body["provider"], "azure-eastus", "{body}");
    let stopped = cell.clone();
    let exit = tokio::task::spawn_blocking(move || {
        let service = cluster.cell_mut(&stopped).expect("the cell that answered");
        service.guard.wait()
    })
    .await??;
    assert!(exit.success(), "{cell} exited with {exit}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = Cluster::start(ClusterOptions {
        router_settings: json!({"header_read_timeout": "1s"}),
        ..ClusterOptions::default()
    })
    .await?;
    let addr = cluster.router.url.trim_start_matches("http://");
    let mut slow = tokio::net::TcpStream::connect(addr).await?;
    // Headers begun, never ended.
    slow.write_all(b"POST /v1/query HTTP/1.1\r\nhost: router\r\n")
        .await?;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the router kept a connection open that never sent its headers"
    );
    // Other clients are served as before.
    let key = cluster.create_tenant("initech").await?;
    cluster.wait_for_tenant(&key).await?;
    let (status, _, _) = cluster.get(&key, "/v1/models").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_out_of_file_descriptors_pauses_accepting_and_recovers() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let key = cluster.create_tenant("initech").await?;
    cluster.wait_for_tenant(&key).await?;
    let pid = cluster.router.guard.pid()?.to_string();
    let addr = cluster.router.url.trim_start_matches("http://").to_owned();
    let accept_failures = || -> anyhow::Result<usize> {
        Ok(std::fs::read_to_string(&cluster.router.log)?
            .matches("cannot accept connections")
            .count())
    };
    // The soft limit only: raising a hard limit again needs privileges.
    let limit = |n: &str| -> anyhow::Result<()> {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()?;
        anyhow::ensure!(status.success(), "prlimit failed");
        Ok(())
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("the soft limit on open files")
        .to_owned();
    // Fewer descriptors than the connections about to be opened.
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    limit(&(open_now + 8).to_string())?;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(tokio::net::TcpStream::connect(&addr).await?);
    }
    eventually(20, "the router runs out of descriptors", || async {
        accept_failures().unwrap() > 0
    })
    .await;
    let started = std::time::Instant::now();
    let before = accept_failures()?;
    // An episode long enough for a busy loop to fail thousands of times.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let failures = accept_failures()? - before;
    let pauses = started.elapsed().as_millis() / 100 + 2;
    assert!(
        failures as u128 <= pauses,
        "{failures} failed accepts in {:?}: the router retried without pausing",
        started.elapsed()
    );
    // Descriptors back: everything waiting is accepted, new clients are served.
    drop(held);
    limit(&soft)?;
    eventually(20, "the router serves again", || async {
        cluster
            .get(&key, "/v1/models")
            .await
            .is_ok_and(|(s, _, _)| s == 200)
    })
    .await;
    Ok(())
}
