//! The spans of a query, with the OpenTelemetry GenAI attributes
//! (`gen_ai.*`) on provider calls and cellnet's own (`cellnet.*`) on the
//! query: what the cache did, which fallback answered, how grounded the
//! answer was and what it cost.

use tracing::Span;
use tracing::field::Empty;

use super::{QueryResponse, RequestContext};
use crate::error::CellError;
use crate::llm::{AnyProvider, Completion, ProviderError};

/// The spans a streamed answer keeps open until its last token: the query's
/// and the provider attempt's that streams it.
pub struct StreamSpans {
    pub query: Span,
    pub attempt: Span,
}

impl StreamSpans {
    /// The provider failed after its first text: the answer was cut short.
    pub fn interrupted(&self, error: &ProviderError) {
        record_failure(&self.attempt, error);
        self.query.record("otel.status_code", "ERROR");
    }
}

/// The span around one query, from preprocessing to the answer.
pub(super) fn query(ctx: &RequestContext, cell: &str, stream: bool) -> Span {
    tracing::info_span!(
        "query",
        otel.status_code = Empty,
        request_id = %ctx.request_id,
        cellnet.tenant = %ctx.tenant,
        cellnet.cell = %cell,
        cellnet.stream = stream,
        cellnet.cache.outcome = Empty,
        cellnet.cache.similarity = Empty,
        cellnet.fallback = Empty,
        cellnet.groundedness = Empty,
        cellnet.low_groundedness = Empty,
        cellnet.intent = Empty,
        cellnet.cost_usd = Empty,
        cellnet.provider = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        cloud.region = Empty,
    )
}

/// Records how the query was answered on its span.
pub(super) fn record_answer(span: &Span, answer: &QueryResponse) {
    span.record("cellnet.cache.outcome", answer.cache.as_str());
    if let Some(s) = answer.similarity {
        span.record("cellnet.cache.similarity", f64::from(s));
    }
    if let Some(f) = &answer.fallback {
        span.record("cellnet.fallback", f.as_str());
    }
    if let Some(g) = answer.groundedness {
        span.record("cellnet.groundedness", f64::from(g));
    }
    span.record("cellnet.low_groundedness", answer.low_groundedness);
    span.record("cellnet.intent", answer.intent.as_str());
    if let Some(c) = answer.cost_usd {
        span.record("cellnet.cost_usd", c);
    }
    if let Some(p) = &answer.provider {
        span.record("cellnet.provider", p.as_str());
    }
    if let Some(m) = &answer.model {
        span.record("gen_ai.response.model", m.as_str());
    }
    if let Some(r) = &answer.region {
        span.record("cloud.region", r.as_str());
    }
    span.record("gen_ai.usage.input_tokens", answer.usage.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", answer.usage.completion_tokens);
}

/// Marks a query that ended in an error; a client's mistake (4xx) is not
/// the system's error.
pub(super) fn record_error(span: &Span, error: &CellError) {
    if error.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// The span of one attempt at one provider-region, named `chat <model>` as
/// the GenAI conventions name inference spans.
pub(super) fn provider_attempt(
    ctx: &RequestContext,
    cell: &str,
    provider: &AnyProvider,
    attempt: usize,
    stream: bool,
) -> Span {
    tracing::info_span!(
        "llm",
        otel.name = %format_args!("chat {}", provider.model()),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = provider.system(),
        gen_ai.request.model = provider.model(),
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        cloud.region = provider.region(),
        cellnet.provider = provider.name(),
        cellnet.attempt = attempt,
        cellnet.stream = stream,
        cellnet.tenant = %ctx.tenant,
        cellnet.cell = %cell,
    )
}

pub(super) fn record_completion(span: &Span, completion: &Completion) {
    span.record("gen_ai.response.model", completion.model.as_str());
    span.record("gen_ai.usage.input_tokens", completion.usage.prompt_tokens);
    span.record(
        "gen_ai.usage.output_tokens",
        completion.usage.completion_tokens,
    );
}

pub(super) fn record_failure(span: &Span, error: &ProviderError) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", error.kind().as_ref());
}
