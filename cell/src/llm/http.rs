//! The cell's HTTP client to its providers (and to a remote embedder).
//!
//! A reqwest connection is driven by a task on the runtime that opened it. With
//! one client shared by every worker, a call on one worker could ride a pooled
//! connection that another worker's runtime drives: each call woke that other
//! thread, and the call broke if that runtime ended first. So each
//! single-threaded runtime (a worker) gets a client of its own, kept in its
//! thread's table; tasks on a multi-threaded runtime share one, as with the
//! cache's Redis connection (`cache::redis_conn`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long an unused pooled connection to a provider stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Hands out the calling runtime's client. Clones share their clients.
#[derive(Clone, Debug)]
pub struct ProviderHttp {
    /// Names this handle (and its clones) in each thread's table.
    handle: u64,
    /// The client of multi-threaded runtimes, and the template for the rest.
    shared: reqwest::Client,
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static THREAD_CLIENTS: RefCell<Vec<(u64, reqwest::Client)>> = const { RefCell::new(Vec::new()) };
}

fn build() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
}

impl ProviderHttp {
    pub fn new() -> reqwest::Result<Self> {
        Ok(Self {
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            shared: build()?,
        })
    }

    /// The client for the calling runtime: the thread's own on a
    /// single-threaded runtime, else the shared one.
    pub fn client(&self) -> reqwest::Client {
        if !common::workers::on_a_runtime_of_its_own() {
            return self.shared.clone();
        }
        THREAD_CLIENTS.with_borrow_mut(|clients| {
            if let Some((_, client)) = clients.iter().find(|(h, _)| *h == self.handle) {
                return client.clone();
            }
            // The shared client built fine with the same settings; should
            // another fail, the shared one still works (across threads).
            let client = build().unwrap_or_else(|_| self.shared.clone());
            clients.push((self.handle, client.clone()));
            client
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// An HTTP server that answers every request on a connection and counts
    /// the connections it accepts.
    fn counting_server() -> (String, Arc<AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut lines = BufReader::new(stream).lines();
                    while let Some(Ok(line)) = lines.next() {
                        if line.is_empty() {
                            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if writer.write_all(answer.as_bytes()).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    /// Sends `times` requests on a single-threaded runtime of this thread's,
    /// then keeps that runtime running until `until` resolves.
    fn get_on_a_runtime_of_its_own(
        http: &ProviderHttp,
        url: &str,
        times: usize,
        until: impl std::future::Future<Output = ()>,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..times {
                let answer = http.client().get(url).send().await.unwrap();
                assert_eq!(answer.text().await.unwrap(), "ok");
            }
            until.await;
        });
    }

    #[test]
    fn each_worker_runtime_opens_connections_of_its_own() {
        let (url, accepted) = counting_server();
        let http = ProviderHttp::new().unwrap();
        let (a, url_a) = (http.clone(), url.clone());
        let (first_done, first_is_done) = std::sync::mpsc::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        // The first worker keeps its runtime, and its idle pooled connection,
        // alive while the second one sends.
        let first = std::thread::spawn(move || {
            get_on_a_runtime_of_its_own(&a, &url_a, 3, async move {
                first_done.send(()).unwrap();
                let _ = released.await;
            });
        });
        first_is_done.recv().unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
        let (b, url_b) = (http.clone(), url.clone());
        std::thread::spawn(move || get_on_a_runtime_of_its_own(&b, &url_b, 3, async {}))
            .join()
            .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the second worker used the first one's connection"
        );
        release.send(()).unwrap();
        first.join().unwrap();
    }

    #[test]
    fn a_multi_threaded_runtime_shares_one_client() {
        let (url, accepted) = counting_server();
        let http = ProviderHttp::new().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..8 {
                let http = http.clone();
                let url = url.clone();
                tokio::spawn(async move {
                    let answer = http.client().get(&url).send().await.unwrap();
                    assert_eq!(answer.text().await.unwrap(), "ok");
                })
                .await
                .unwrap();
            }
        });
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
