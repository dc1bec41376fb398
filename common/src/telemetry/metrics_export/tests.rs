use std::sync::Mutex;

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as N;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use super::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Tenant {
    tenant: String,
}

/// A registry with one of each kind the services use.
fn registry() -> Registry {
    let mut registry = Registry::default();
    let answers = Family::<Tenant, Counter>::default();
    answers
        .get_or_create(&Tenant {
            tenant: "acme".into(),
        })
        .inc_by(3);
    registry.register("cellnet_answers", "Answers served", answers);
    let alive = Gauge::<i64>::default();
    alive.set(2);
    registry.register("cellnet_cells_alive", "Cells alive", alive);
    let latency = Histogram::new([0.1, 1.0]);
    for seconds in [0.05, 0.5, 5.0] {
        latency.observe(seconds);
    }
    registry.register_with_unit("cellnet_request", "Request latency", Unit::Seconds, latency);
    registry
}

fn converted() -> Vec<otlp::Metric> {
    let families = prometheus_client::encoding::prometheus_protobuf::encode(&registry()).unwrap();
    to_otlp(families, 10, 20)
}

fn named<'a>(metrics: &'a [otlp::Metric], name: &str) -> &'a otlp::Metric {
    metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in {metrics:#?}"))
}

#[test]
fn counters_become_cumulative_monotonic_sums_with_their_labels() {
    let metrics = converted();
    let answers = named(&metrics, "cellnet_answers");
    let Some(Data::Sum(sum)) = &answers.data else {
        panic!("{answers:#?}")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        otlp::AggregationTemporality::Cumulative as i32
    );
    let point = &sum.data_points[0];
    assert_eq!(point.value, Some(N::AsDouble(3.0)));
    assert_eq!(point.attributes, vec![string_attribute("tenant", "acme")]);
    assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (10, 20));
    assert_eq!(answers.description, "Answers served.");
}

#[test]
fn gauges_stay_gauges() {
    let metrics = converted();
    let alive = named(&metrics, "cellnet_cells_alive");
    let Some(Data::Gauge(gauge)) = &alive.data else {
        panic!("{alive:#?}")
    };
    assert_eq!(gauge.data_points[0].value, Some(N::AsDouble(2.0)));
}

#[test]
fn histograms_carry_each_buckets_own_count_between_finite_bounds() {
    let metrics = converted();
    let latency = named(&metrics, "cellnet_request_seconds");
    assert_eq!(latency.unit, "s");
    let Some(Data::Histogram(histogram)) = &latency.data else {
        panic!("{latency:#?}")
    };
    let point = &histogram.data_points[0];
    assert_eq!(point.explicit_bounds, vec![0.1, 1.0]);
    assert_eq!(point.bucket_counts, vec![1, 1, 1]);
    assert_eq!(point.count, 3);
    assert_eq!(point.sum, Some(5.55));
}

type Seen = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

/// An HTTP/protobuf receiver on a free port; returns its `/v1/metrics` URL.
async fn receiver(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/metrics", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let request = ExportMetricsServiceRequest::decode(body).unwrap();
                seen.lock().unwrap().push(request);
                ""
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn pusher(url: String, counters: &PushCounters) -> MetricsPusher {
    MetricsPusher::start(
        Arc::new(registry()),
        Metrics {
            endpoint: Endpoint {
                url,
                protocol: Protocol::HttpProtobuf,
            },
            // Only the final push on stop happens, so the test decides when.
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        },
        resource(&[("service.name".into(), "cellnet-test".into())]),
        counters.clone(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_pushes_the_last_values_with_the_resource() {
    let seen = Seen::default();
    let url = receiver(seen.clone()).await;
    let counters = PushCounters::new();
    let running = pusher(url, &counters);
    tokio::task::spawn_blocking(move || drop(running))
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let resource_metrics = &seen[0].resource_metrics[0];
    assert_eq!(
        resource_metrics.resource.as_ref().unwrap().attributes,
        vec![string_attribute("service.name", "cellnet-test")]
    );
    let metrics = &resource_metrics.scope_metrics[0].metrics;
    named(metrics, "cellnet_answers");
    named(metrics, "cellnet_request_seconds");
    assert_eq!((counters.get("ok"), counters.get("failed")), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_nobody_receives_is_counted_as_failed() {
    // Bound and closed again: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let counters = PushCounters::new();
    let running = pusher(format!("http://127.0.0.1:{port}/v1/metrics"), &counters);
    tokio::task::spawn_blocking(move || drop(running))
        .await
        .unwrap();
    assert_eq!((counters.get("ok"), counters.get("failed")), (0, 1));
}
