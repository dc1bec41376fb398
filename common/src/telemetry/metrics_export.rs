//! Metrics over OTLP: the service's one Prometheus registry, read on a timer
//! and pushed as OTLP metrics (gRPC `MetricsService/Export` or HTTP/protobuf
//! `POST /v1/metrics`).
//!
//! The registry stays the single source: `/metrics` and the OTLP stream show
//! the same series, counters as cumulative monotonic sums, gauges as gauges,
//! histograms with their explicit buckets. Pushing runs on one thread of its
//! own with a single-threaded runtime, so a slow or absent collector costs
//! the request path nothing; failed pushes are counted and the next push
//! carries the current totals again.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pm;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message as _;

use super::settings::{Endpoint, Metrics, Protocol};

/// How many pushes succeeded and failed; registered by
/// [`super::register_metrics`].
#[derive(Debug, Clone, Default)]
pub(crate) struct PushCounters {
    pub(crate) pushes: Family<PushLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(crate) struct PushLabels {
    outcome: &'static str,
}

impl PushCounters {
    pub(crate) fn new() -> Self {
        let c = Self::default();
        // Both outcomes show, at zero, from the start.
        for outcome in ["ok", "failed"] {
            let _ = c.pushes.get_or_create(&PushLabels { outcome });
        }
        c
    }

    fn count(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.pushes.get_or_create(&PushLabels { outcome }).inc();
    }

    #[cfg(test)]
    fn get(&self, outcome: &'static str) -> u64 {
        self.pushes.get_or_create(&PushLabels { outcome }).get()
    }
}

/// The running pusher; dropping it pushes once more and stops.
pub(crate) struct MetricsPusher {
    stop: Option<mpsc::Sender<()>>,
    worker: Option<JoinHandle<()>>,
}

impl MetricsPusher {
    /// Starts pushing `registry` every `settings.interval`.
    pub(crate) fn start(
        registry: Arc<Registry>,
        settings: Metrics,
        resource: Resource,
        counters: PushCounters,
    ) -> Result<Self, String> {
        let (stop, stopped) = mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("otlp-metrics".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics export runtime; metrics are not pushed");
                        return;
                    }
                };
                let transport = {
                    let _entered = runtime.enter();
                    Transport::new(&settings.endpoint)
                };
                let mut pusher = Pusher {
                    runtime,
                    transport,
                    registry,
                    resource,
                    start_nanos: unix_nanos(SystemTime::now()),
                    timeout: settings.timeout,
                    counters,
                    failing: false,
                };
                loop {
                    match stopped.recv_timeout(settings.interval) {
                        Err(RecvTimeoutError::Timeout) => pusher.push(),
                        // Stopped, or the handle is gone: the last values go out.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            pusher.push();
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the metrics export thread: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            worker: Some(worker),
        })
    }
}

impl Drop for MetricsPusher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

enum Transport {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    Http {
        client: reqwest::Client,
        url: String,
    },
    /// The endpoint could not be made into a channel; every push fails.
    Broken(String),
}

impl Transport {
    fn new(endpoint: &Endpoint) -> Self {
        match endpoint.protocol {
            Protocol::Grpc => match tonic::transport::Channel::from_shared(endpoint.url.clone()) {
                // Lazy: a collector that is down at start is retried on
                // every push.
                Ok(channel) => Self::Grpc(MetricsServiceClient::new(channel.connect_lazy())),
                Err(e) => Self::Broken(format!("{}: {e}", endpoint.url)),
            },
            Protocol::HttpProtobuf => Self::Http {
                client: reqwest::Client::new(),
                url: endpoint.url.clone(),
            },
        }
    }

    async fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Self::Grpc(client) => client
                .export(request)
                .await
                .map(|_| ())
                .map_err(|status| format!("{}: {}", status.code(), status.message())),
            Self::Http { client, url } => {
                let response = client
                    .post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(request.encode_to_vec())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", response.status()))
                }
            }
            Self::Broken(problem) => Err(problem.clone()),
        }
    }
}

struct Pusher {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    registry: Arc<Registry>,
    resource: Resource,
    /// When the process's cumulative series started.
    start_nanos: u64,
    timeout: Duration,
    counters: PushCounters,
    /// Whether the last push failed: failures are logged once per outage.
    failing: bool,
}

