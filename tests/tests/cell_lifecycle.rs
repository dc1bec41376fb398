//! Cells that come and go without stranding a tenant: placement committed by
//! the control-plane leader, tenants moved (dual-write, copy, verify, flip,
//! clean up) when a cell joins or drains, a move that survives its leader,
//! and two routers that route every tenant alike throughout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::{Value, json};

const OBJECTS: &[&str] = &[
    "lantern",
    "compass",
    "kettle",
    "violin",
    "anchor",
    "telescope",
    "hammock",
    "bicycle",
];
const PLACES: &[&str] = &[
    "greenhouse",
    "boathouse",
    "attic",
    "cellar",
    "lighthouse",
    "garage",
    "library",
    "chapel",
];

fn tenant_id(i: usize) -> String {
    format!("tenant-{i:02}")
}

/// A fact only tenant `i` knows, in a document of its own.
fn fact(i: usize) -> Value {
    let text = format!(
        "The spare keys of {} are hidden inside the {} in the {}.",
        tenant_id(i),
        OBJECTS[i % OBJECTS.len()],
        PLACES[(i / OBJECTS.len()) % PLACES.len()]
    );
    json!({"documents": [{"id": format!("fact-{i}"), "text": text}]})
}

/// Asks tenant `i`'s question through one router; returns the status, the
/// cited document ids and the cell that answered.
async fn ask(
    http: &reqwest::Client,
    router: &str,
    key: &str,
    i: usize,
) -> (u16, Vec<String>, String) {
    let resp = http
        .post(format!("{router}/v1/query"))
        .bearer_auth(key)
        .json(&json!({"query": format!("Where are the spare keys of {} hidden?", tenant_id(i))}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let cited = body["citations"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["document_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (
        status,
        cited,
        body["cell"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn tenants(cluster: &Cluster, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        keys.push(
            cluster
                .tenant_with_documents(&tenant_id(i), &fact(i))
                .await
                .unwrap(),
        );
    }
    keys
}

async fn placement(cluster: &Cluster) -> Value {
    cluster
        .admin(reqwest::Method::GET, "/admin/placement", None)
        .await
        .unwrap()
}

/// Committed members by tenant.
async fn members(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    placement(cluster).await["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let members = t["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
                .collect();
            (t["tenant"].as_str().unwrap().to_owned(), members)
        })
        .collect()
}

async fn lifecycle(cluster: &Cluster, cell: &str) -> String {
    let cells = cluster
        .admin(reqwest::Method::GET, "/admin/cells", None)
        .await
        .unwrap();
    cells["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == cell)
        .map(|c| c["spec"]["lifecycle"].as_str().unwrap_or("-").to_owned())
        .unwrap_or_default()
}

/// Waits until no tenant is away from its target and no cell that left
/// still holds points.
async fn settled(cluster: &Cluster, secs: u64) {
    eventually(secs, "placement settles at its target", || async {
        let p = placement(cluster).await;
        p["pending"].as_array().is_some_and(Vec::is_empty)
            && p["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["leaving"].as_array().is_none_or(Vec::is_empty) && t["moving"].is_null())
    })
    .await;
}

/// Reads every tenant's fact through every router, round after round, until
/// told to stop; returns how many answers were wrong (an error, or without
/// the tenant's own document) and how many were asked.
fn keep_reading(
    cluster: &Cluster,
    keys: &[String],
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    let (http, routers) = (cluster.http.clone(), cluster.router_urls());
    let (keys, stop) = (keys.to_vec(), stop.clone());
    tokio::spawn(async move {
        let mut wrong = Vec::new();
        let mut asked = 0;
        while !stop.load(Ordering::Relaxed) {
            for (i, key) in keys.iter().enumerate() {
                let router = &routers[(asked + i) % routers.len()];
                let (status, cited, cell) = ask(&http, router, key, i).await;
                asked += 1;
                if status != 200 || !cited.contains(&format!("fact-{i}")) {
                    wrong.push(format!("{}: {status} {cited:?} from {cell}", tenant_id(i)));
                }
            }
        }
        (wrong, asked)
    })
}

/// Every tenant answered with its own document through every router, each
/// router sending it to the same cell; and every committed member holds the
/// tenant's `points[i]` points.
async fn check_every_tenant(cluster: &Cluster, keys: &[String], points: &[u64]) {
    let committed = members(cluster).await;
    for (i, key) in keys.iter().enumerate() {
        assert!(cluster.purge_cache(key).await.unwrap().is_success());
        let mut served_by = Vec::new();
        for router in cluster.router_urls() {
            let (status, cited, cell) = ask(&cluster.http, &router, key, i).await;
            assert_eq!(status, 200, "{}", tenant_id(i));
            assert!(
                cited.contains(&format!("fact-{i}")),
                "{} answered without its document by {cell}: {cited:?}",
                tenant_id(i)
            );
            served_by.push(cell);
        }
        assert!(
            served_by.windows(2).all(|w| w[0] == w[1]),
            "{}: routers disagree: {served_by:?}",
            tenant_id(i)
        );
        for member in &committed[&tenant_id(i)] {
            assert_eq!(
                cluster.points_on(member, &tenant_id(i)).await.unwrap(),
                points[i],
                "{} on {member}",
                tenant_id(i)
            );
        }
    }
}

fn options(cells: &[(&str, &str)], placement: Value) -> ClusterOptions {
    ClusterOptions {
        cells: cells
            .iter()
            .map(|(c, r)| (c.to_string(), r.to_string()))
            .collect(),
        routers: 2,
        control_plane_settings: json!({"placement": placement}),
        ..ClusterOptions::default()
    }
}

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
    let stop = Arc::new(AtomicBool::new(false));
    let reader = keep_reading(&cluster, &keys, &stop);
    cluster.add_cell("cell-d", "us-east").unwrap();
    cluster.wait_for_cells(4).await.unwrap();
    eventually(120, "cell-d becomes active", || async {
        lifecycle(&cluster, "cell-d").await == "active"
    })
    .await;
    settled(&cluster, 60).await;
    stop.store(true, Ordering::Relaxed);
    let (wrong, asked) = reader.await.unwrap();
    assert!(
        wrong.is_empty(),
        "{} of {asked} answers wrong: {wrong:?}",
        wrong.len()
    );
    assert!(asked >= keys.len());

    // cell-d took its share: home to some tenants, never above the bound.
    let committed = members(&cluster).await;
    let homed = committed.values().filter(|m| m[0] == "cell-d").count();
    let bound = (1.25 * 24.0 / 4.0_f64).ceil() as usize;
    assert!(
        (1..=bound).contains(&homed),
        "cell-d is home to {homed} tenants"
    );
    assert!(committed.values().all(|m| m.len() == 2));
    check_every_tenant(&cluster, &keys, &[1; 24]).await;
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
