//! Tenant moves, measured on a whole system of release binaries:
//! `cargo build --release --workspace --bins && cargo bench -p e2e --bench moves`
//! (`-- move 10000 100000` or `-- drain 50` for one part).
//!
//! - move: one tenant of N points moved to a new cell (dual-write, copy,
//!   verify, flip), with the copy-rate cap lifted; time from the request to
//!   the flip, and points a second.
//! - drain: four cells, tenants of 1,000 points each until one cell holds
//!   TENANTS of them; the time to drain it, and query latency (p50/p99) of
//!   uncached questions before the drain and during it.
//!
//! Points are synthetic (clustered unit vectors of 384 dimensions, imported
//! through the router as exported points), so no embedding is spent on them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Cluster, ClusterOptions};
use serde_json::{Value, json};

const DIMS: usize = 384;
const BATCH: usize = 500;

/// A small deterministic generator (xorshift64*), enough for test vectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Point `k` as an exported line: a noisy copy of one of 2,000 topics.
fn point(k: usize, rng: &mut Rng) -> String {
    let mut topic = Rng(0x9e37_79b9_7f4a_7c15 ^ ((k % 2000) as u64 + 1));
    let mut v: Vec<f32> = (0..DIMS).map(|_| topic.next() + 0.3 * rng.next()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    json!({
        "document_id": format!("doc-{}", k / 10),
        "chunk": k % 10,
        "text": format!("Passage {k} of the synthetic corpus, on topic {}.", k % 2000),
        "metadata": {},
        "vector": v,
    })
    .to_string()
}

async fn import(cluster: &Cluster, key: &str, points: usize) -> anyhow::Result<()> {
    let mut rng = Rng(points as u64 + 7);
    for start in (0..points).step_by(BATCH) {
        let body: String = (start..(start + BATCH).min(points))
            .map(|k| point(k, &mut rng) + "\n")
            .collect();
        // A cell building its index holds writes meanwhile; an import the
        // router gave up on is sent again (imports are upserts).
        for attempt in 1.. {
            let resp = cluster
                .http
                .post(format!("{}/v1/points", cluster.router.url))
                .bearer_auth(key)
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await?;
            if resp.status().is_success() {
                break;
            }
            if attempt == 10 || !resp.status().is_server_error() {
                bail!("import: {} {}", resp.status(), resp.text().await?);
            }
        }
    }
    Ok(())
}

async fn record(cluster: &Cluster, tenant: &str) -> anyhow::Result<Value> {
    let p = cluster
        .admin(
            reqwest::Method::GET,
            &format!("/admin/placement?tenant={tenant}"),
            None,
        )
        .await?;
    p["tenants"]
        .get(0)
        .cloned()
        .context("tenant not in placement")
}

async fn until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn options(cells: &[(&str, &str)]) -> ClusterOptions {
    ClusterOptions {
        cells: cells
            .iter()
            .map(|(c, r)| (c.to_string(), r.to_string()))
            .collect(),
        router_max_body_bytes: 16 << 20,
        control_plane_settings: json!({"placement": {
            "copy_points_per_second": 1_000_000_000u64, "cleanup_grace": "1s"}}),
        ..ClusterOptions::default()
    }
}

async fn bench_move(points: usize) -> anyhow::Result<()> {
    let cluster = Cluster::start(options(&[
        ("cell-a", "eu-west"),
        ("cell-b", "us-east"),
        ("cell-c", "us-east"),
    ]))
    .await?;
    let tenant = format!("bench-{points}");
    let key = cluster.create_tenant(&tenant).await?;
    cluster.wait_for_tenant(&key).await?;
    let loading = Instant::now();
    import(&cluster, &key, points).await?;
    let loaded = loading.elapsed();
    let members: Vec<String> =
        serde_json::from_value(record(&cluster, &tenant).await?["members"].clone())?;
    let spare = ["cell-a", "cell-b", "cell-c"]
        .into_iter()
        .find(|c| !members.iter().any(|m| m == c))
        .context("no spare cell")?;
    let to = json!([members[0], spare]);
    let started = Instant::now();
    cluster
        .admin(
            reqwest::Method::POST,
            &format!("/admin/tenants/{tenant}/move"),
            Some(&json!({"to": to})),
        )
        .await?;
    until("the move flips", 3600, async || {
        record(&cluster, &tenant)
            .await
            .is_ok_and(|r| r["members"] == to && r["moving"].is_null())
    })
    .await?;
    let took = started.elapsed();
    let held = cluster.points_on(spare, &tenant).await?;
    if held != points as u64 {
        bail!("{spare} holds {held} of {points} points after the move");
    }
    println!(
        "move one tenant of {points} points ({} → {}): {:.2} s, {:.0} points/s (import through the router took {:.1} s)",
        members.join(","),
        to.as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        took.as_secs_f64(),
        points as f64 / took.as_secs_f64(),
        loaded.as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)] * 1000.0
}

