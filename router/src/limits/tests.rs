use std::sync::Arc;
use std::time::Duration;

use control_plane::model::TenantLimits;

use super::{Limiter, Refusal};

fn limits(rps: f64, burst: u32, tokens_per_day: Option<u64>) -> TenantLimits {
    TenantLimits {
        requests_per_second: rps,
        burst,
        tokens_per_day,
    }
}

#[tokio::test(start_paused = true)]
async fn a_router_without_a_store_limits_locally_to_burst_then_rate() {
    let limiter = Arc::new(Limiter::new(None, Duration::from_millis(100)).unwrap());
    let l = limits(2.0, 3, None);
    for _ in 0..3 {
        limiter.admit("acme", &l).await.unwrap();
    }
    let Err(Refusal::RateLimited { retry_after }) = limiter.admit("acme", &l).await else {
        panic!("the fourth request at once must be refused");
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
        "{retry_after:?}"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    limiter.admit("acme", &l).await.unwrap();
    assert!(limiter.admit("acme", &l).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn tenants_have_separate_buckets() {
    let limiter = Arc::new(Limiter::new(None, Duration::from_millis(100)).unwrap());
    let l = limits(1.0, 1, None);
    limiter.admit("acme", &l).await.unwrap();
    assert!(limiter.admit("acme", &l).await.is_err());
    limiter.admit("globex", &l).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_spent_quota_refuses_until_midnight() {
    let limiter = Arc::new(Limiter::new(None, Duration::from_millis(100)).unwrap());
    let l = limits(100.0, 100, Some(1000));
    limiter.admit("acme", &l).await.unwrap();
    limiter.record_usage("acme", &l, 600).await;
    limiter.admit("acme", &l).await.unwrap();
    limiter.record_usage("acme", &l, 400).await;
    let Err(Refusal::QuotaExceeded { retry_after }) = limiter.admit("acme", &l).await else {
        panic!("a tenant at its quota must be refused");
    };
    assert!(retry_after <= Duration::from_secs(86_400));
    // Another tenant is unaffected.
    limiter.admit("globex", &l).await.unwrap();
}

#[test]
fn stream_usage_is_found_across_chunk_boundaries() {
    let stream = format!(
        "data: {{\"x\": 1}}\n\n{}1234\n\ndata: [DONE]\n\n",
        common::headers::USAGE_TOKENS_SSE_COMMENT
    );
    let bytes = stream.as_bytes();
    for split in 1..bytes.len() {
        let mut usage = super::StreamUsage::default();
        let mut found = Vec::new();
        for chunk in [&bytes[..split], &bytes[split..]] {
            found.extend(usage.feed(chunk));
        }
        assert_eq!(found, [1234], "split at {split}");
    }
    let mut usage = super::StreamUsage::default();
    let found: Vec<u64> = bytes.chunks(1).filter_map(|b| usage.feed(b)).collect();
    assert_eq!(found, [1234]);
    let mut none = super::StreamUsage::default();
    assert_eq!(none.feed(b"data: [DONE]\n\n"), None);
}
