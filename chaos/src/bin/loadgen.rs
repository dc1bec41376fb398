//! `loadgen`: open-loop load at a fixed rate, latencies in an HDR histogram.
//!
//! Requests are sent on schedule whether or not earlier ones have answered,
//! and each latency is measured from the moment the request was due, so a
//! stall shows up in the percentiles instead of hiding behind it
//! (no coordinated omission). Bounded by `--duration`; stops by itself.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Open-loop HTTP load at a fixed rate with an HDR latency histogram")]
struct Args {
    /// Full URL to send requests to.
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long to send for (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (same rate, not recorded).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// JSON body; requests are POSTs when set, GETs otherwise.
    #[arg(long)]
    body: Option<String>,
    /// Extra header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

struct Outcome {
    micros: u64,
    status: Option<u16>,
    measured: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()?;
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not Name: value"))?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            reqwest::header::HeaderValue::from_str(value.trim())?,
        );
    }
    if args.body.is_some() {
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
    }
    let body = args.body.clone().map(bytes::Bytes::from);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = ((args.warmup + args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let warmup_count = (args.warmup.as_secs_f64() * f64::from(args.rate)) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        let url = args.url.clone();
        tokio::spawn(async move {
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                let request = match &body {
                    Some(b) => client.post(&url).body(b.clone()),
                    None => client.get(&url),
                }
                .headers(headers.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let status = match request.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let _ = r.bytes().await;
                            Some(status)
                        }
                        Err(_) => None,
                    };
                    let micros = due.elapsed().as_micros() as u64;
                    let _ = tx.send(Outcome {
                        micros,
                        status,
                        measured: i >= warmup_count,
                    });
                });
            }
        })
    };
    drop(sender);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut ok = 0u64;
    let mut failed: std::collections::BTreeMap<String, u64> = Default::default();
    let mut received = 0u64;
    while received < total {
        let Some(o) = rx.recv().await else { break };
        received += 1;
        if !o.measured {
            continue;
        }
        match o.status {
            Some(s) if (200..300).contains(&s) => {
                ok += 1;
                histogram.record(o.micros.max(1))?;
            }
            Some(s) => *failed.entry(s.to_string()).or_default() += 1,
            None => *failed.entry("transport".into()).or_default() += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64() - args.warmup.as_secs_f64();
    let p = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "rate": args.rate, "ok": ok, "failed": failed,
                "achieved_rate": ok as f64 / elapsed.max(1e-9),
                "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "p999_ms": p(0.999),
                "max_ms": histogram.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "rate {}/s for {:.1}s: {ok} ok, failed {failed:?}\n  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            args.rate,
            elapsed,
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            histogram.max() as f64 / 1000.0
        );
    }
    Ok(())
}
