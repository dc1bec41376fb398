//! One provider call: traced as a GenAI client span, counted in the cell's
//! metrics and in the provider-region's health statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{RequestContext, spans};
use crate::llm::health::{AttemptOutcome, ProviderStats};
use crate::llm::{AnyProvider, ChatRequest, Completion, ProviderError};
use crate::metrics::{CellMetrics, ProviderLabels};

/// What provider calls are counted and traced with; cheap to clone into a
/// background task.
#[derive(Clone)]
pub(super) struct CallRecorder {
    pub metrics: Arc<CellMetrics>,
    pub stats: Arc<ProviderStats>,
    pub cell: String,
}

impl CallRecorder {
    /// The `attempt`-th call for `ctx`'s request, at `provider`: within
    /// `timeout` if one is given (else the caller bounds it).
    pub async fn attempt(
        &self,
        provider: &AnyProvider,
        ctx: &RequestContext,
        request: &ChatRequest,
        attempt: usize,
        timeout: Option<Duration>,
    ) -> Result<Completion, ProviderError> {
        let span = spans::provider_attempt(ctx, &self.cell, provider, attempt, false);
        let started = Instant::now();
        let call = provider
            .chat(request, &ctx.request_id)
            .instrument(span.clone());
        let outcome = match timeout {
            None => call.await,
            Some(after) => tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
                Err(ProviderError::Timeout {
                    provider: provider.name().to_owned(),
                    after,
                })
            }),
        };
        self.stats.record(
            provider.name(),
            AttemptOutcome::of(&outcome, started.elapsed()),
        );
        let label = match &outcome {
            Ok(completion) => {
                spans::record_completion(&span, completion);
                "ok"
            }
            Err(e) => {
                spans::record_failure(&span, e);
                tracing::warn!(parent: &span, error = %e, "provider call failed");
                "error"
            }
        };
        self.metrics
            .provider_calls
            .get_or_create(&ProviderLabels {
                provider: provider.name().to_owned(),
                outcome: label,
            })
            .inc();
        outcome
    }
}
