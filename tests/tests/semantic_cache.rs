//! The semantic cache against a real Redis and a real three-node Redis
//! Cluster: the same scenarios, the same code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use cell::cache::guard::Rejection;
use cell::cache::{
    CacheSettings, CachedAnswer, Citation, Entry, Lookup, RedisConn, RedisTarget, SemanticCache,
    Usage,
};
use cell::embed::{Embedder, MiniLm};
use cell::metrics::CellMetrics;
use e2e::{Redis, RedisCluster};

const THRESHOLD: f32 = 0.92;

fn embedder() -> MiniLm {
    MiniLm::load(&cell::config::default_model_dir()).expect("model files (scripts/fetch-model.sh)")
}

fn settings() -> CacheSettings {
    CacheSettings {
        threshold: THRESHOLD,
        ttl: Duration::from_secs(3600),
        stale_grace: Duration::from_secs(3600),
        timeout: Duration::from_millis(500),
        max_entries_per_tenant: 5,
        memory_budget_bytes: 64 * 1024 * 1024,
    }
}

fn cache(target: &RedisTarget, origin: &str, settings: CacheSettings) -> SemanticCache {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(CellMetrics::register(&mut registry));
    let redis = RedisConn::new(target.clone(), settings.timeout).unwrap();
    SemanticCache::new(redis, settings, 384, origin, metrics)
}

fn entry(answer: &str, version: u64) -> Entry {
    Entry {
        query: String::new(),
        answer: CachedAnswer {
            groundedness: None,
            sentences: Vec::new(),
            answer: answer.to_owned(),
            citations: vec![Citation {
                document_id: "d".into(),
                chunk: 0,
                score: 0.9,
            }],
            provider: "p".into(),
            region: "r".into(),
            model: "m".into(),
            usage: Usage::default(),
        },
        created_at_ms: control_plane::model::now_ms(),
        knowledge_version: version,
    }
}

