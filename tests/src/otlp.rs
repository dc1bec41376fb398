//! An OTLP trace receiver for tests: gRPC (`TraceService/Export`) and
//! HTTP/protobuf (`POST /v1/traces`) on ports of its own, decoding with the
//! official protobuf types and keeping every span it is sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::Notify;

/// One span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub resource: BTreeMap<String, String>,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, `SPAN_KIND_INTERNAL`, …
    pub kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK` or `STATUS_CODE_ERROR`.
    pub status: String,
    /// Attribute values rendered as text (ints and floats as Rust prints them).
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<u64>,
    arrived: Notify,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for resource_spans in request.resource_spans {
            let resource: BTreeMap<String, String> = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        resource: resource.clone(),
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(
                            span.kind,
                        )
                        .map(|k| k.as_str_name().to_owned())
                        .unwrap_or_default(),
                        status: span
                            .status
                            .as_ref()
                            .and_then(|s| {
                                opentelemetry_proto::tonic::trace::v1::status::StatusCode::try_from(
                                    s.code,
                                )
                                .ok()
                            })
                            .map(|c| c.as_str_name().to_owned())
                            .unwrap_or_else(|| "STATUS_CODE_UNSET".into()),
                        attributes: attributes(&span.attributes),
                        name: span.name,
                    });
                }
            }
        }
        if let Ok(mut all) = self.spans.lock() {
            all.extend(spans);
        }
        if let Ok(mut n) = self.requests.lock() {
            *n += 1;
        }
        self.arrived.notify_waiters();
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

struct Grpc(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver; both servers stop when it is dropped.
pub struct OtlpReceiver {
    /// Base URL of the gRPC server (`OTEL_EXPORTER_OTLP_ENDPOINT` for `grpc`).
    pub grpc_url: String,
    /// Base URL of the HTTP server (for `http/protobuf`; spans go to `/v1/traces`).
    pub http_url: String,
    received: Arc<Received>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let received = Arc::new(Received::default());
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc_url = format!("http://{}", grpc_listener.local_addr()?);
        let incoming = futures::stream::unfold(grpc_listener, |listener| async move {
            let accepted = listener.accept().await.map(|(tcp, _)| tcp);
            Some((accepted, listener))
        });
        let grpc = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Grpc(received.clone())))
            .serve_with_incoming(incoming);
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_url = format!("http://{}", http_listener.local_addr()?);
        let for_http = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: bytes::Bytes| {
                let received = for_http.clone();
                async move {
                    use axum::response::IntoResponse;
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(request) => {
                            received.take(request);
                            let ok = ExportTraceServiceResponse {
                                partial_success: None,
                            };
                            (
                                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                ok.encode_to_vec(),
                            )
                                .into_response()
                        }
                        Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    }
                }
            }),
        );
        let tasks = vec![
            tokio::spawn(async move {
                let _ = grpc.await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(http_listener, app).await;
            }),
        ];
        Ok(Self {
            grpc_url,
            http_url,
            received,
            tasks,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        self.received.requests.lock().map(|n| *n).unwrap_or(0)
    }

    /// Waits until `done` holds for the spans received, up to `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}:{}", s.service, s.name))
                    .collect();
                bail!("no {what} within {timeout:?}; received {names:?}");
            }
        }
    }

    /// Waits until `done` holds for the spans of trace `trace_id`, and
    /// returns them.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let of_trace = |all: &[ReceivedSpan]| -> Vec<ReceivedSpan> {
            all.iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect()
        };
        let all = self
            .wait_until(timeout, what, |all| done(&of_trace(all)))
            .await?;
        Ok(of_trace(&all))
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}