/// Uncached questions (none asked before: `phase` is in each) to random
/// tenants from `tasks` loops, until `stop`.
fn query_load(
    cluster: &Cluster,
    keys: &[String],
    phase: &'static str,
    tasks: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Vec<f64>>> {
    (0..tasks)
        .map(|t| {
            let (http, url, keys, stop) = (
                cluster.http.clone(),
                cluster.router.url.clone(),
                keys.to_vec(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng(t as u64 + 99);
                let mut latencies = Vec::new();
                let mut n = 0usize;
                while !*stop.borrow() {
                    n += 1;
                    let key = &keys[(n * 7 + t) % keys.len()];
                    let topic = ((rng.next() + 0.5) * 2000.0) as usize;
                    let sent = Instant::now();
                    let ok = http
                        .post(format!("{url}/v1/query"))
                        .bearer_auth(key)
                        .json(&json!({"query": format!("What does passage {n} of task {t} say about topic {topic} {phase}?")}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        latencies.push(sent.elapsed().as_secs_f64());
                    }
                }
                latencies
            })
        })
        .collect()
}

async fn collect(load: Vec<tokio::task::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    let mut all = Vec::new();
    for task in load {
        all.extend(task.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    all
}

async fn bench_drain(held: usize) -> anyhow::Result<()> {
    const POINTS: usize = 1000;
    let cells = [
        ("cell-a", "eu-west"),
        ("cell-b", "us-east"),
        ("cell-c", "eu-west"),
        ("cell-d", "us-east"),
    ];
    let cluster = Cluster::start(options(&cells)).await?;
    let mut keys = Vec::new();
    let on_d = async |cluster: &Cluster| -> anyhow::Result<usize> {
        let p = cluster
            .admin(reqwest::Method::GET, "/admin/placement", None)
            .await?;
        Ok(p["tenants"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter(|t| {
                        t["members"]
                            .as_array()
                            .is_some_and(|m| m.contains(&json!("cell-d")))
                    })
                    .count()
            })
            .unwrap_or(0))
    };
    while on_d(&cluster).await? < held {
        let tenant = format!("t{:03}", keys.len());
        let key = cluster.create_tenant(&tenant).await?;
        cluster.wait_for_tenant(&key).await?;
        import(&cluster, &key, POINTS).await?;
        keys.push(key);
    }
    let tenants_on_d = on_d(&cluster).await?;
    println!(
        "drain: {} tenants of {POINTS} points on four cells; cell-d holds {tenants_on_d}",
        keys.len()
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = query_load(&cluster, &keys, "before", 4, stopped.clone());
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.send(true)?;
    let before = collect(load).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = query_load(&cluster, &keys, "during", 4, stopped);
    let started = Instant::now();
    cluster
        .admin(reqwest::Method::POST, "/admin/cells/cell-d/drain", None)
        .await?;
    until("cell-d is drained", 3600, async || {
        cluster
            .admin(reqwest::Method::GET, "/admin/cells", None)
            .await
            .is_ok_and(|c| {
                c["cells"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["id"] == "cell-d" && c["spec"]["lifecycle"] == "drained")
                })
            })
    })
    .await?;
    let took = started.elapsed();
    stop.send(true)?;
    let during = collect(load).await;
    if before.is_empty() || during.is_empty() {
        bail!("no query answered");
    }
    println!(
        "drain a cell holding {tenants_on_d} tenants ({} points): {:.1} s",
        tenants_on_d * POINTS,
        took.as_secs_f64()
    );
    for (label, l) in [("before the drain", &before), ("during the drain", &during)] {
        println!(
            "  uncached queries {label}: {} answered, p50 {:.1} ms, p99 {:.1} ms",
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.99)
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let part = args.first().map(String::as_str);
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if part.is_none_or(|p| p == "move") {
        for points in if numbers.is_empty() {
            vec![10_000, 100_000]
        } else {
            numbers.clone()
        } {
            bench_move(points).await?;
        }
    }
    if part.is_none_or(|p| p == "drain") {
        bench_drain(
            numbers
                .first()
                .copied()
                .filter(|_| part == Some("drain"))
                .unwrap_or(50),
        )
        .await?;
    }
    Ok(())
}
