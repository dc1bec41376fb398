//! W3C trace context (`traceparent`, `tracestate`) in and out of HTTP
//! headers, so that one request is one trace from the client through router
//! and cell to the provider.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The server span of one HTTP request, named `<method> <route>` as the
/// HTTP conventions name server spans, continuing the caller's trace. The
/// request id, tenant and cell are declared empty for the service to record
/// once it knows them; [`record_status`] ends it with the response's status.
pub fn server_span(method: &http::Method, route: &str, headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        request_id = tracing::field::Empty,
        cellnet.tenant = tracing::field::Empty,
        cellnet.cell = tracing::field::Empty,
    );
    continue_trace(&span, headers);
    span
}

/// Records the response's status on a [`server_span`]; a 5xx is an error.
pub fn record_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Makes `span` a child of the trace context the caller sent, if it sent a
/// valid one. Call before the span is first entered.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if headers.get(TRACEPARENT).is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Extract(headers));
    // Fails only when spans are not exported; then there is nothing to join.
    let _ = span.set_parent(parent);
}

/// Puts `span` in `parent`'s trace as its child, without tracing's parent
/// relation: for work that outlives `parent` (a background task), whose
/// span must not hold `parent` open. Call before `span` is first entered.
pub fn follow_in_trace(span: &tracing::Span, parent: &tracing::Span) {
    // Fails only when spans are not exported; then there is no trace.
    let _ = span.set_parent(parent.context());
}

/// The trace context of `span`, as headers for an outgoing call. Empty when
/// spans are not exported.
pub fn trace_headers(span: &tracing::Span) -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    headers
}

/// Writes the trace context of `span` into `headers`, replacing any there.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut Inject(headers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_nothing_is_injected() {
        let span = tracing::info_span!("no subscriber");
        assert!(trace_headers(&span).is_empty());
    }

    #[test]
    fn a_traceparent_round_trips_through_the_propagator() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = TraceContextPropagator::new().extract(&Extract(&incoming));
        let mut outgoing = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut Inject(&mut outgoing));
        assert_eq!(outgoing.get(TRACEPARENT), incoming.get(TRACEPARENT));
    }
}
