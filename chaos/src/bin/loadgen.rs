//! `loadgen`: open-loop load at a fixed rate, latencies in an HDR histogram.
//!
//! Requests are sent on schedule whether or not earlier ones have answered,
//! and each latency is measured from the moment the request was due, so a
//! stall shows up in the percentiles instead of hiding behind it
//! (no coordinated omission). Bounded by `--duration`; stops by itself.
//!
//! With `--cell-key-hex` and `--tenant` it signs each request as a router
//! would, so the same load can go straight to a cell: the difference between
//! the two runs is what the router adds.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use std::time::Instant;

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
    /// JSON body; requests are POSTs when set, GETs otherwise. `{i}` in it
    /// is replaced by the request's number, so that requests can differ.
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
    /// Sign requests with this router↔cell key (hex), to call a cell directly.
    #[arg(long, requires = "tenant")]
    cell_key_hex: Option<String>,
    /// The tenant signed requests act for.
    #[arg(long, requires = "cell_key_hex")]
    tenant: Option<String>,
}

/// What a signed request needs.
struct Signer {
    key: Vec<u8>,
    tenant: String,
    method: &'static str,
    path_and_query: String,
}

impl Signer {
    fn headers(&self, body: &[u8], i: u64) -> Vec<(&'static str, String)> {
        let request_id = format!("loadgen-{i}");
        let timestamp = common::signing::now_secs();
        let signature = common::signing::sign(
            &self.key,
            &common::signing::SignedParts {
                method: self.method,
                path_and_query: &self.path_and_query,
                tenant: &self.tenant,
                request_id: &request_id,
                timestamp,
                body,
            },
        );
        vec![
            (common::headers::TENANT, self.tenant.clone()),
            (common::headers::REQUEST_ID, request_id),
            (common::signing::TIMESTAMP_HEADER, timestamp.to_string()),
            (common::signing::SIGNATURE_HEADER, signature),
        ]
    }
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
    let varies = args.body.as_deref().is_some_and(|b| b.contains("{i}"));
    let signer = match (&args.cell_key_hex, &args.tenant) {
        (Some(hex_key), Some(tenant)) => {
            let url = reqwest::Url::parse(&args.url).context("--url is not a URL")?;
            let path_and_query = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            Some(std::sync::Arc::new(Signer {
                key: hex::decode(hex_key.trim()).context("--cell-key-hex is not hex")?,
                tenant: tenant.clone(),
                method: if body.is_some() { "POST" } else { "GET" },
                path_and_query,
            }))
        }
        _ => None,
    };
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = ((args.warmup + args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let warmup_count = (args.warmup.as_secs_f64() * f64::from(args.rate)) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    // Requests are paced by a thread of their own: the runtime's timers tick
    // every millisecond, which at thousands of requests a second would send
    // them in bursts and count up to a millisecond of timer lag as latency.
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    let url = args.url.clone();
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                if let Some(ahead) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(ahead);
                }
                let this_body = body.as_ref().map(|b| {
                    if varies {
                        bytes::Bytes::from(
                            String::from_utf8_lossy(b).replace("{i}", &i.to_string()),
                        )
                    } else {
                        b.clone()
                    }
                });
                let mut request = match &this_body {
                    Some(b) => client.post(&url).body(b.clone()),
                    None => client.get(&url),
                }
                .headers(headers.clone());
                if let Some(signer) = &signer {
                    let bytes = this_body.as_deref().unwrap_or_default();
                    for (name, value) in signer.headers(bytes, i) {
                        request = request.header(name, value);
                    }
                }
                let tx = tx.clone();
                runtime.spawn(async move {
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
        })?;
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
