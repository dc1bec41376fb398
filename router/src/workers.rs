//! The threads that serve tenants' connections.
//!
//! Connections are accepted on the control runtime and handed round-robin to
//! worker threads, each running a single-threaded Tokio runtime of its own
//! with its own client to the cells. A connection, the requests on it and
//! the connections to cells opened for them then all live on one thread: a
//! request is served without waking another thread. On a machine whose cores
//! the router shares with cells and Redis, that took about a fifth off the
//! router's CPU per request (docs/benchmarks.md).

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub struct Workers {
    inboxes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    next: usize,
    threads: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl Workers {
    /// Starts a worker thread for each of `apps`, serving with it. A
    /// connection whose client takes longer than `header_read_timeout` to
    /// send a request's headers is closed.
    pub fn start(apps: Vec<axum::Router>, header_read_timeout: Duration) -> io::Result<Self> {
        let (shutdown, _) = watch::channel(false);
        let mut inboxes = Vec::with_capacity(apps.len());
        let mut threads = Vec::with_capacity(apps.len());
        for (i, app) in apps.into_iter().enumerate() {
            let (inbox, incoming) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let stop = shutdown.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("router-worker-{i}"))
                .spawn(move || runtime.block_on(serve(incoming, stop, app, header_read_timeout)))?;
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

    /// Hands an accepted connection to the next worker.
    pub fn dispatch(&mut self, stream: tokio::net::TcpStream) -> io::Result<()> {
        // Out of this runtime's reactor, into the worker's.
        let stream = stream.into_std()?;
        let inbox = &self.inboxes[self.next % self.inboxes.len()];
        self.next = self.next.wrapping_add(1);
        inbox
            .send(stream)
            .map_err(|_| io::Error::other("a router worker has stopped"))
    }

    /// Stops taking connections, lets every request in flight finish, and
    /// returns once every worker has closed its last connection.
    pub async fn drain(self) {
        let _ = self.shutdown.send(true);
        drop(self.inboxes);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a router worker panicked while draining");
                }
            }
        });
        let _ = joined.await;
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

/// Resolves once the router is stopping (at once if it already is).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the router is stopping all the same.
    let _ = stop.wait_for(|stopping| *stopping).await;
}
