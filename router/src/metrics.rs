//! The router's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CellLabels {
    pub cell: String,
    /// ok | connect_error | timeout | server_error | error | at_limit
    pub outcome: &'static str,
}

pub struct RouterMetrics {
    pub responses: Family<StatusLabels, Counter>,
    pub upstream: Family<CellLabels, Counter>,
    pub failovers: Counter,
    pub hints_recorded: Counter,
    pub hints_replayed: Counter,
    pub upstream_seconds: Histogram,
    pub refusals: Family<RefusalLabels, Counter>,
    pub ejections: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// rate_limited | quota_exceeded
    pub reason: &'static str,
}

impl RouterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        common::telemetry::register_metrics(registry);
        let m = Self {
            responses: Family::default(),
            upstream: Family::default(),
            failovers: Counter::default(),
            hints_recorded: Counter::default(),
            hints_replayed: Counter::default(),
            upstream_seconds: Histogram::new(exponential_buckets(0.0001, 2.5, 14)),
            refusals: Family::default(),
            ejections: Counter::default(),
        };
        registry.register(
            "cellnet_router_refusals",
            "Requests refused by a tenant limit, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "cellnet_router_ejections",
            "Cells ejected by passive outlier detection",
            m.ejections.clone(),
        );
        registry.register(
            "cellnet_router_responses",
            "Responses by HTTP status",
            m.responses.clone(),
        );
        registry.register(
            "cellnet_router_upstream_attempts",
            "Attempts to reach a cell, by outcome",
            m.upstream.clone(),
        );
        registry.register(
            "cellnet_router_failovers",
            "Requests retried on another cell",
            m.failovers.clone(),
        );
        registry.register(
            "cellnet_router_upstream_seconds",
            "Time until a cell's response headers",
            m.upstream_seconds.clone(),
        );
        m
    }
}

impl RouterMetrics {
    pub fn refused(&self, refusal: &crate::limits::Refusal) {
        let reason = match refusal {
            crate::limits::Refusal::RateLimited { .. } => "rate_limited",
            crate::limits::Refusal::QuotaExceeded { .. } => "quota_exceeded",
        };
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }
}
