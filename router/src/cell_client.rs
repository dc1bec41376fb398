//! HTTP/1.1 to the cells, on hyper connections this client keeps per cell
//! endpoint. Each worker thread has its own client, so a connection's task
//! runs on the thread whose requests use it; the control runtime has one for
//! hint replay. Against a general-purpose client (reqwest) this saves URL
//! parsing per request and a layer of pool and middleware futures: about a
//! fifth of the router's CPU per request (docs/benchmarks.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

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

/// A cell endpoint as this client knows it.
struct Endpoint {
    /// `host:port`, to connect to.
    authority: Arc<str>,
    host: HeaderValue,
    /// Open connections, in use or free (a free one is ready).
    senders: Vec<Sender>,
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
            senders: Vec::new(),
        })
    }
}

#[derive(Clone)]
pub struct CellClient {
    /// By endpoint URL, parsed once.
    idle: Arc<Mutex<HashMap<Arc<str>, Endpoint>>>,
    connect_timeout: Duration,
}

impl CellClient {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            idle: Arc::default(),
            connect_timeout,
        }
    }

    /// Sends `request` (its URI a path and query) to the cell at `endpoint`
    /// (`http://host:port`). A request that a reused connection turns out
    /// to have closed before taking it is sent again on a new connection.
    pub async fn send(
        &self,
        endpoint: &Arc<str>,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, CellError> {
        let (authority, host, ready) = self.checkout(endpoint)?;
        request.headers_mut().insert(header::HOST, host);
        if let Some(mut sender) = ready {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put_back(endpoint, sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    // Never sent: the cell had closed the connection.
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(endpoint, &authority).await?;
        let response = sender.send_request(request).await?;
        self.put_back(endpoint, sender);
        Ok(response)
    }

    /// The endpoint's authority and Host header, and a ready connection to it if one is free.
    fn checkout(
        &self,
        endpoint: &Arc<str>,
    ) -> Result<(Arc<str>, HeaderValue, Option<Sender>), CellError> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let known = match idle.entry(endpoint.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Endpoint::parse(endpoint)?),
        };
        known.senders.retain(|s| !s.is_closed());
        let ready = known
            .senders
            .iter()
            .rposition(Sender::is_ready)
            .map(|i| known.senders.swap_remove(i));
        Ok((known.authority.clone(), known.host.clone(), ready))
    }

    /// Back in the list as soon as the response has started: it is taken
    /// again once ready, which is when that response's body has been read.
    fn put_back(&self, endpoint: &Arc<str>, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = idle.get_mut(endpoint) {
            known.senders.push(sender);
        }
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
        // Connections to cells that have gone are dropped here, not per request.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for known in idle.values_mut() {
            known.senders.retain(|s| !s.is_closed());
        }
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path).body(Full::default()).unwrap()
    }

    /// A server that answers one request per connection, then closes it
    /// without saying so (no `Connection: close`), as a restarting cell does.
    async fn one_answer_per_connection() -> Arc<str> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        Arc::from(endpoint)
    }

    #[tokio::test]
    async fn a_connection_the_cell_closed_is_not_an_error() {
        let endpoint = one_answer_per_connection().await;
        let client = CellClient::new(Duration::from_secs(1));
        for _ in 0..20 {
            let response = client.send(&endpoint, get("/v1/models")).await.unwrap();
            assert_eq!(response.status(), 200);
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn connections_are_reused() {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint: Arc<str> = Arc::from(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = CellClient::new(Duration::from_secs(1));
        for _ in 0..5 {
            let response = client.send(&endpoint, get("/")).await.unwrap();
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
        let idle = client.idle.lock().unwrap();
        assert_eq!(
            idle[&endpoint].senders.len(),
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
