//! Cells that come and go without stranding a tenant: placement committed by
//! the control-plane leader, tenants moved (dual-write, copy, verify, flip,
//! clean up) when a cell joins or drains, a move that survives its leader,
//! and two routers that route every tenant alike throughout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::fleet::*;
use e2e::{Cluster, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_added_under_load_gets_its_share_and_no_tenant_loses_its_documents() {
    let mut cluster = Cluster::start(options(
        &[
            ("cell-a", "eu-west"),
            ("cell-b", "us-east"),
            ("cell-c", "eu-west"),
        ],
        json!({"cleanup_grace": "1s"}),
    ))
    .await
    .unwrap();
    let keys = tenants(&cluster, 24).await;
    for cell in ["cell-a", "cell-b", "cell-c"] {
        assert_eq!(lifecycle(&cluster, cell).await, "active");
    }
    let load = Load::start(&cluster, &keys);
    cluster.add_cell("cell-d", "us-east").unwrap();
    cluster.wait_for_cells(4).await.unwrap();
    eventually(120, "cell-d becomes active", || async {
        lifecycle(&cluster, "cell-d").await == "active"
    })
    .await;
    settled(&cluster, 60).await;
    let notes = load.finish().await;

    // cell-d took its share: home to some tenants, never above the bound.
    let committed = members(&cluster).await;
    let homed = committed.values().filter(|m| m[0] == "cell-d").count();
    let bound = (1.25 * 24.0 / 4.0_f64).ceil() as usize;
    assert!(
        (1..=bound).contains(&homed),
        "cell-d is home to {homed} tenants"
    );
    assert!(committed.values().all(|m| m.len() == 2));
    check_every_tenant(&cluster, &keys, &expected_points(&notes)).await;
    // Cells that left a replica set kept nothing of the tenant.
    for (tenant, m) in &committed {
        for cell in ["cell-a", "cell-b", "cell-c", "cell-d"] {
            if !m.contains(&cell.to_owned()) {
                assert_eq!(
                    cluster.points_on(cell, tenant).await.unwrap(),
                    0,
                    "{tenant} on {cell}"
                );
            }
        }
    }
}

/// Four cells, two per region: a drain can move each tenant to a cell of
/// the region it leaves.
const FOUR_CELLS: [(&str, &str); 4] = [
    ("cell-a", "eu-west"),
    ("cell-b", "us-east"),
    ("cell-c", "eu-west"),
    ("cell-d", "us-east"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_drained_under_reads_and_writes_gives_up_every_tenant_and_only_then_can_go() {
    // A slow copy, so that writes and deletes land while tenants are copied.
    let cluster = Cluster::start(options(
        &FOUR_CELLS,
        json!({"cleanup_grace": "1s", "copy_points_per_second": 4}),
    ))
    .await
    .unwrap();
    let keys = tenants(&cluster, 16).await;
    let held = members(&cluster).await;
    let on_d = held
        .values()
        .filter(|m| m.contains(&"cell-d".into()))
        .count();
    assert!(on_d > 0, "cell-d holds no tenant: {held:?}");

    let refused = cluster
        .admin(reqwest::Method::DELETE, "/admin/cells/cell-d", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("409") && refused.contains("still holds"),
        "{refused}"
    );

    let load = Load::start(&cluster, &keys);
    cluster
        .admin(reqwest::Method::POST, "/admin/cells/cell-d/drain", None)
        .await
        .unwrap();
    eventually(20, "a move copies while writes go on", || async {
        !moving_at(&cluster, "copy").await.is_empty()
            || lifecycle(&cluster, "cell-d").await == "drained"
    })
    .await;
    eventually(180, "cell-d is drained", || async {
        lifecycle(&cluster, "cell-d").await == "drained"
    })
    .await;
    settled(&cluster, 60).await;
    let notes = load.finish().await;
    assert!(
        notes.iter().all(|n| !n.is_empty()),
        "every tenant was written to during the drain"
    );

    let committed = members(&cluster).await;
    assert!(
        committed
            .values()
            .all(|m| m.len() == 2 && !m.contains(&"cell-d".into())),
        "{committed:?}"
    );
    check_every_tenant(&cluster, &keys, &expected_points(&notes)).await;
    emptied(&cluster, "cell-d", keys.len(), 30).await;
    cluster
        .admin(reqwest::Method::DELETE, "/admin/cells/cell-d", None)
        .await
        .unwrap();
    assert_eq!(lifecycle(&cluster, "cell-d").await, "removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_interrupted_by_a_killed_destination_and_a_killed_leader_complete_after_restart() {
    let mut cluster = Cluster::start(options(
        &FOUR_CELLS[..3],
        json!({"cleanup_grace": "1s", "copy_points_per_second": 2}),
    ))
    .await
    .unwrap();
    let keys = tenants(&cluster, 12).await;
    let load = Load::start(&cluster, &keys);

    cluster.add_cell("cell-d", "us-east").unwrap();
    eventually(30, "a tenant is copied onto cell-d", || async {
        !moving_at(&cluster, "copy").await.is_empty()
    })
    .await;
    // kill -9 the destination mid-copy; it comes back with its data dir.
    cluster.cell_mut("cell-d").unwrap().kill();
    eventually(
        30,
        "the copy fails against the dead destination",
        || async {
            placement(&cluster).await["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| !t["moving"]["last_error"].is_null())
        },
    )
    .await;
    cluster.restart_cell("cell-d").unwrap();

    // kill -9 the control-plane leader mid-move; a new one resumes from etcd.
    eventually(30, "a move is in progress", || async {
        placement(&cluster).await["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| !t["moving"].is_null())
    })
    .await;
    cluster.control_plane.kill();
    cluster.restart_control_plane().unwrap();

    eventually(180, "cell-d becomes active", || async {
        lifecycle(&cluster, "cell-d").await == "active"
    })
    .await;
    settled(&cluster, 120).await;
    let notes = load.finish().await;
    let committed = members(&cluster).await;
    assert!(
        committed.values().any(|m| m.contains(&"cell-d".into())),
        "cell-d got no tenant: {committed:?}"
    );
    check_every_tenant(&cluster, &keys, &expected_points(&notes)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_lost_for_good_has_its_tenants_copied_again_from_their_surviving_members() {
    let mut cluster = Cluster::start(options(&FOUR_CELLS, json!({"cleanup_grace": "1s"})))
        .await
        .unwrap();
    let keys = tenants(&cluster, 12).await;
    let lost: Vec<String> = members(&cluster)
        .await
        .into_iter()
        .filter(|(_, m)| m.contains(&"cell-d".into()))
        .map(|(t, _)| t)
        .collect();
    assert!(!lost.is_empty());
    cluster.cell_mut("cell-d").unwrap().kill();
    cluster
        .admin(
            reqwest::Method::DELETE,
            "/admin/cells/cell-d?force=true",
            None,
        )
        .await
        .unwrap();
    // The admin API answers before its own view of etcd has the removal,
    // so "settled" alone could still see the old target: wait for the
    // lost tenants to be re-placed first.
    eventually(
        120,
        "every tenant of cell-d is placed elsewhere",
        || async {
            let committed = members(&cluster).await;
            lost.iter()
                .all(|t| !committed[t].contains(&"cell-d".into()))
        },
    )
    .await;
    settled(&cluster, 120).await;
    let committed = members(&cluster).await;
    for tenant in &lost {
        let m = &committed[tenant];
        assert!(
            m.len() == 2 && !m.contains(&"cell-d".into()),
            "{tenant}: {m:?}"
        );
    }
    check_every_tenant(&cluster, &keys, &[1; 12]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_resumes_after_its_source_is_killed_and_etcd_goes_away() {
    let mut cluster = Cluster::start(options(
        &FOUR_CELLS,
        json!({"cleanup_grace": "1s", "copy_points_per_second": 2}),
    ))
    .await
    .unwrap();
    let keys = tenants(&cluster, 12).await;
    let load = Load::start(&cluster, &keys);

    // Draining cell-d moves its tenants; kill -9 the cell one of them is
    // being copied from (the copy starts again from its other member).
    cluster
        .admin(reqwest::Method::POST, "/admin/cells/cell-d/drain", None)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let source = loop {
        let p = placement(&cluster).await;
        let copying = p["tenants"].as_array().unwrap().iter().find_map(|t| {
            (t["moving"]["step"] == "copy")
                .then(|| t["moving"]["source"].as_str().map(str::to_owned))
                .flatten()
        });
        if let Some(cell) = copying {
            break cell;
        }
        assert!(tokio::time::Instant::now() < deadline, "no copy started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    cluster.cell_mut(&source).unwrap().kill();

    // etcd away for a while mid-move: nothing commits, everything keeps
    // serving from the last snapshot, and the moves go on once it is back.
    cluster.etcd.kill();
    let asked_while_away = ask(&cluster.http, &cluster.router.url, &keys[0], 0).await;
    cluster.etcd.restart().unwrap();
    cluster.restart_cell(&source).unwrap();

    eventually(180, "cell-d is drained", || async {
        lifecycle(&cluster, "cell-d").await == "drained"
    })
    .await;
    settled(&cluster, 120).await;
    let notes = load.finish().await;
    println!("killed {source}");
    assert_eq!(asked_while_away.0, 200, "{asked_while_away:?}");
    check_every_tenant(&cluster, &keys, &expected_points(&notes)).await;
}
