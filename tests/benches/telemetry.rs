//! What exporting traces and metrics costs a request, measured on three
//! systems of release binaries side by side: router, cell and control plane
//! exporting over OTLP/gRPC to a collector that is up (the harness's
//! receiver), to one that is down (a port nobody listens on), and with
//! export off.
//!
//! `cargo build --release --workspace --bins && cargo bench -p e2e --bench telemetry`
//!
//! Each round runs, on each system in turn (the order rotating every round),
//! an open-loop load of cache hits (router → cell → Redis) and one of fresh
//! answers (a metadata filter bypasses the cache: embed, retrieve, provider
//! call), with `loadgen`. Reported: the median over rounds of each system's
//! p50 and p99, their ratios to export off, and the spans the collector
//! received and the services dropped. Knobs (environment): `HIT_RATE`
//! (default 200/s), `FRESH_RATE` (10/s), `DURATION` (20s), `ROUNDS` (3).

use std::process::Command;

use anyhow::{Context, bail};
use e2e::otlp::OtlpReceiver;
use e2e::process::{binary, free_port};
use e2e::{Cluster, ClusterOptions, metric};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

#[derive(Clone, Copy, PartialEq)]
enum Export {
    Up,
    Down,
    Off,
}

impl Export {
    fn name(self) -> &'static str {
        match self {
            Export::Up => "collector up",
            Export::Down => "collector down",
            Export::Off => "export off",
        }
    }
}

struct System {
    export: Export,
    cluster: Cluster,
    key: String,
}

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn system(export: Export, endpoint: Option<&str>) -> anyhow::Result<System> {
    let telemetry = match endpoint {
        Some(url) => json!({"telemetry": {"otlp_endpoint": url, "otlp_protocol": "grpc",
                                          "metric_interval": "1s"}}),
        None => json!({}),
    };
    let cluster = Cluster::start(ClusterOptions {
        router_settings: telemetry.clone(),
        cell_settings: telemetry.clone(),
        control_plane_settings: telemetry,
        ..ClusterOptions::default()
    })
    .await?;
    let key = cluster
        .tenant_with_documents(
            "bench",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING,
                                   "metadata": {"lang": "en"}}]}),
        )
        .await?;
    // Limits far above the load: the export is measured, not refusals.
    cluster
        .update_tenant(
            "bench",
            &json!({"limits": {"requests_per_second": 1_000_000.0, "burst": 1_000_000,
                               "tokens_per_day": 1_000_000_000u64}}),
        )
        .await?;
    // Fill the cache for the hit load, and wait until the limits apply.
    let body = json!({"query": "Where do orders ship from?"});
    for attempt in 1.. {
        let (status, answer, headers) = cluster.post(&key, "/v1/query", &body).await?;
        if status == 200
            && answer["cache"] == "hit"
            && headers
                .get("x-ratelimit-limit-tokens")
                .is_some_and(|v| v.as_bytes() == b"1000000000")
        {
            break;
        }
        if attempt == 100 {
            bail!(
                "{}: warm-up never got a cached answer under the new limits: {status} {answer}",
                export.name()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(System {
        export,
        cluster,
        key,
    })
}

/// One open-loop run of `loadgen`; its JSON summary.
fn load(system: &System, body: &str, rate: u32, duration: &str) -> anyhow::Result<Value> {
    let out = Command::new(binary("loadgen")?)
        .args([
            "--url",
            &format!("{}/v1/query", system.cluster.router.url),
            "--rate",
            &rate.to_string(),
            "--duration",
            duration,
            "--body",
            body,
            "-H",
            &format!("Authorization: Bearer {}", system.key),
            "--json",
        ])
        .output()
        .context("running loadgen")?;
    if !out.status.success() {
        bail!("loadgen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Spans a service's `/metrics` says it dropped, for every reason.
fn dropped(metrics: &str) -> f64 {
    ["queue_full", "export_failed", "shut_down"]
        .iter()
        .map(|r| {
            metric(
                metrics,
                &format!("otel_spans_dropped_total{{reason=\"{r}\"}}"),
            )
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let hit_rate: u32 = knob("HIT_RATE", 200);
    let fresh_rate: u32 = knob("FRESH_RATE", 10);
    let duration: String = knob("DURATION", "20s".to_owned());
    let rounds: usize = knob("ROUNDS", 3);

    let receiver = OtlpReceiver::start().await?;
    let refused = format!("http://127.0.0.1:{}", free_port()?);
    let systems = vec![
        system(Export::Up, Some(&receiver.grpc_url)).await?,
        system(Export::Down, Some(&refused)).await?,
        system(Export::Off, None).await?,
    ];
    println!(
        "{} cores; {rounds} round(s); cache hits at {hit_rate}/s and fresh answers at \
         {fresh_rate}/s for {duration} each, per system and round",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let hit = json!({"query": "Where do orders ship from?"}).to_string();
    // `{i}` makes every question new; the filter keeps it out of the cache.
    let fresh = json!({"query": "Where do orders ship from? (question {i})",
                       "filter": {"lang": "en"}})
    .to_string();
    let workloads = [("cache hit", &hit, hit_rate), ("fresh", &fresh, fresh_rate)];
    // [system][workload] → per-round (p50, p99).
    let mut results = vec![vec![Vec::<(f64, f64)>::new(); workloads.len()]; systems.len()];
    let mut received = 0;
    for round in 0..rounds {
        for k in 0..systems.len() {
            let s = (k + round) % systems.len();
            for (w, (name, body, rate)) in workloads.iter().enumerate() {
                let r = load(&systems[s], body, *rate, &duration)?;
                let failed: u64 = r["failed"]
                    .as_object()
                    .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
                if failed > 0 {
                    bail!(
                        "{} {name}: {failed} requests failed: {r}",
                        systems[s].export.name()
                    );
                }
                results[s][w].push((
                    r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                ));
            }
            // The receiver keeps what it decoded; only the count matters here.
            received += receiver.forget_spans();
        }
    }

    let off = systems
        .iter()
        .position(|s| s.export == Export::Off)
        .unwrap_or(0);
    for (w, (name, _, rate)) in workloads.iter().enumerate() {
        println!("\n{name} at {rate}/s (median of rounds)");
        let medians: Vec<(f64, f64)> = results
            .iter()
            .map(|r| {
                (
                    median(r[w].iter().map(|x| x.0).collect()),
                    median(r[w].iter().map(|x| x.1).collect()),
                )
            })
            .collect();
        for (s, system) in systems.iter().enumerate() {
            let (p50, p99) = medians[s];
            println!(
                "  {:15} p50 {p50:7.3} ms ({:.2}×)  p99 {p99:7.3} ms ({:.2}×)",
                system.export.name(),
                p50 / medians[off].0,
                p99 / medians[off].1
            );
        }
    }
    println!("\nspans received by the collector: {received}");
    for system in &systems {
        let router = system.cluster.router_text("/metrics").await?;
        let cell = system.cluster.cell_text("cell-a", "/metrics").await?;
        println!(
            "  {:15} spans exported: router {}, cell {}; dropped: router {}, cell {}",
            system.export.name(),
            metric(&router, "otel_spans_exported_total"),
            metric(&cell, "otel_spans_exported_total"),
            dropped(&router),
            dropped(&cell)
        );
    }
    Ok(())
}
