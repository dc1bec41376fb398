//! `loadgen` against a server that answers slowly enough for requests to
//! overlap, counting the connections open at once.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server answering every request "ok" after `delay`; reports the most
/// connections it ever had open at once.
struct SlowServer {
    url: String,
    most_open: Arc<AtomicUsize>,
}

impl SlowServer {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let most_open = Arc::new(AtomicUsize::new(0));
        let most = most_open.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now_open, Ordering::SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if request.ends_with(b"\r\n\r\n") {
                            request.clear();
                            tokio::time::sleep(delay).await;
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { url, most_open }
    }
}

/// Runs `loadgen` for a second at 400 requests/s; returns its JSON result.
async fn loadgen(url: &str, extra: &[&str]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args([
        "--url",
        url,
        "--rate",
        "400",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--json",
    ]);
    command.args(extra);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_waiting_for_one_counts_as_latency() {
    // 400/s answered after 50 ms: about 20 requests in flight at any time.
    let unlimited = SlowServer::start(Duration::from_millis(50)).await;
    let result = loadgen(&unlimited.url, &[]).await;
    assert_eq!(result["ok"], 400, "{result}");
    let opened = unlimited.most_open.load(Ordering::SeqCst);
    assert!(opened > 4, "without a cap: {opened} connections at most");

    let capped = SlowServer::start(Duration::from_millis(50)).await;
    let result = loadgen(&capped.url, &["--max-connections", "4"]).await;
    assert_eq!(result["ok"], 400, "{result}");
    assert!(capped.most_open.load(Ordering::SeqCst) <= 4);
    // Four connections serve 80 requests/s here: the rest queue for one, and
    // each latency counts its wait from when the request was due.
    let p99 = result["p99_ms"].as_f64().unwrap_or(0.0);
    assert!(
        p99 > 1000.0,
        "queued requests must show their wait: p99 {p99} ms"
    );
}
