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
//!
//! The generator shares the machine with what it measures, so it is built to
//! cost little: one runtime thread sends every request and reads every
//! response, on HTTP/1.1 connections of its own reused from a free list; a
//! pacing thread only wakes it when requests are due (Tokio's timers tick
//! every millisecond, which at thousands of requests a second would send
//! them in bursts and count the lag as latency).
//!
//! By default a request that finds no connection free opens one, as a crowd
//! of clients would; past what the server can answer that grows to tens of
//! thousands of connections, which this one thread cannot keep up with.
//! `--max-connections` caps them: a request due while all are busy waits
//! for one, and the wait counts in its latency.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

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
    /// At most this many connections open at once; a request due while all
    /// are busy waits for one (its wait counts in its latency). Unlimited by
    /// default: every request that finds none free opens one.
    #[arg(long)]
    max_connections: Option<std::num::NonZeroUsize>,
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
    method: Method,
    path_and_query: String,
}

impl Signer {
    fn headers(&self, body: &[u8], i: u64) -> Vec<(&'static str, String)> {
        let request_id = format!("loadgen-{i}");
        let timestamp = common::signing::now_secs();
        let signature = common::signing::sign(
            &self.key,
            &common::signing::SignedParts {
                method: self.method.as_str(),
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

/// Where requests go: an `http://host:port/path` URL taken apart once.
#[derive(Debug)]
struct Target {
    authority: String,
    host_header: HeaderValue,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be an http:// URL (TLS is not supported), got {url:?}");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("--url {url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
            host_header: HeaderValue::from_str(authority.as_str())?,
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// The generator's connections: those free for the next request, and how
/// many are open.
#[derive(Default)]
struct Connections {
    free: RefCell<Vec<Connection>>,
    open: std::cell::Cell<usize>,
    max: Option<usize>,
    /// Wakes a request waiting for a connection when one is freed or closed.
    released: Notify,
}

/// An open connection; dropping it closes it and makes room for another.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    _slot: Slot,
}

/// A place among the open connections, taken before connecting so that
/// requests waiting meanwhile do not all open one too; given back when
/// dropped, whether the connection closed or never opened. Weak, as the
/// free list that holds connections is the pool's own.
struct Slot(Weak<Connections>);

impl Slot {
    fn take(pool: &Rc<Connections>) -> Self {
        pool.open.set(pool.open.get() + 1);
        Self(Rc::downgrade(pool))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.open.set(pool.open.get() - 1);
            pool.released.notify_one();
        }
    }
}

/// A free connection, or a new one if the limit allows, or else the next
/// one freed.
async fn connection(target: &Target, pool: &Rc<Connections>) -> anyhow::Result<Connection> {
    loop {
        while let Some(connection) = pool.free.borrow_mut().pop() {
            if connection.sender.is_ready() {
                return Ok(connection);
            }
        }
        if pool.max.is_none_or(|max| pool.open.get() < max) {
            break;
        }
        pool.released.notified().await;
    }
    let slot = Slot::take(pool);
    let stream = tokio::net::TcpStream::connect(&target.authority).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or the sender is dropped.
        let _ = connection.await;
    });
    Ok(Connection {
        sender,
        _slot: slot,
    })
}

/// One request; the connection goes back to the free list once its answer is read.
async fn exchange(
    target: &Target,
    pool: &Rc<Connections>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<u16> {
    let mut connection = connection(target, pool).await?;
    let response = connection.sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    pool.free.borrow_mut().push(connection);
    pool.released.notify_one();
    Ok(status)
}

/// Wakes `due` at each request's due time, from a thread of its own: a
/// thread sleeps to the microsecond, where a Tokio timer would round up to
/// the next millisecond. Wake-ups not yet taken fold into one.
fn start_pacer(
    start: Instant,
    interval: Duration,
    total: u64,
    due: Arc<Notify>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            for i in 0..total {
                let at = start + interval.mul_f64(i as f64);
                if let Some(ahead) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(ahead);
                }
                due.notify_one();
            }
        })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate == 0 {
        bail!("--rate must be at least 1");
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::parse(&args.url)?;
    let mut headers = HeaderMap::new();
    headers.insert(HOST, target.host_header.clone());
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not Name: value"))?;
        headers.insert(
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        );
    }
    if args.body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let body = args.body.clone().map(Bytes::from);
    let varies = args.body.as_deref().is_some_and(|b| b.contains("{i}"));
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let signer = match (&args.cell_key_hex, &args.tenant) {
        (Some(hex_key), Some(tenant)) => Some(Signer {
            key: hex::decode(hex_key.trim()).context("--cell-key-hex is not hex")?,
            tenant: tenant.clone(),
            method: method.clone(),
            path_and_query: target.path_and_query.clone(),
        }),
        _ => None,
    };
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = ((args.warmup + args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let warmup_count = (args.warmup.as_secs_f64() * f64::from(args.rate)) as u64;
    let request = |i: u64| -> anyhow::Result<Request<Full<Bytes>>> {
        let this_body = match &body {
            Some(b) if varies => {
                Bytes::from(String::from_utf8_lossy(b).replace("{i}", &i.to_string()))
            }
            Some(b) => b.clone(),
            None => Bytes::new(),
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(target.path_and_query.as_str())
            .body(Full::new(this_body.clone()))?;
        *request.headers_mut() = headers.clone();
        if let Some(signer) = &signer {
            for (name, value) in signer.headers(&this_body, i) {
                request
                    .headers_mut()
                    .insert(name, HeaderValue::from_str(&value)?);
            }
        }
        Ok(request)
    };

    let connections = Rc::new(Connections {
        max: args.max_connections.map(std::num::NonZeroUsize::get),
        ..Connections::default()
    });
    let start = Instant::now();
    let pace = Arc::new(Notify::new());
    start_pacer(start, interval, total, pace.clone())?;
    let mut in_flight = FuturesUnordered::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut ok = 0u64;
    let mut failed: std::collections::BTreeMap<String, u64> = Default::default();
    let mut next = 0u64;
    loop {
        tokio::select! {
            biased;
            Some(o) = in_flight.next(), if !in_flight.is_empty() => {
                let o: Outcome = o;
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
            () = pace.notified(), if next < total => {
                // Every request due by now, each timed from when it was due.
                let now = Instant::now();
                while next < total {
                    let due = start + interval.mul_f64(next as f64);
                    if due > now {
                        break;
                    }
                    let (i, request) = (next, request(next)?);
                    let (target, connections) = (&target, &connections);
                    in_flight.push(async move {
                        let sent = tokio::time::timeout(args.timeout, exchange(target, connections, request));
                        let status = match sent.await {
                            Ok(Ok(status)) => Some(status),
                            Ok(Err(_)) | Err(_) => None,
                        };
                        Outcome {
                            micros: due.elapsed().as_micros() as u64,
                            status,
                            measured: i >= warmup_count,
                        }
                    });
                    next += 1;
                }
            }
            else => break,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_taken_apart_once() {
        let t = Target::parse("http://127.0.0.1:18080/v1/query?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:18080");
        assert_eq!(t.host_header, "127.0.0.1:18080");
        assert_eq!(t.path_and_query, "/v1/query?x=1");
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(t.authority, "localhost:80");
        assert_eq!(t.path_and_query, "/");
    }

    #[test]
    fn urls_it_cannot_send_to_say_why() {
        let err = Target::parse("https://example.com/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://") && err.contains("TLS"), "{err}");
        let err = Target::parse("not a url").unwrap_err().to_string();
        assert!(err.contains("not a URL"), "{err}");
    }
}
