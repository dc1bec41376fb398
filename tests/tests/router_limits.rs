//! Tenant rate limits and token quotas shared by several routers through a
//! real Redis, and what happens when that Redis goes away.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use control_plane::model::TenantLimits;
use e2e::process::Redis;
use router::limits::{Limiter, Refusal};

const TIMEOUT: Duration = Duration::from_millis(500);

fn limits(rps: f64, burst: u32, tokens_per_day: Option<u64>) -> TenantLimits {
    TenantLimits {
        requests_per_second: rps,
        burst,
        tokens_per_day,
    }
}

/// Requests admitted out of `n` sent at once, alternating between routers.
async fn admitted(routers: &[&Arc<Limiter>], tenant: &str, l: &TenantLimits, n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        if routers[i % routers.len()].admit(tenant, l).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_share_one_bucket_per_tenant() {
    let redis = Redis::start().unwrap();
    let a = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());
    let b = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());

    // A slow tenant: every request is a lease of one token.
    let slow = limits(1.0, 10, None);
    let started = std::time::Instant::now();
    let ok = admitted(&[&a, &b], "acme", &slow, 40).await;
    let refill = (started.elapsed().as_secs_f64() * slow.requests_per_second).ceil() as usize;
    assert!(
        (10..=10 + refill).contains(&ok),
        "two routers admitted {ok} of 40 with a burst of 10"
    );

    // A fast tenant: routers lease batches, yet together stay within the bucket.
    let fast = limits(1000.0, 200, None);
    let started = std::time::Instant::now();
    let ok = admitted(&[&a, &b], "globex", &fast, 1000).await;
    let refill = (started.elapsed().as_secs_f64() * fast.requests_per_second).ceil() as usize;
    assert!(
        (200..=200 + refill).contains(&ok),
        "two routers admitted {ok} of 1000 with a burst of 200 and {refill} refilled"
    );
    // Leasing spares Redis most round trips.
    let trips = a
        .stats
        .store_round_trips
        .load(std::sync::atomic::Ordering::Relaxed)
        + b.stats
            .store_round_trips
            .load(std::sync::atomic::Ordering::Relaxed);
    assert!(trips < 1040, "{trips} round trips for 1040 requests");

    // A refused router answers from memory until the bucket refills.
    let Err(Refusal::RateLimited { retry_after }) = a.admit("acme", &slow).await else {
        panic!("acme is over its limit");
    };
    assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_lease_is_taken_before_the_last_is_spent() {
    let redis = Redis::start().unwrap();
    let a = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());
    // Leases of 100 tokens (50 ms of the rate); the bucket holds 2,000.
    let l = limits(2000.0, 2000, None);
    for i in 0..1000 {
        assert!(a.admit("acme", &l).await.is_ok(), "request {i} refused");
        // Let a lease taken in the background land before going on, as it
        // would between requests arriving at this rate.
        a.refills_settled().await;
    }
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // Only the very first request waited on Redis; the other leases were
    // taken while requests were answered from the one before.
    assert_eq!(count(&a.stats.waited_for_store), 1);
    let trips = count(&a.stats.store_round_trips);
    assert!(
        (10..=12).contains(&trips),
        "{trips} leases for 1,000 requests"
    );

    // A slow tenant's lease is one token: never taken ahead, so a lease
    // that lapses unused cannot eat into its rate.
    let slow = limits(1.0, 5, None);
    for _ in 0..5 {
        assert!(a.admit("globex", &slow).await.is_ok());
    }
    a.refills_settled().await;
    assert_eq!(count(&a.stats.waited_for_store), 6);
    assert!(a.admit("globex", &slow).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_spent_through_one_router_is_refused_by_another() {
    let redis = Redis::start().unwrap();
    let a = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());
    let b = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());
    let l = limits(1.0, 1, Some(1_000));

    assert_eq!(a.admit("acme", &l).await.unwrap(), 0);
    a.record_usage("acme", &l, 1_200).await;
    // b has never seen acme: its first lease reads the shared count.
    let Err(Refusal::QuotaExceeded { retry_after }) = b.admit("acme", &l).await else {
        panic!("acme spent its quota through a");
    };
    assert!(retry_after <= Duration::from_secs(86_400));
    // Another tenant is untouched.
    assert_eq!(b.admit("globex", &l).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_router_limits_on_its_own_and_recovers() {
    let mut redis = Redis::start().unwrap();
    let a = Arc::new(Limiter::new(Some(&redis.url), TIMEOUT).unwrap());
    let l = limits(1.0, 3, None);
    assert!(a.admit("acme", &l).await.is_ok());
    redis.kill();

    // Still limited, by the router's own bucket: at most the burst.
    let ok = admitted(&[&a], "acme", &l, 10).await;
    assert!((1..=4).contains(&ok), "admitted {ok} of 10 without Redis");
    assert!(
        a.stats
            .store_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // Redis returns (empty): once the retry pause is over, a new tenant's
    // lease goes to Redis again and succeeds.
    redis.restart().unwrap();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        let (trips, errors) = (
            count(&a.stats.store_round_trips),
            count(&a.stats.store_errors),
        );
        assert!(a.admit(&format!("tenant-{i}"), &l).await.is_ok());
        if count(&a.stats.store_round_trips) > trips && count(&a.stats.store_errors) == errors {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the limiter never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
