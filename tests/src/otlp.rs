//! An OTLP receiver for tests: gRPC (`TraceService/Export`,
//! `MetricsService/Export`) and HTTP/protobuf (`POST /v1/traces`,
//! `POST /v1/metrics`) on ports of its own, decoding with the official
//! protobuf types and keeping every span and metric point it is sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
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

/// One metric data point as received.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    pub service: String,
    pub metric: String,
    /// `sum` (with `monotonic`), `gauge` or `histogram`.
    pub kind: &'static str,
    pub monotonic: bool,
    pub unit: String,
    pub attributes: BTreeMap<String, String>,
    /// A sum's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's bucket counts and bounds.
    pub bucket_counts: Vec<u64>,
    pub explicit_bounds: Vec<f64>,
}

impl ReceivedPoint {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<u64>,
    /// The points of the latest push of each service.
    points: Mutex<BTreeMap<String, Vec<ReceivedPoint>>>,
    arrived: Notify,
}

impl Received {
    fn take_metrics(&self, request: ExportMetricsServiceRequest) {
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
        for resource_metrics in request.resource_metrics {
            let resource: BTreeMap<String, String> = resource_metrics
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            let mut points = Vec::new();
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let point = |kind, monotonic, attrs: &[KeyValue], value| ReceivedPoint {
                        service: service.clone(),
                        metric: metric.name.clone(),
                        kind,
                        monotonic,
                        unit: metric.unit.clone(),
                        attributes: attributes(attrs),
                        value,
                        bucket_counts: Vec::new(),
                        explicit_bounds: Vec::new(),
                    };
                    let number = |v: &Option<Value>| match v {
                        Some(Value::AsInt(i)) => *i as f64,
                        Some(Value::AsDouble(d)) => *d,
                        None => f64::NAN,
                    };
                    match &metric.data {
                        Some(Data::Sum(sum)) => points.extend(sum.data_points.iter().map(|p| {
                            point("sum", sum.is_monotonic, &p.attributes, number(&p.value))
                        })),
                        Some(Data::Gauge(gauge)) => points.extend(
                            gauge
                                .data_points
                                .iter()
                                .map(|p| point("gauge", false, &p.attributes, number(&p.value))),
                        ),
                        Some(Data::Histogram(h)) => {
                            points.extend(h.data_points.iter().map(|p| ReceivedPoint {
                                bucket_counts: p.bucket_counts.clone(),
                                explicit_bounds: p.explicit_bounds.clone(),
                                ..point("histogram", false, &p.attributes, p.count as f64)
                            }))
                        }
                        _ => {}
                    }
                }
            }
            if let Ok(mut all) = self.points.lock() {
                all.insert(service, points);
            }
        }
        self.arrived.notify_waiters();
    }

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
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.take_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

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

/// An OTLP/HTTP export endpoint: decodes a `Req` body, hands it to `take`
/// and answers `ok`, or 400 with the decoding error.
fn http_export<Req, Resp>(
    received: Arc<Received>,
    take: fn(&Received, Req),
    ok: Resp,
) -> axum::routing::MethodRouter
where
    Req: Message + Default + 'static,
    Resp: Message + Clone + Send + Sync + 'static,
{
    axum::routing::post(move |body: bytes::Bytes| {
        let (received, ok) = (received.clone(), ok.clone());
        async move {
            use axum::response::IntoResponse;
            match Req::decode(body) {
                Ok(request) => {
                    take(&received, request);
                    (
                        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                        ok.encode_to_vec(),
                    )
                        .into_response()
                }
                Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }
    })
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
            .add_service(MetricsServiceServer::new(Grpc(received.clone())))
            .serve_with_incoming(incoming);
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_url = format!("http://{}", http_listener.local_addr()?);
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                http_export(
                    received.clone(),
                    Received::take,
                    ExportTraceServiceResponse {
                        partial_success: None,
                    },
                ),
            )
            .route(
                "/v1/metrics",
                http_export(
                    received.clone(),
                    Received::take_metrics,
                    ExportMetricsServiceResponse {
                        partial_success: None,
                    },
                ),
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

    /// The points of each service's latest metrics push, by `service.name`.
    pub fn metrics(&self) -> BTreeMap<String, Vec<ReceivedPoint>> {
        self.received
            .points
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the latest pushes, up to `timeout`.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, Vec<ReceivedPoint>>) -> bool,
    ) -> anyhow::Result<BTreeMap<String, Vec<ReceivedPoint>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let metrics = self.metrics();
            if done(&metrics) {
                return Ok(metrics);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let names: Vec<String> = metrics
                    .iter()
                    .flat_map(|(service, points)| {
                        points
                            .iter()
                            .map(move |p| format!("{service}:{}", p.metric))
                    })
                    .collect();
                bail!("no {what} within {timeout:?}; received {names:?}");
            }
        }
    }

    /// Drops the spans kept so far and says how many there were: for a
    /// long run that only counts what arrived.
    pub fn forget_spans(&self) -> usize {
        self.received
            .spans
            .lock()
            .map(|mut s| std::mem::take(&mut *s).len())
            .unwrap_or(0)
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
