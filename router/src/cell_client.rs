//! HTTP/1.1 to the cells, on hyper connections this client keeps per cell
//! endpoint. Each worker thread has its own client, so a connection's task
//! runs on the thread whose requests use it; the control runtime has one for
//! hint replay. Against a general-purpose client (reqwest) this saves URL
//! parsing per request and a layer of pool and middleware futures: about a
//! fifth of the router's CPU per request (docs/benchmarks.md).
//!
//! A connection is free again once its response has been read to the end;
//! free ones are taken most recently used first, and close after
//! `IDLE_TIMEOUT` unused, so a burst's extra connections do not stay open
//! and a request never scans more than the connections actually free. An
//! endpoint whose free connections have all closed, and that no request used
//! since the sweep before, is forgotten, so cells that come and go (new
//! addresses on every restart) leave nothing behind.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

/// How long a connection to a cell is kept open unused. A burst opens as many
/// connections as it has requests in flight; they close again after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not get a response from a cell.
#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// Nothing reached the cell: trying another is safe for any request.
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl CellError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A connection whose last response has been read to its end.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// A cell endpoint as this client knows it.
struct Endpoint {
    /// `host:port`, to connect to.
    authority: Arc<str>,
    host: HeaderValue,
    /// Free connections, the longest unused first; the most recently used
    /// is taken first, so that those a burst opened fall idle and close.
    idle: Vec<Idle>,
    /// Whether a request was sent to it since the last sweep for idle
    /// connections.
    used: bool,
}

impl Endpoint {
    fn parse(endpoint: &str) -> Result<Self, CellError> {
        let authority = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| CellError::Connect(format!("{endpoint} is not an http:// endpoint")))?;
        let host = HeaderValue::from_str(authority)
            .map_err(|_| CellError::Connect(format!("{endpoint} is not a valid host")))?;
        Ok(Self {
            authority: Arc::from(authority),
            host,
            idle: Vec::new(),
            used: true,
        })
    }

    /// Drops connections unused for longer than `timeout`, and closed ones;
    /// false once the endpoint has no free connection left and was not used
    /// since the last sweep.
    fn close_idle(&mut self, now: Instant, timeout: Duration) -> bool {
        self.idle
            .retain(|c| now.duration_since(c.since) < timeout && !c.sender.is_closed());
        let keep = !self.idle.is_empty() || self.used;
        self.used = false;
        keep
    }
}

type Pool = Mutex<HashMap<Arc<str>, Endpoint>>;

