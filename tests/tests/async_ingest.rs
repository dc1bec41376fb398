//! Asynchronous ingestion through the router: `POST /v1/documents?async=true`
//! answers 202 with a job, the cell's worker drains a Redis stream, and
//! `GET /v1/jobs/{id}` reports progress and per-document errors. A `kill -9`
//! of the cell mid-job loses no acknowledged document and leaves no
//! half-written one once the job is redone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;

use e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

async fn post_async(
    cluster: &Cluster,
    key: &str,
    request_id: &str,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let resp = cluster
        .http
        .post(format!("{}/v1/documents?async=true", cluster.router.url))
        .bearer_auth(key)
        .header("x-request-id", request_id)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

async fn job(cluster: &Cluster, key: &str, id: &str) -> (u16, Value) {
    let (status, body, _) = cluster.get(key, &format!("/v1/jobs/{id}")).await.unwrap();
    (status, body)
}

/// Polls the job until `done` holds for its status; returns that status.
async fn wait_for_job(
    cluster: &Cluster,
    key: &str,
    id: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (status, body) = job(cluster, key, id).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} not there within {secs} s; last said {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn wait_completed(cluster: &Cluster, key: &str, id: &str, secs: u64) -> Value {
    wait_for_job(cluster, key, id, secs, |j| j["status"] == "completed").await
}

fn redis_cli(cluster: &Cluster, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &cluster.redis.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every stored point of the tenant, as document id → chunk indices.
async fn chunks_by_document(cluster: &Cluster, key: &str) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for point in cluster.export_points(key).await.unwrap() {
        out.entry(point["document_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(point["chunk"].as_u64().unwrap());
    }
    for chunks in out.values_mut() {
        chunks.sort_unstable();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_reports_progress_and_per_document_errors() {
    let cluster = Cluster::start(ClusterOptions::two_regions()).await.unwrap();
    let acme = cluster.create_tenant("acme").await.unwrap();
    let globex = cluster.create_tenant("globex").await.unwrap();
    cluster.wait_for_tenant(&acme).await.unwrap();
    cluster.wait_for_tenant(&globex).await.unwrap();

    let batch = json!({"documents": [
        {"id": "returns", "text": "Returns. Unused items can be returned within 45 days for store credit."},
        {"id": "blank", "text": "   "},
        {"id": "warranty", "text": "Warranty. Every kettle carries a two-year warranty against defects.", "metadata": {"lang": "en"}},
        {"id": "returns", "text": "A second document with the same id."},
        {"id": "hours", "text": "Opening hours. The Lyon shop opens at nine and closes at seven."}
    ]});
    let (status, accepted, headers) = post_async(&cluster, &acme, "req-async-1", &batch).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(accepted["documents"], 5);

    // The same request again (a client retry, a replayed hint) is the same job.
    let (status, again, _) = post_async(&cluster, &acme, "req-async-1", &batch).await;
    assert_eq!(status, 202);
    assert_eq!(again["job_id"], id.as_str());

    let done = wait_completed(&cluster, &acme, &id, 60).await;
    assert_eq!(done["documents"], 5, "{done}");
    assert_eq!(done["processed"], 5, "{done}");
    assert_eq!(done["succeeded"], 3, "{done}");
    assert_eq!(done["failed"], 2, "{done}");
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors[0]["index"], 1);
    assert!(
        errors[0]["error"].as_str().unwrap().contains("text"),
        "{done}"
    );
    assert_eq!(errors[1]["index"], 3);
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("appears twice"),
        "{done}"
    );
    assert!(done["completed_at"].as_u64().unwrap() >= done["created_at"].as_u64().unwrap());

    // The documents answer questions; the job ran once although queued twice.
    let stored = chunks_by_document(&cluster, &acme).await;
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["hours", "returns", "warranty"]
    );
    assert_eq!(
        stored.values().map(Vec::len).sum::<usize>() as u64,
        done["chunks"].as_u64().unwrap()
    );
    let (status, answer, _) = cluster
        .post(
            &acme,
            "/v1/query",
            &json!({"query": "How long is the warranty on a kettle?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["citations"][0]["document_id"], "warranty",
        "{answer}"
    );

    // Another tenant cannot see the job.
    let (status, body) = job(&cluster, &globex, &id).await;
    assert_eq!(status, 404, "{body}");
    assert!(chunks_by_document(&cluster, &globex).await.is_empty());

    // Bad requests say what was wrong.
    let (status, body) = job(&cluster, &acme, "no-such-job").await;
    assert_eq!(status, 404, "{body}");
    let resp = cluster
        .http
        .post(format!("{}/v1/documents?async=maybe", cluster.router.url))
        .bearer_auth(&acme)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("async=true|false"),
        "{body}"
    );
    let (status, body, _) =
        post_async(&cluster, &acme, "req-async-2", &json!({"documents": []})).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_loses_no_acknowledged_document() {
    let mut cluster = Cluster::start(ClusterOptions {
        router_max_body_bytes: 8 * 1024 * 1024,
        cell_settings: json!({"ingest": {"claim_idle": "1s"}}),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let key = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();

    // Enough work that the worker is caught in the middle of it.
    let documents: Vec<Value> = (0..800)
        .map(|i| {
            json!({"id": format!("doc-{i:04}"), "text": format!(
                "Article {i}. The warehouse in zone {} keeps pallets of item {} on shelf {}. \
                 Orders for item {} leave on weekday {} by truck {}.",
                i % 17, i * 7, i % 31, i * 7, i % 5, i % 11
            )})
        })
        .collect();
    let (status, accepted, _) = post_async(
        &cluster,
        &key,
        "req-kill-1",
        &json!({"documents": documents}),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_owned();

    // Wait until some documents are acknowledged but not all, then kill -9.
    let progress = wait_for_job(&cluster, &key, &id, 60, |j| {
        j["processed"].as_u64().unwrap_or(0) > 0
    })
    .await;
    cluster.cell_mut("cell-a").unwrap().kill();
    let acknowledged = progress["processed"].as_u64().unwrap();
    assert!(
        acknowledged < 800,
        "the job finished before the kill; make it longer: {progress}"
    );

    // Hand the pending entry to another consumer, as if a second worker had
    // taken it and died too: the restarted cell must claim it once idle.
    let stream = "cn:{cell-a}:ingest";
    let pending = redis_cli(&cluster, &["XPENDING", stream, "ingest", "-", "+", "10"]);
    let entry = pending
        .lines()
        .next()
        .expect("the job is pending")
        .to_owned();
    let claimed = redis_cli(
        &cluster,
        &["XCLAIM", stream, "ingest", "ghost", "0", &entry, "JUSTID"],
    );
    assert_eq!(claimed.trim(), entry);

    cluster.restart_cell("cell-a").unwrap();
    cluster.wait_for_cells(1).await.unwrap();
    let done = wait_completed(&cluster, &key, &id, 180).await;
    assert_eq!(done["succeeded"], 800, "{done}");
    assert_eq!(done["failed"], 0, "{done}");

    // Every document is whole: chunks 0..n with no gap, no leftover, no
    // duplicate, and as many points as the job reports.
    let stored = chunks_by_document(&cluster, &key).await;
    assert_eq!(stored.len(), 800);
    for (doc, chunks) in &stored {
        let expected: Vec<u64> = (0..chunks.len() as u64).collect();
        assert_eq!(chunks, &expected, "{doc} is not whole");
    }
    assert_eq!(
        stored.values().map(Vec::len).sum::<usize>() as u64,
        done["chunks"].as_u64().unwrap()
    );
}

/// A job lives on the replicas its write reached. One that was down gets it
/// only when its hint is replayed; until then the router asks the next
/// replica instead of answering 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_known_to_one_replica_is_found_through_the_router() {
    let mut cluster = Cluster::start(ClusterOptions::two_regions()).await.unwrap();
    let key = cluster.create_tenant("acme").await.unwrap();
    cluster.wait_for_tenant(&key).await.unwrap();
    let signing_key = cluster.cell_auth_key().await.unwrap();

    // One job written to each cell alone, as a router would sign it: one of
    // the two is on the replica the router reads second.
    let mut jobs = Vec::new();
    for (n, (_, cell)) in cluster.cells.iter().enumerate() {
        let body = serde_json::to_vec(&json!({"documents": [
            {"id": format!("doc-{n}"), "text": "Opening hours. The Lyon shop opens at nine."}
        ]}))
        .unwrap();
        let resp = cluster
            .post_signed(
                &cell.url,
                &signing_key,
                "acme",
                "/v1/documents?async=true",
                &format!("req-one-replica-{n}"),
                body,
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let accepted: Value = resp.json().await.unwrap();
        jobs.push(accepted["job_id"].as_str().unwrap().to_owned());
    }
    for id in &jobs {
        let (status, body) = job(&cluster, &key, id).await;
        assert_eq!(status, 200, "job {id}: {body}");
        assert_eq!(body["documents"], 1, "{body}");
    }
    // A job no replica knows is still 404, also when the replica asked
    // second cannot be reached.
    let (status, _) = job(&cluster, &key, "no-such-job").await;
    assert_eq!(status, 404);
    // Reads go to the tenant's replicas in one order; a question shows it.
    let (_, _, headers) = cluster
        .post(
            &key,
            "/v1/query",
            &json!({"query": "When does the shop open?"}),
        )
        .await
        .unwrap();
    let first = headers["x-cellnet-cell"].to_str().unwrap().to_owned();
    let second = cluster
        .cells
        .iter()
        .map(|(id, _)| id.clone())
        .find(|id| *id != first)
        .unwrap();
    cluster.cell_mut(&second).unwrap().kill();
    let (status, body) = job(&cluster, &key, "no-such-job").await;
    assert_eq!(status, 404, "{body}");
}
