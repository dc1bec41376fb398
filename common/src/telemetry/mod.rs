//! Logs, traces and metrics of every service.
//!
//! Logs go to stderr, as text or as JSON (`LOG_FORMAT=json`), at the level of
//! `RUST_LOG` (default `info`). When an OTLP endpoint is configured (the
//! `telemetry` section of the service's config, or `OTEL_EXPORTER_OTLP_*`),
//! every `tracing` span is also exported as an OpenTelemetry span, over gRPC
//! or HTTP/protobuf, off the request path ([`export`]). Span fields become
//! attributes; `otel.name`, `otel.kind` and `otel.status_code` set the span's
//! name, kind and status. The service's Prometheus registry is pushed to the
//! same endpoint as OTLP metrics ([`metrics_export`]).

mod export;
mod metrics_export;
pub mod propagation;
mod settings;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use propagation::{
    continue_trace, follow_in_trace, inject, record_status, server_span, trace_headers,
};
pub use settings::{Protocol, RawTelemetry, TelemetrySettings};

/// What happened to the spans this process ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExportCounters {
    exported: Counter,
    dropped: Family<DropLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// Why a span was not exported.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DropReason {
    /// The export queue was full: export is slower than spans are made.
    QueueFull,
    /// The receiver refused the batch, or did not answer in time.
    ExportFailed,
    /// The span ended after the exporter stopped.
    ShutDown,
}

impl ExportCounters {
    fn dropped(&self, reason: DropReason, n: u64) {
        let reason = match reason {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
            DropReason::ShutDown => "shut_down",
        };
        self.dropped.get_or_create(&DropLabels { reason }).inc_by(n);
    }
}

fn counters() -> &'static ExportCounters {
    static COUNTERS: OnceLock<ExportCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let c = ExportCounters::default();
        // Every reason shows, at zero, from the start.
        for reason in [
            DropReason::QueueFull,
            DropReason::ExportFailed,
            DropReason::ShutDown,
        ] {
            c.dropped(reason, 0);
        }
        c
    })
}

fn push_counters() -> &'static metrics_export::PushCounters {
    static COUNTERS: OnceLock<metrics_export::PushCounters> = OnceLock::new();
    COUNTERS.get_or_init(metrics_export::PushCounters::new)
}

/// Adds `otel_spans_exported_total`, `otel_spans_dropped_total{reason}`
/// (`queue_full`, `export_failed`, `shut_down`) and
/// `otel_metric_pushes_total{outcome}` (`ok`, `failed`) to a service's
/// registry.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "otel_metric_pushes",
        "OTLP metric pushes, by whether the receiver accepted them",
        push_counters().pushes.clone(),
    );
    let c = counters();
    registry.register(
        "otel_spans_exported",
        "Spans the OTLP receiver accepted",
        c.exported.clone(),
    );
    registry.register(
        "otel_spans_dropped",
        "Spans not exported: the export queue was full, the receiver failed or did not answer, or the exporter had stopped",
        c.dropped.clone(),
    );
}

/// The running telemetry of a process; call [`Telemetry::shutdown`] on the
/// way out so the last spans and metric values are sent.
#[must_use = "shut telemetry down on exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Where metrics go, when they are pushed.
    metrics: Option<(
        settings::Metrics,
        opentelemetry_proto::tonic::resource::v1::Resource,
    )>,
    pusher: Mutex<Option<metrics_export::MetricsPusher>>,
}

impl Telemetry {
    fn logs_only() -> Self {
        Self {
            provider: None,
            metrics: None,
            pusher: Mutex::new(None),
        }
    }

    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Pushes `registry` over OTLP on a timer, when metrics export is
    /// configured; a second call replaces the first registry.
    pub fn export_metrics(&self, registry: Arc<Registry>) {
        let Some((settings, resource)) = &self.metrics else {
            return;
        };
        let endpoint = settings.endpoint.url.clone();
        let interval = settings.interval;
        match metrics_export::MetricsPusher::start(
            registry,
            settings.clone(),
            resource.clone(),
            push_counters().clone(),
        ) {
            Ok(pusher) => {
                if let Ok(mut slot) = self.pusher.lock() {
                    *slot = Some(pusher);
                }
                tracing::info!(%endpoint, ?interval, "pushing metrics over OTLP");
            }
            Err(e) => tracing::error!(error = %e, "metrics are not pushed"),
        }
    }

    /// Sends what is queued (waiting at most a few seconds) and stops.
    pub fn shutdown(self) {
        // Dropping the pusher pushes the last values.
        if let Ok(mut pusher) = self.pusher.lock() {
            pusher.take();
        }
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "telemetry shutdown");
        }
    }
}

/// [`init`], exiting with the config exit code when the environment's
/// `OTEL_*` values are wrong.
pub fn init_or_exit(
    default_service: &str,
    settings: &TelemetrySettings,
    attributes: &[(&str, String)],
) -> Telemetry {
    init(default_service, settings, attributes).unwrap_or_else(|e| {
        eprintln!("telemetry: {e}");
        std::process::exit(crate::config::EXIT_CONFIG)
    })
}

/// Logs only, for tools and simulators.
pub fn init_logs() {
    subscriber(None);
}

/// Logs, and spans exported over OTLP when configured. `default_service` is
/// `service.name` unless the config or the environment names one;
/// `attributes` are added to the resource (the cell's id, its region).
pub fn init(
    default_service: &str,
    settings: &TelemetrySettings,
    attributes: &[(&str, String)],
) -> Result<Telemetry, String> {
    let Some(resolved) =
        settings::resolve(settings, default_service, |name| std::env::var(name).ok())?
    else {
        subscriber(None);
        return Ok(Telemetry::logs_only());
    };
    let attributes: Vec<(String, String)> = attributes
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(resolved.resource_attributes.iter().cloned())
        .collect();
    let metrics = resolved.metrics.clone().map(|m| {
        let mut all = vec![("service.name".to_owned(), resolved.service_name.clone())];
        all.extend(attributes.iter().cloned());
        (m, metrics_export::resource(&all))
    });
    let Some(traces) = resolved.traces.clone() else {
        subscriber(None);
        return Ok(Telemetry {
            metrics,
            ..Telemetry::logs_only()
        });
    };
    let resource = Resource::builder_empty()
        .with_service_name(resolved.service_name.clone())
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let endpoint = traces.endpoint.url.clone();
    let protocol = traces.endpoint.protocol;
    let timeout = traces.batch.export_timeout;
    let build = move || -> Result<opentelemetry_otlp::SpanExporter, String> {
        let built = match protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(reqwest::Client::new())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .build(),
        };
        built.map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))
    };
    let processor = export::QueueingProcessor::start(
        build,
        resource.clone(),
        traces.batch,
        counters().clone(),
    )?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer("cellnet");
    subscriber(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .boxed(),
    ));
    tracing::info!(
        endpoint = %traces.endpoint.url,
        protocol = ?traces.endpoint.protocol,
        service = %resolved.service_name,
        "exporting spans over OTLP"
    );
    Ok(Telemetry {
        provider: Some(provider),
        metrics,
        pusher: Mutex::new(None),
    })
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn subscriber(spans: Option<BoxedLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: BoxedLayer = if std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json") {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    let layers: Vec<BoxedLayer> = spans.into_iter().chain([logs]).collect();
    // A second initialisation (tests starting several services in one
    // process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init();
}