fn answer_of(lookup: &Lookup) -> Option<&str> {
    match lookup {
        Lookup::Hit { entry, .. } => Some(&entry.answer.answer),
        Lookup::Miss { .. } => None,
    }
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn scenarios(target: RedisTarget) {
    let m = embedder();
    let e = |t: &str| m.embed_batch(&[t]).unwrap().remove(0);
    let a = cache(&target, "cell-a", settings());
    let b = cache(&target, "cell-b", settings());
    let sync_a = a.start_sync();
    let sync_b = b.start_sync();

    // Two tenants ask the identical question: each gets its own answer.
    let q = "How long do refunds take?";
    a.store("t1", q, &e(q), entry("t1: five days", 0))
        .await
        .unwrap();
    a.store("t2", q, &e(q), entry("t2: ten days", 0))
        .await
        .unwrap();
    assert_eq!(
        answer_of(&a.lookup("t1", q, &e(q), 0, THRESHOLD).await.unwrap()),
        Some("t1: five days")
    );
    assert_eq!(
        answer_of(&a.lookup("t2", q, &e(q), 0, THRESHOLD).await.unwrap()),
        Some("t2: ten days")
    );
    assert_eq!(
        answer_of(&a.lookup("t3", q, &e(q), 0, THRESHOLD).await.unwrap()),
        None
    );

    // Vector tier: a paraphrase hits; a question differing in a number does not.
    let para = "how long does it take for refunds";
    match a.lookup("t1", para, &e(para), 0, 0.85).await.unwrap() {
        Lookup::Hit {
            exact, similarity, ..
        } => assert!(!exact && similarity < 1.0),
        other => panic!("paraphrase missed: {other:?}"),
    }
    let q14 = "Can I cancel after 14 days?";
    let q30 = "Can I cancel after 30 days?";
    a.store("t1", q14, &e(q14), entry("yes, within 14", 0))
        .await
        .unwrap();
    // A low threshold makes it a candidate, so the guard must refuse it.
    match a.lookup("t1", q30, &e(q30), 0, 0.8).await.unwrap() {
        Lookup::Miss { rejected, .. } => {
            assert!(rejected.contains(&Rejection::Number), "{rejected:?}")
        }
        hit => panic!("number trap served: {hit:?}"),
    }

    // A newer knowledge version makes it a miss, but the stale fallback still finds it.
    assert_eq!(
        answer_of(&a.lookup("t1", q, &e(q), 1, THRESHOLD).await.unwrap()),
        None
    );
    let (stale, _) = a
        .stale_candidate("t1", q, &e(q), THRESHOLD)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.answer.answer, "t1: five days");

    // The other cell learns of entries through the event stream.
    wait("cell-b to see t1's entries", || {
        b.tier().tenant_len("t1") == 2
    })
    .await;
    let late = "Where is the head office?";
    a.store("t1", late, &e(late), entry("Lyon", 0))
        .await
        .unwrap();
    wait("cell-b to see the new entry", || {
        b.tier().tenant_len("t1") == 3
    })
    .await;

    // The per-tenant cap evicts the oldest entries, everywhere.
    for i in 0..5 {
        let qi = format!("Question number {i} about invoices?");
        a.store("t1", &qi, &e(&qi), entry("x", 0)).await.unwrap();
    }
    assert_eq!(a.tier().tenant_len("t1"), 5);
    wait("cell-b to apply evictions", || {
        b.tier().tenant_len("t1") == 5
    })
    .await;
    assert_eq!(
        answer_of(&a.lookup("t1", q, &e(q), 0, THRESHOLD).await.unwrap()),
        None,
        "oldest entry should be evicted"
    );

    // A purge empties one tenant only.
    assert_eq!(a.purge("t2").await.unwrap(), 1);
    assert_eq!(
        answer_of(&a.lookup("t2", q, &e(q), 0, THRESHOLD).await.unwrap()),
        None
    );
    wait("cell-b to drop t2", || b.tier().tenant_len("t2") == 0).await;
    assert_eq!(a.tier().tenant_len("t1"), 5);

    // A restarted cell loads every entry at start.
    let c = cache(&target, "cell-c", settings());
    let sync_c = c.start_sync();
    wait("cell-c to load t1", || c.tier().tenant_len("t1") == 5).await;

    // A tight memory budget evicts across tenants, oldest first.
    let mut small = settings();
    small.memory_budget_bytes = 1024 * 1024;
    small.max_entries_per_tenant = 10_000;
    let d = cache(&target, "cell-d", small);
    for i in 0..700 {
        let qi = format!("Filler question {i}?");
        d.store("t4", &qi, &e("filler"), entry("f", 0))
            .await
            .unwrap();
    }
    assert!(d.tier().bytes() <= 1024 * 1024, "{}", d.tier().bytes());
    assert!(d.tier().tenant_len("t4") < 700);

    for task in [sync_a, sync_b, sync_c] {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_a_single_redis() {
    let redis = Redis::start().unwrap();
    scenarios(RedisTarget::Single(redis.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_a_redis_cluster() {
    let cluster = RedisCluster::start().unwrap();
    scenarios(RedisTarget::Cluster(cluster.urls.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_bypassed_and_recovered() {
    let mut redis = Redis::start().unwrap();
    let target = RedisTarget::Single(redis.url.clone());
    let m = embedder();
    let q = "What is the refund window?";
    let v = m.embed_batch(&[q]).unwrap().remove(0);
    let a = cache(&target, "cell-a", settings());
    let _sync = a.start_sync();
    a.store("t", q, &v, entry("30 days", 0)).await.unwrap();

    redis.kill();
    // A dead Redis fails each call (after at most the client's timeout)
    // instead of holding it; the guard is far above that timeout and only
    // turns a hang into a failure.
    tokio::time::timeout(Duration::from_secs(60), async {
        assert!(a.lookup("t", q, &v, 0, THRESHOLD).await.is_err());
        assert!(a.store("t", q, &v, entry("30 days", 0)).await.is_err());
        // Documents change while Redis is away: the bump cannot land yet.
        assert!(a.bump_knowledge_version("t").await.is_err());
    })
    .await
    .expect("calls to a dead Redis hung instead of failing");

    redis.restart().unwrap();
    // The pending bump lands before the cache answers again: the version moves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let version = loop {
        if let Ok(v) = a.knowledge_version("t").await {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "version never readable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(version, 1, "the bump made while Redis was down was lost");
    // It recovers by itself (this Redis kept nothing, so store again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if a.store("t", q, &v, entry("30 days", 0)).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        answer_of(&a.lookup("t", q, &v, 0, THRESHOLD).await.unwrap()),
        Some("30 days")
    );
}

/// The Redis client id of the connection `conn` gives the calling thread.
async fn client_id(conn: &RedisConn) -> i64 {
    let mut c = conn.get().await.unwrap();
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut c)
        .await
        .unwrap()
}

/// On a thread with a runtime of its own, as a cell's workers are: the ids
/// of the connections its calls used, before and after a `reset`.
fn ids_on_a_thread_of_its_own(conn: &RedisConn) -> (Vec<i64>, i64) {
    let conn = conn.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let before = vec![
                client_id(&conn).await,
                client_id(&conn).await,
                client_id(&conn.clone()).await,
            ];
            conn.reset();
            (before, client_id(&conn).await)
        })
    })
    .join()
    .unwrap()
}

#[test]
fn each_thread_keeps_a_redis_connection_of_its_own() {
    let redis = Redis::start().unwrap();
    let conn = RedisConn::new(
        RedisTarget::Single(redis.url.clone()),
        Duration::from_secs(2),
    )
    .unwrap();
    let (first, first_after_reset) = ids_on_a_thread_of_its_own(&conn);
    let (second, _) = ids_on_a_thread_of_its_own(&conn);
    assert!(
        first.iter().all(|id| *id == first[0]),
        "a thread's calls (and its clones of the handle) share one connection: {first:?}"
    );
    assert!(
        second.iter().all(|id| *id == second[0]),
        "a thread's calls (and its clones of the handle) share one connection: {second:?}"
    );
    assert_ne!(first[0], second[0], "two threads shared a connection");
    assert_ne!(
        first[0], first_after_reset,
        "a reset connection was used again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_a_multi_threaded_runtime_share_one_redis_connection() {
    let redis = Redis::start().unwrap();
    let conn = RedisConn::new(
        RedisTarget::Single(redis.url.clone()),
        Duration::from_secs(2),
    )
    .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { client_id(&conn).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    conn.reset();
    assert_ne!(
        client_id(&conn).await,
        ids[0],
        "a reset connection was used again"
    );
}
