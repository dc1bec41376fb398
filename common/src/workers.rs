//! The threads that serve a service's HTTP connections, router and cell alike.
//!
//! Connections are accepted on the control runtime (the one running etcd
//! watches and other background tasks) and handed round-robin to worker
//! threads, each running a single-threaded Tokio runtime of its own. A
//! connection, the requests on it and whatever those requests open from that
//! thread (the router's connections to cells, a cell's Redis connection) then
//! all live on one thread: a request is served without waking another one.
//! On a machine whose cores the services share, that took about a fifth off
//! the router's CPU per request (docs/benchmarks.md).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::ConfigErrors;

/// How long accepting pauses after an error that is not the client's, such
/// as running out of file descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The most worker threads a service may be configured with.
pub const MAX_WORKERS: usize = 256;

/// How long a client may take to send a request's headers, unless
/// configured otherwise.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections the kernel queues for a listener until they are accepted.
/// `TcpListener::bind` asks for 128, as the standard library does; a burst
/// of new connections beyond that (clients opening connections faster than
/// answers come back) has its SYNs dropped, and each one waits a second or
/// more for the retry. The kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` whose accept queue holds `LISTEN_BACKLOG`
/// connections; the address can be bound again at once after a restart.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The number of workers a service's config asks for (its `workers` field),
/// by default one per core; out of range is an error on that field.
pub fn count_from_config(configured: Option<usize>, errors: &mut ConfigErrors) -> usize {
    let workers = configured.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    errors.check(
        (1..=MAX_WORKERS).contains(&workers),
        "workers",
        format!("must be between 1 and {MAX_WORKERS}"),
    );
    workers
}

pub struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    next: usize,
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Workers {
    /// Starts a worker thread for each of `apps` (named `<name>-worker-<i>`),
    /// serving with it. A connection whose client takes longer than
    /// `header_read_timeout` to send a request's headers is closed.
    pub fn start(
        name: &str,
        apps: Vec<axum::Router>,
        header_read_timeout: Duration,
    ) -> io::Result<Self> {
        let (shutdown, _) = watch::channel(false);
        let (serving, _) = watch::channel(apps.len());
        let serving = Arc::new(serving);
        let mut inboxes = Vec::with_capacity(apps.len());
        let mut threads = Vec::with_capacity(apps.len());
        for (i, app) in apps.into_iter().enumerate() {
            let (inbox, incoming) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let stop = shutdown.subscribe();
            let still_serving = StillServing(serving.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        serve(incoming, stop, app, header_read_timeout).await;
                        // A request on one worker may be using a connection
                        // that another worker's runtime drives (a client
                        // pooled across workers does that): no runtime ends
                        // before every worker has finished its requests.
                        let mut all = still_serving.0.subscribe();
                        drop(still_serving);
                        let _ = all.wait_for(|n| *n == 0).await;
                    });
                })?;
            inboxes.push(inbox);
            threads.push(thread);
        }
        Ok(Self {
            inboxes,
            next: 0,
            threads,
            shutdown,
        })
    }

    /// Accepts connections on `listener` and hands each to a worker. Returns
    /// only if a worker has stopped. Cancel-safe: dropping it between two
    /// connections loses none.
    pub async fn accept_from(&mut self, listener: &TcpListener) -> io::Error {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(e) = self.dispatch(stream) {
                        return e;
                    }
                }
                // The client gave up before it was accepted.
                Err(e) if is_connection_error(&e) => {}
                // Out of file descriptors and the like: the connection waiting
                // is still there, so accepting again at once would fail again,
                // in a busy loop. Meanwhile the backlog holds new connections.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept connections, pausing accepts for {ACCEPT_PAUSE:?}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            }
        }
    }

    /// Hands an accepted connection to the next worker.
    fn dispatch(&mut self, stream: tokio::net::TcpStream) -> io::Result<()> {
        // Out of this runtime's reactor, into the worker's.
        let stream = stream.into_std()?;
        let inbox = &self.inboxes[self.next % self.inboxes.len()];
        self.next = self.next.wrapping_add(1);
        inbox
            .send(stream)
            .map_err(|_| io::Error::other("a worker thread has stopped"))
    }

    /// Stops serving new requests, lets every request in flight finish, and
    /// returns once every worker has closed its last connection.
    pub async fn drain(self) {
        let _ = self.shutdown.send(true);
        drop(self.inboxes);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked while draining");
                }
            }
        });
        let _ = joined.await;
    }
}

/// Counts a worker as serving until dropped, which a panic does too, so
/// that the other workers never wait for one that is gone.
struct StillServing(Arc<watch::Sender<usize>>);

impl Drop for StillServing {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// One worker: serves the connections it is handed until told to stop,
/// then finishes the requests in flight on each of them.
async fn serve(
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
    app: axum::Router,
    header_read_timeout: Duration,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut connections = JoinSet::new();
    let for_connections = stop.clone();
    loop {
        tokio::select! {
            stream = incoming.recv() => match stream {
                Some(stream) => {
                    connections.spawn(serve_connection(
                        http.clone(),
                        stream,
                        app.clone(),
                        for_connections.clone(),
                    ));
                }
                None => break,
            },
            () = stopping(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    http: http1::Builder,
    stream: std::net::TcpStream,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match tokio::net::TcpStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve an accepted connection");
            return;
        }
    };
    let connection = http
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(&mut stop) => {
            // Ends the connection after the request in flight, if any.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Whether the caller runs on a single-threaded runtime (as a worker does),
/// whose tasks, and the connections they make, never leave this thread.
pub fn on_a_runtime_of_its_own() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Resolves once the service is stopping (at once if it already is).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the service is stopping all the same.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        // Several times what `TcpListener::bind` queues, none accepted yet: a
        // handshake completes only if the queue has room for it, and one that
        // has not is retried from SYN after 1, 3, 7... seconds, never in time.
        let burst = 600;
        let mut connecting = JoinSet::new();
        for _ in 0..burst {
            connecting.spawn(tokio::net::TcpStream::connect(addr));
        }
        let mut streams = Vec::with_capacity(burst);
        let all_connected = async {
            while let Some(connected) = connecting.join_next().await {
                streams.push(connected.unwrap().unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all_connected)
            .await
            .expect("connections beyond the accept queue's room were dropped");
        assert_eq!(streams.len(), burst);
        for _ in 0..burst {
            listener.accept().await.unwrap();
        }
    }
}
