//! The cluster snapshot follows etcd by watch, rides out an etcd outage on
//! its last snapshot, and resumes from the last revision when etcd returns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use control_plane::model::{CellAlive, CellSpec, Keys, Lifecycle, TenantRecord};
use control_plane::registration::{LeaseSettings, keep_cell_alive, publish_spec};
use control_plane::store::{EtcdSettings, Store, encode};
use control_plane::watch::ClusterWatch;
use e2e::Etcd;

fn settings(etcd: &Etcd) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![etcd.client_url.clone()],
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
    }
}

fn tenant(id: &str) -> TenantRecord {
    TenantRecord {
        id: id.to_owned(),
        api_keys: Vec::new(),
        plan: "standard".to_owned(),
        pin: None,
        cache_threshold: None,
        limits: None,
        fallbacks: None,
        hybrid_retrieval: false,
        created_at_ms: 0,
    }
}

async fn put_tenant(store: &Store, keys: &Keys, id: &str) -> anyhow::Result<()> {
    let (key, value) = (keys.tenant(id), encode(&tenant(id)));
    store
        .retrying("put tenant", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_survives_etcd_restart_and_misses_nothing() -> anyhow::Result<()> {
    let mut etcd = Etcd::start()?;
    let keys = Keys::new("/t/");
    let store = Store::connect(settings(&etcd)).await?;
    put_tenant(&store, &keys, "before").await?;

    let (watch, _task) = ClusterWatch::start(store.clone(), keys.clone()).await?;
    assert!(watch.snapshot().tenants.contains_key("before"));

    put_tenant(&store, &keys, "live").await?;
    assert!(
        watch
            .wait_until(Duration::from_secs(5), |v| v.tenants.contains_key("live"))
            .await
    );
    let revision = watch.snapshot().revision;

    // etcd goes away: the last snapshot keeps serving.
    etcd.kill();
    assert!(watch.snapshot().tenants.contains_key("live"));
    assert_eq!(watch.snapshot().revision, revision);

    // It comes back; writes made now must reach the snapshot through the
    // resumed watch, in order, with nothing skipped.
    etcd.restart()?;
    for i in 0..20 {
        put_tenant(&store, &keys, &format!("after-{i}")).await?;
    }
    assert!(
        watch
            .wait_until(Duration::from_secs(15), |v| (0..20)
                .all(|i| v.tenants.contains_key(&format!("after-{i}"))))
            .await,
        "snapshot missed writes made after etcd returned"
    );
    assert!(watch.snapshot().revision > revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_key_follows_the_lease() -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let keys = Keys::new("/t/");
    let store = Store::connect(settings(&etcd)).await?;
    let (watch, _task) = ClusterWatch::start(store.clone(), keys.clone()).await?;

    let spec = CellSpec {
        region: "r1".into(),
        endpoint: "http://127.0.0.1:1".into(),
        template: "standard".into(),
        lifecycle: Lifecycle::Active,
    };
    publish_spec(&store, &keys, "c1", spec).await?;
    let keeper = keep_cell_alive(
        store.clone(),
        &keys,
        "c1",
        &CellAlive {
            endpoint: "http://127.0.0.1:1".into(),
            started_at_ms: 0,
        },
        LeaseSettings {
            ttl: Duration::from_secs(2),
            keep_alive_every: Duration::from_millis(500),
        },
    );
    assert!(
        watch
            .wait_until(Duration::from_secs(5), |v| v.serving_cells().count() == 1)
            .await
    );

    // Renewals keep it alive well past the TTL…
    let outlived = !watch
        .wait_until(Duration::from_secs(4), |v| v.serving_cells().count() == 0)
        .await;
    assert!(
        outlived,
        "the liveness key expired while its lease was being renewed"
    );

    // …and when renewals stop, the key goes with the lease.
    keeper.abort();
    assert!(
        watch
            .wait_until(Duration::from_secs(10), |v| v.serving_cells().count() == 0)
            .await
    );
    // The spec stays: the cell is known, only not serving.
    assert!(watch.snapshot().cells.contains_key("c1"));
    Ok(())
}
