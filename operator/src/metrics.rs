//! The operator's Prometheus metrics: reconciles by result, failures by
//! kind, and how long a reconcile takes.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::controller::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failure {
    kind: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<Outcome, Counter>,
    failures: Family<Failure, Counter>,
    duration: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
        };
        registry.register(
            "cellnet_operator_reconciles",
            "Cell reconciles, by result (ok, draining: waiting for a drain, error)",
            m.reconciles.clone(),
        );
        registry.register(
            "cellnet_operator_reconcile_failures",
            "Failed Cell reconciles, by kind (kubernetes, control_plane, invalid_spec, finalizer)",
            m.failures.clone(),
        );
        registry.register(
            "cellnet_operator_reconcile_duration_seconds",
            "Time one Cell reconcile took",
            m.duration.clone(),
        );
        m
    }

    pub fn observe<T>(&self, result: &Result<T, Error>, took: Duration) {
        self.duration.observe(took.as_secs_f64());
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) if e.kind() == "still_draining" => "draining",
            Err(e) => {
                self.failures
                    .get_or_create(&Failure { kind: e.kind() })
                    .inc();
                "error"
            }
        };
        self.reconciles
            .get_or_create(&Outcome { result: outcome })
            .inc();
    }
}
