//! The hint store as several routers share it: one Redis, one stream of
//! hints per cell, and one router at a time replaying a cell's hints.

use std::time::Duration;

use axum::body::Bytes;
use e2e::process::Redis;
use router::redis_conn::LazyRedis;
use router::replication::{Hint, Hints};

fn router_hints(redis: &Redis) -> anyhow::Result<Hints> {
    let store = LazyRedis::open(&redis.url)?;
    Ok(Hints::new(Some(store), Duration::from_secs(2)))
}

fn hint(n: usize) -> Hint {
    Hint {
        tenant: "acme".into(),
        method: "POST".into(),
        path_and_query: "/v1/documents".into(),
        request_id: format!("req-{n}"),
        body: Bytes::from(format!("{{\"n\": {n}}}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_router_at_a_time_replays_a_cells_hints() {
    let redis = Redis::start().unwrap();
    let (first, second) = (router_hints(&redis).unwrap(), router_hints(&redis).unwrap());
    for n in 0..3 {
        first.record("cell-1", &hint(n)).await.unwrap();
    }

    let held = first
        .lock_replay("cell-1")
        .await
        .unwrap()
        .expect("the first router takes the lock");
    assert!(held.has_time());
    assert!(
        held.time_left() > Duration::from_secs(20) && held.time_left() <= Duration::from_secs(30)
    );
    assert!(
        second.lock_replay("cell-1").await.unwrap().is_none(),
        "a second router must not replay the same cell at the same time"
    );
    // Other cells are independent.
    let other = second
        .lock_replay("cell-2")
        .await
        .unwrap()
        .expect("another cell's lock is free");

    // Both routers see the same hints, oldest first.
    let seen: Vec<String> = second
        .oldest("cell-1")
        .await
        .unwrap()
        .into_iter()
        .map(|(_, h)| h.request_id)
        .collect();
    assert_eq!(seen, ["req-0", "req-1", "req-2"]);

    first.unlock_replay(held).await.unwrap();
    let taken_over = second
        .lock_replay("cell-1")
        .await
        .unwrap()
        .expect("free once released");
    assert!(first.lock_replay("cell-1").await.unwrap().is_none());
    second.unlock_replay(taken_over).await.unwrap();
    second.unlock_replay(other).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lock_is_not_released_by_its_old_holder() {
    let redis = Redis::start().unwrap();
    let (first, second) = (router_hints(&redis).unwrap(), router_hints(&redis).unwrap());
    let old = first.lock_replay("cell-1").await.unwrap().unwrap();
    // The lease lapsing, as if the first router had stalled past it.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg("cn:hints:cell-1:replaying")
        .query_async(&mut conn)
        .await
        .unwrap();
    let current = second
        .lock_replay("cell-1")
        .await
        .unwrap()
        .expect("free after lapsing");

    first.unlock_replay(old).await.unwrap();
    assert!(
        first.lock_replay("cell-1").await.unwrap().is_none(),
        "the old holder's release must leave the new holder's lock in place"
    );
    second.unlock_replay(current).await.unwrap();
}
