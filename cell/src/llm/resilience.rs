//! Calling providers without letting one bad region hurt: a circuit breaker
//! per provider-region, a per-attempt timeout inside the request's overall
//! deadline, failover to the next region on errors another region may not
//! have, and rounds of retries with exponential backoff and jitter that
//! honour Retry-After. Every attempt's error is kept for the final error.
//!
//! Time comes from `tokio::time`, so tests drive it with a paused clock.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::ProviderError;

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker.
    pub consecutive_failures: u32,
    /// Failure ratio over the recent window that opens it…
    pub failure_ratio: f64,
    /// …once the window holds at least this many calls.
    pub min_calls: usize,
    /// Calls remembered for the ratio.
    pub window: usize,
    /// How long an open breaker refuses calls before letting a probe through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_calls: 10,
            window: 20,
            open_for: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is refused until it reports.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    recent: std::collections::VecDeque<bool>,
}

/// A circuit breaker for one provider-region.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive: 0,
                recent: Default::default(),
            }),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.inner
            .lock()
            .map(|i| i.state)
            .unwrap_or(BreakerState::Closed)
    }

    /// Whether a call may go ahead now; an open breaker past its time lets
    /// exactly one probe through.
    pub fn allow(&self) -> bool {
        let Ok(mut i) = self.inner.lock() else {
            return true;
        };
        match i.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open { until } if Instant::now() >= until => {
                i.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// Reports a call's outcome.
    pub fn record(&self, ok: bool) {
        let Ok(mut i) = self.inner.lock() else { return };
        i.recent.push_back(ok);
        while i.recent.len() > self.settings.window {
            i.recent.pop_front();
        }
        if ok {
            i.consecutive = 0;
            if i.state != BreakerState::Closed {
                tracing::info!("circuit closed");
                i.recent.clear();
            }
            i.state = BreakerState::Closed;
            return;
        }
        i.consecutive += 1;
        let failures = i.recent.iter().filter(|ok| !**ok).count();
        let ratio_tripped = i.recent.len() >= self.settings.min_calls
            && failures as f64 / i.recent.len() as f64 >= self.settings.failure_ratio;
        let tripped = i.state == BreakerState::HalfOpen
            || i.consecutive >= self.settings.consecutive_failures
            || ratio_tripped;
        if tripped {
            if !matches!(i.state, BreakerState::Open { .. }) {
                tracing::warn!(consecutive = i.consecutive, failures, "circuit opened");
            }
            i.state = BreakerState::Open {
                until: Instant::now() + self.settings.open_for,
            };
        }
    }
}

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Rounds over all providers (the first round is not a retry).
    pub rounds: u32,
    /// Backoff before the second round; doubles each round.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Overall deadline for the whole call, all attempts included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            rounds: 2,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
        }
    }
}

/// Why a call could not be made at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{provider}: circuit open, not called")]
    CircuitOpen { provider: String },
    #[error("request deadline reached before {provider} could be tried")]
    Deadline { provider: String },
}

/// Full jitter: a random wait in [d/2, d].
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Calls providers `0..n` (in preference order) through their breakers until
/// one succeeds: each round tries every provider whose breaker allows it,
/// moving on after a retryable error; between rounds it waits with backoff
/// (at least the longest Retry-After seen). `call(i, budget)` makes one
/// attempt on provider `i` within `budget`. Returns the index of the provider
/// that answered, or every attempt's error.
pub async fn call_with_failover<T, F, Fut>(
    names: &[&str],
    breakers: &[&Breaker],
    timeouts: &[Duration],
    policy: RetryPolicy,
    mut call: F,
) -> Result<(usize, T), Vec<AttemptError>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let deadline = Instant::now() + policy.deadline;
    let mut errors = Vec::new();
    let mut backoff = policy.base_backoff;
    for round in 0..policy.rounds.max(1) {
        let mut retry_after = Duration::ZERO;
        let mut worth_retrying = false;
        for (i, name) in names.iter().enumerate() {
            if !breakers[i].allow() {
                errors.push(AttemptError::CircuitOpen {
                    provider: (*name).to_owned(),
                });
                worth_retrying = true;
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                errors.push(AttemptError::Deadline {
                    provider: (*name).to_owned(),
                });
                return Err(errors);
            }
            let budget = timeouts[i].min(left);
            let outcome = match tokio::time::timeout(budget, call(i)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Timeout {
                    provider: (*name).to_owned(),
                    after: budget,
                }),
            };
            match outcome {
                Ok(v) => {
                    breakers[i].record(true);
                    return Ok((i, v));
                }
                Err(e) => {
                    // A 4xx other than 408/429 says nothing about the region's health.
                    breakers[i].record(!e.is_retryable());
                    if let ProviderError::Status {
                        retry_after: Some(ra),
                        ..
                    } = &e
                    {
                        retry_after = retry_after.max(*ra);
                    }
                    worth_retrying |= e.is_retryable();
                    let fatal = !e.is_retryable();
                    errors.push(e.into());
                    if fatal {
                        return Err(errors);
                    }
                }
            }
        }
        if !worth_retrying || round + 1 >= policy.rounds {
            break;
        }
        let wait = jittered(backoff).max(retry_after);
        if Instant::now() + wait >= deadline {
            break;
        }
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
    Err(errors)
}

#[cfg(test)]
mod tests;
