//! Breaker, backoff, Retry-After and deadlines on a paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn server_error(provider: &str) -> ProviderError {
    ProviderError::Status {
        provider: provider.into(),
        status: 503,
        message: "down".into(),
        retry_after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_consecutive_failures_then_probes() {
    let b = Breaker::new(BreakerSettings::default());
    for _ in 0..4 {
        assert!(b.allow());
        b.record(false);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    b.record(false);
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert!(!b.allow());
    tokio::time::advance(Duration::from_secs(5)).await;
    // One probe only.
    assert!(b.allow());
    assert!(!b.allow());
    b.record(false);
    assert!(
        matches!(b.state(), BreakerState::Open { .. }),
        "a failed probe reopens"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(b.allow());
    b.record(true);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.allow());
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_error_ratio() {
    let b = Breaker::new(BreakerSettings::default());
    // Alternating: never 5 in a row, but half of the window fails.
    for i in 0..10 {
        b.record(i % 2 == 0);
    }
    assert!(matches!(b.state(), BreakerState::Open { .. }));
}

#[tokio::test(start_paused = true)]
async fn fails_over_to_the_next_region_without_waiting() {
    let breakers = [
        Breaker::new(BreakerSettings::default()),
        Breaker::new(BreakerSettings::default()),
    ];
    let started = Instant::now();
    let result = call_with_failover(
        &["east", "west"],
        &[&breakers[0], &breakers[1]],
        &[Duration::from_secs(5); 2],
        RetryPolicy::default(),
        |i| async move {
            if i == 0 {
                Err(server_error("east"))
            } else {
                Ok("answer")
            }
        },
    )
    .await;
    assert_eq!(result.ok(), Some((1, "answer")));
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after_between_rounds() {
    let breakers = [Breaker::new(BreakerSettings::default())];
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let c = calls.clone();
    let result = call_with_failover(
        &["east"],
        &[&breakers[0]],
        &[Duration::from_secs(5)],
        RetryPolicy::default(),
        move |_| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(ProviderError::Status {
                        provider: "east".into(),
                        status: 429,
                        message: "slow down".into(),
                        retry_after: Some(Duration::from_millis(1500)),
                    })
                } else {
                    Ok(7)
                }
            }
        },
    )
    .await;
    assert_eq!(result.ok().map(|(_, v)| v), Some(7));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Waited the Retry-After (longer than the 200 ms backoff), no more.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1600),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn per_attempt_timeout_and_deadline_bound_the_call() {
    let breakers = [
        Breaker::new(BreakerSettings::default()),
        Breaker::new(BreakerSettings::default()),
    ];
    let started = Instant::now();
    let policy = RetryPolicy {
        deadline: Duration::from_secs(3),
        ..RetryPolicy::default()
    };
    let result: Result<(usize, ()), _> = call_with_failover(
        &["east", "west"],
        &[&breakers[0], &breakers[1]],
        &[Duration::from_secs(2); 2],
        policy,
        |_| async { std::future::pending().await },
    )
    .await;
    let errors = result.err().unwrap_or_default();
    // east timed out after its 2 s; west got the 1 s left; then the deadline.
    assert!(
        matches!(&errors[0], AttemptError::Provider(ProviderError::Timeout { after, .. }) if *after == Duration::from_secs(2))
    );
    assert!(
        matches!(&errors[1], AttemptError::Provider(ProviderError::Timeout { after, .. }) if *after == Duration::from_secs(1))
    );
    assert!(
        started.elapsed() <= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn open_breaker_skips_the_region_and_keeps_every_error() {
    let breakers = [
        Breaker::new(BreakerSettings::default()),
        Breaker::new(BreakerSettings::default()),
    ];
    for _ in 0..5 {
        breakers[0].record(false);
    }
    let result: Result<(usize, ()), _> = call_with_failover(
        &["east", "west"],
        &[&breakers[0], &breakers[1]],
        &[Duration::from_secs(1); 2],
        RetryPolicy {
            rounds: 1,
            ..RetryPolicy::default()
        },
        |i| async move { Err(server_error(if i == 0 { "east" } else { "west" })) },
    )
    .await;
    let errors = result.err().unwrap_or_default();
    assert_eq!(errors.len(), 2);
    assert!(matches!(&errors[0], AttemptError::CircuitOpen { provider } if provider == "east"));
    assert!(matches!(
        &errors[1],
        AttemptError::Provider(ProviderError::Status { status: 503, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_bad_request_is_not_retried() {
    let breakers = [
        Breaker::new(BreakerSettings::default()),
        Breaker::new(BreakerSettings::default()),
    ];
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let result: Result<(usize, ()), _> = call_with_failover(
        &["east", "west"],
        &[&breakers[0], &breakers[1]],
        &[Duration::from_secs(1); 2],
        RetryPolicy::default(),
        move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                Err(ProviderError::Status {
                    provider: "east".into(),
                    status: 400,
                    message: "bad".into(),
                    retry_after: None,
                })
            }
        },
    )
    .await;
    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        breakers[0].state(),
        BreakerState::Closed,
        "a 400 says nothing about the region"
    );
}