/// The pool's lock; a panic while it was held leaves nothing half-done.
fn lock(pool: &Pool) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Endpoint>> {
    pool.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
pub struct CellClient {
    /// By endpoint URL, parsed once.
    pool: Arc<Pool>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Whether the task that closes idle connections has been started.
    sweeping: Arc<std::sync::Once>,
}

impl CellClient {
    pub fn new(connect_timeout: Duration) -> Self {
        Self::with_idle_timeout(connect_timeout, IDLE_TIMEOUT)
    }

    pub fn with_idle_timeout(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            pool: Arc::default(),
            connect_timeout,
            idle_timeout,
            sweeping: Arc::new(std::sync::Once::new()),
        }
    }

    /// Sends `request` (its URI a path and query) to the cell at `endpoint`
    /// (`http://host:port`), on a free connection if there is one. A request
    /// that a free connection turns out to have closed before taking it is
    /// sent on the next one, or a new one. The connection is free again once
    /// the response's body has been read to its end.
    pub async fn send(
        &self,
        endpoint: &Arc<str>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<CellBody>, CellError> {
        let (authority, mut free) = {
            let mut pool = self.lock();
            let known = match pool.entry(endpoint.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Endpoint::parse(endpoint)?)
                }
            };
            request
                .headers_mut()
                .insert(header::HOST, known.host.clone());
            known.used = true;
            (known.authority.clone(), known.idle.pop().map(|c| c.sender))
        };
        // The first free connection came with the lookup; others are taken
        // only if it turns out closed.
        while let Some(mut sender) = free.take().or_else(|| self.take_idle(endpoint)) {
            // Its last exchange is over, so it is ready at once unless closed.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.reusable(endpoint, sender, response)),
                Err(mut e) => match e.take_message() {
                    // Never sent: the cell had closed the connection.
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(endpoint, &authority).await?;
        let response = sender.send_request(request).await?;
        Ok(self.reusable(endpoint, sender, response))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Endpoint>> {
        lock(&self.pool)
    }

    /// The most recently used free connection to `endpoint`.
    fn take_idle(&self, endpoint: &Arc<str>) -> Option<Sender> {
        self.lock()
            .get_mut(endpoint)
            .and_then(|known| known.idle.pop())
            .map(|c| c.sender)
    }

    fn reusable(
        &self,
        endpoint: &Arc<str>,
        sender: Sender,
        response: Response<Incoming>,
    ) -> Response<CellBody> {
        response.map(|inner| CellBody {
            inner,
            reuse: Some(Reuse {
                pool: Arc::downgrade(&self.pool),
                endpoint: endpoint.clone(),
                sender,
            }),
        })
    }

    async fn connect(&self, endpoint: &Arc<str>, authority: &str) -> Result<Sender, CellError> {
        let cannot = |e: &dyn std::fmt::Display| CellError::Connect(format!("{endpoint}: {e}"));
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(authority),
        )
        .await
        .map_err(|_| cannot(&"timed out"))?
        .map_err(|e| cannot(&e))?;
        stream.set_nodelay(true).map_err(|e| cannot(&e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| cannot(&e))?;
        tokio::spawn(async move {
            // Ends when the cell closes the connection or every sender is dropped.
            let _ = connection.await;
        });
        // On the runtime of the first connection, which is where its
        // connections' tasks run too.
        self.sweeping.call_once(|| {
            tokio::spawn(close_idle(Arc::downgrade(&self.pool), self.idle_timeout));
        });
        Ok(sender)
    }
}

/// Closes connections that have been free for longer than `timeout`, until
/// the client is dropped.
async fn close_idle(pool: Weak<Pool>, timeout: Duration) {
    let mut every = tokio::time::interval(timeout / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        lock(&pool).retain(|_, known| known.close_idle(now, timeout));
    }
}

/// Gives a connection back to its pool once its response has been read.
struct Reuse {
    pool: Weak<Pool>,
    endpoint: Arc<str>,
    sender: Sender,
}

impl Reuse {
    fn give_back(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if let Some(known) = lock(&pool).get_mut(&self.endpoint) {
            known.idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

/// A cell's response body. Read to its end, it frees its connection for the
/// next request; dropped before, it takes the connection with it.
pub struct CellBody {
    inner: Incoming,
    reuse: Option<Reuse>,
}

impl CellBody {
    fn finished(&mut self) {
        if let Some(reuse) = self.reuse.take() {
            reuse.give_back();
        }
    }
}

impl std::fmt::Debug for CellBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellBody")
            .field("inner", &self.inner)
            .field("reusable", &self.reuse.is_some())
            .finish()
    }
}

impl Body for CellBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.finished(),
            // A body of known length is over with its last byte; its reader
            // need not poll again.
            Some(Ok(_)) if this.inner.is_end_stream() => this.finished(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.reuse = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CellBody {
    fn drop(&mut self) {
        // A body that is empty, or was read to its last byte, is over even if
        // nobody polled it to the end.
        if self.inner.is_end_stream() {
            self.finished();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path).body(Full::default()).unwrap()
    }

    /// A server that answers every request with "ok", counting the
    /// connections it accepts and reporting each one the client closes.
    struct RawServer {
        endpoint: Arc<str>,
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        closes: tokio::sync::mpsc::UnboundedReceiver<()>,
    }

    impl RawServer {
        /// Without `keep_alive` it closes each connection after one answer,
        /// without saying so (no `Connection: close`), as a restarting cell does.
        async fn start(keep_alive: bool) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
            let counter = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let closed = closed.clone();
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = stream.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                let _ = closed.send(());
                                return;
                            }
                            request.extend_from_slice(&buf[..n]);
                            if request.ends_with(b"\r\n\r\n") {
                                request.clear();
                                let _ = stream
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                    .await;
                                if !keep_alive {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            Self {
                endpoint: Arc::from(endpoint),
                accepted,
                closes,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    async fn read_to_end(response: Response<CellBody>) {
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_the_cell_closed_is_not_an_error() {
        let server = RawServer::start(false).await;
        let client = CellClient::new(Duration::from_secs(1));
        for _ in 0..20 {
            let response = client
                .send(&server.endpoint, get("/v1/models"))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            read_to_end(response).await;
        }
    }

    #[tokio::test]
    async fn a_connection_is_free_again_once_its_response_is_read() {
        let server = RawServer::start(true).await;
        let endpoint = &server.endpoint;
        let accepted = || server.accepted();
        let client = CellClient::new(Duration::from_secs(1));
        let unread = client.send(endpoint, get("/")).await.unwrap();
        let second = client.send(endpoint, get("/")).await.unwrap();
        assert_eq!(
            accepted(),
            2,
            "a response still being read holds its connection"
        );
        read_to_end(unread).await;
        read_to_end(second).await;
        read_to_end(client.send(endpoint, get("/")).await.unwrap()).await;
        assert_eq!(accepted(), 2, "read to the end, both are free again");
        assert_eq!(client.lock()[endpoint].idle.len(), 2);
    }

    #[tokio::test]
    async fn connections_a_burst_opened_close_once_idle() {
        let mut server = RawServer::start(true).await;
        let endpoint = server.endpoint.clone();
        let client =
            CellClient::with_idle_timeout(Duration::from_secs(1), Duration::from_millis(200));
        let burst = futures::future::join_all((0..3).map(|_| client.send(&endpoint, get("/"))))
            .await
            .into_iter()
            .map(Result::unwrap);
        for response in burst.collect::<Vec<_>>() {
            read_to_end(response).await;
        }
        assert_eq!(server.accepted(), 3);
        // Steady traffic keeps one connection busy; the two others fall idle.
        let mut closed = 0;
        let traffic_until_two_close = async {
            while closed < 2 {
                read_to_end(client.send(&endpoint, get("/")).await.unwrap()).await;
                while server.closes.try_recv().is_ok() {
                    closed += 1;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), traffic_until_two_close)
            .await
            .expect("the idle connections were never closed");
        assert_eq!(closed, 2, "the connection in use stays open");
        assert_eq!(server.accepted(), 3);
        assert_eq!(client.lock()[&endpoint].idle.len(), 1);
    }

    #[tokio::test]
    async fn an_endpoint_unused_for_the_idle_timeout_is_forgotten() {
        let gone = RawServer::start(true).await;
        let busy = RawServer::start(true).await;
        let client =
            CellClient::with_idle_timeout(Duration::from_secs(1), Duration::from_millis(200));
        read_to_end(client.send(&gone.endpoint, get("/")).await.unwrap()).await;
        let known = |endpoint: &Arc<str>| client.lock().contains_key(endpoint);
        assert!(known(&gone.endpoint));
        // Traffic to the other endpoint goes on while the first falls idle.
        let traffic_until_forgotten = async {
            while known(&gone.endpoint) {
                read_to_end(client.send(&busy.endpoint, get("/")).await.unwrap()).await;
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), traffic_until_forgotten)
            .await
            .expect("the unused endpoint was never forgotten");
        assert!(known(&busy.endpoint), "an endpoint in use is kept");
        // Used again, it is known again.
        read_to_end(client.send(&gone.endpoint, get("/")).await.unwrap()).await;
        assert!(known(&gone.endpoint));
        assert_eq!(gone.accepted(), 2);
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint: Arc<str> = Arc::from(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = CellClient::new(Duration::from_secs(1));
        for _ in 0..5 {
            read_to_end(client.send(&endpoint, get("/")).await.unwrap()).await;
        }
        assert_eq!(
            client.lock()[&endpoint].idle.len(),
            1,
            "one connection served all five"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint: Arc<str> = Arc::from(format!("http://{}", listener.local_addr().unwrap()));
        drop(listener);
        let client = CellClient::new(Duration::from_secs(1));
        let err = client.send(&endpoint, get("/")).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(err.to_string().contains(&*endpoint), "{err}");
        let err = client
            .send(&Arc::from("https://cell:443"), get("/"))
            .await
            .unwrap_err();
        assert!(
            err.is_connect() && err.to_string().contains("http://"),
            "{err}"
        );
    }
}