impl Pusher {
    fn push(&mut self) {
        let families =
            match prometheus_client::encoding::prometheus_protobuf::encode(&self.registry) {
                Ok(families) => families,
                Err(e) => {
                    tracing::error!(error = %e, "metrics encoding failed");
                    self.counters.count(false);
                    return;
                }
            };
        let now = unix_nanos(SystemTime::now());
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![otlp::ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![otlp::ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "cellnet".into(),
                        ..Default::default()
                    }),
                    metrics: to_otlp(families, self.start_nanos, now),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let timeout = self.timeout;
        let transport = &mut self.transport;
        let outcome = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, transport.send(request)).await });
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no answer within {timeout:?}")),
        };
        self.counters.count(error.is_none());
        match error {
            None => {
                if std::mem::replace(&mut self.failing, false) {
                    tracing::info!("metrics export recovered");
                }
            }
            Some(error) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(%error, "metrics export failed; retrying every interval");
                }
            }
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The OTLP resource: `service.name` and the other attributes.
pub(crate) fn resource(attributes: &[(String, String)]) -> Resource {
    Resource {
        attributes: attributes
            .iter()
            .map(|(k, v)| string_attribute(k, v))
            .collect(),
        ..Default::default()
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

/// OpenTelemetry's unit for a Prometheus unit suffix (UCUM, as the
/// Prometheus compatibility specification maps them).
fn ucum(unit: &str) -> &str {
    match unit {
        "seconds" => "s",
        "bytes" => "By",
        "ratio" => "1",
        other => other,
    }
}

/// The registry's families as OTLP metrics. Names are those `/metrics`
/// shows, without a counter's `_total`, which OTLP expresses as a monotonic
/// sum.
fn to_otlp(families: Vec<pm::MetricFamily>, start: u64, now: u64) -> Vec<otlp::Metric> {
    let cumulative = otlp::AggregationTemporality::Cumulative as i32;
    families
        .into_iter()
        .filter_map(|family| {
            let kind = pm::MetricType::try_from(family.r#type).ok()?;
            let number = |m: &pm::Metric, value: f64| otlp::NumberDataPoint {
                attributes: labels(&m.label),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(otlp::number_data_point::Value::AsDouble(value)),
                ..Default::default()
            };
            let (name, data) = match kind {
                pm::MetricType::Counter => (
                    family
                        .name
                        .strip_suffix("_total")
                        .unwrap_or(&family.name)
                        .to_owned(),
                    otlp::metric::Data::Sum(otlp::Sum {
                        data_points: family
                            .metric
                            .iter()
                            .filter_map(|m| Some(number(m, m.counter.as_ref()?.value)))
                            .collect(),
                        aggregation_temporality: cumulative,
                        is_monotonic: true,
                    }),
                ),
                pm::MetricType::Gauge => (
                    family.name.clone(),
                    otlp::metric::Data::Gauge(otlp::Gauge {
                        data_points: family
                            .metric
                            .iter()
                            .filter_map(|m| Some(number(m, m.gauge.as_ref()?.value)))
                            .collect(),
                    }),
                ),
                pm::MetricType::Histogram => (
                    family.name.clone(),
                    otlp::metric::Data::Histogram(otlp::Histogram {
                        data_points: family
                            .metric
                            .iter()
                            .filter_map(|m| {
                                Some(histogram_point(m, m.histogram.as_ref()?, start, now))
                            })
                            .collect(),
                        aggregation_temporality: cumulative,
                    }),
                ),
                // The services register no summaries or untyped metrics.
                _ => return None,
            };
            Some(otlp::Metric {
                name,
                description: family.help.clone(),
                unit: ucum(&family.unit).to_owned(),
                metadata: Vec::new(),
                data: Some(data),
            })
        })
        .collect()
}

fn labels(pairs: &[pm::LabelPair]) -> Vec<KeyValue> {
    pairs
        .iter()
        .map(|l| string_attribute(&l.name, &l.value))
        .collect()
}

/// OTLP wants each bucket's own count and the bounds between buckets; the
/// registry gives cumulative counts up to each upper bound (+Inf last, or
/// left out and implied by the sample count).
fn histogram_point(
    m: &pm::Metric,
    h: &pm::Histogram,
    start: u64,
    now: u64,
) -> otlp::HistogramDataPoint {
    let mut explicit_bounds = Vec::with_capacity(h.bucket.len());
    let mut bucket_counts = Vec::with_capacity(h.bucket.len() + 1);
    let mut below = 0;
    for bucket in &h.bucket {
        if bucket.upper_bound.is_finite() {
            explicit_bounds.push(bucket.upper_bound);
            bucket_counts.push(bucket.cumulative_count.saturating_sub(below));
            below = bucket.cumulative_count;
        }
    }
    bucket_counts.push(h.sample_count.saturating_sub(below));
    otlp::HistogramDataPoint {
        attributes: labels(&m.label),
        start_time_unix_nano: start,
        time_unix_nano: now,
        count: h.sample_count,
        sum: Some(h.sample_sum),
        bucket_counts,
        explicit_bounds,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
