//! A fleet of tenants for lifecycle and chaos tests: each holds a fact
//! only it knows, asked for through every router while cells come and go;
//! writers add and delete notes and remember what was acknowledged; checks
//! that every answer cites the tenant's own document and every committed
//! member holds exactly what was acknowledged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::{Cluster, ClusterOptions, eventually};

pub const OBJECTS: &[&str] = &[
    "lantern",
    "compass",
    "kettle",
    "violin",
    "anchor",
    "telescope",
    "hammock",
    "bicycle",
];
pub const PLACES: &[&str] = &[
    "greenhouse",
    "boathouse",
    "attic",
    "cellar",
    "lighthouse",
    "garage",
    "library",
    "chapel",
];

pub fn tenant_id(i: usize) -> String {
    format!("tenant-{i:02}")
}

/// A fact only tenant `i` knows, in a document of its own.
pub fn fact(i: usize) -> Value {
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
pub async fn ask(
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

/// `n` tenants, each with its fact, and limits high enough that readers
/// asking in a tight loop are never refused for their rate.
pub async fn tenants(cluster: &Cluster, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = cluster
            .tenant_with_documents(&tenant_id(i), &fact(i))
            .await
            .unwrap();
        cluster
            .update_tenant(
                &tenant_id(i),
                &json!({"limits": {"requests_per_second": 100000.0, "burst": 100000}}),
            )
            .await
            .unwrap();
        keys.push(key);
    }
    keys
}

pub async fn placement(cluster: &Cluster) -> Value {
    cluster
        .admin(reqwest::Method::GET, "/admin/placement", None)
        .await
        .unwrap()
}

/// Committed members by tenant.
pub async fn members(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
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

/// The control plane's record of `cell` (`GET /admin/cells`), or null.
pub async fn cell_record(cluster: &Cluster, cell: &str) -> Value {
    let cells = cluster
        .admin(reqwest::Method::GET, "/admin/cells", None)
        .await
        .unwrap();
    cells["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == cell)
        .cloned()
        .unwrap_or(Value::Null)
}

pub async fn lifecycle(cluster: &Cluster, cell: &str) -> String {
    let record = cell_record(cluster, cell).await;
    match &record {
        Value::Null => String::new(),
        r => r["spec"]["lifecycle"].as_str().unwrap_or("-").to_owned(),
    }
}

/// Waits until no tenant is away from its target and no cell that left
/// still holds points.
pub async fn settled(cluster: &Cluster, secs: u64) {
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
pub fn keep_reading(
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
pub async fn check_every_tenant(cluster: &Cluster, keys: &[String], points: &[u64]) {
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

pub fn options(cells: &[(&str, &str)], placement: Value) -> ClusterOptions {
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

/// What one tenant's writer had acknowledged: the notes present.
pub type Acknowledged = Vec<BTreeSet<String>>;

/// Adds a note to every tenant round after round, and deletes the note of
/// the round before every other round, through alternating routers, until
/// told to stop. A write that fails is tried again (both are idempotent)
/// until acknowledged, so what was acknowledged is exact. Returns the notes
/// each tenant holds and how many tries failed.
pub fn keep_writing(
    cluster: &Cluster,
    keys: &[String],
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Acknowledged, Vec<String>)> {
    let (http, routers) = (cluster.http.clone(), cluster.router_urls());
    let (keys, stop) = (keys.to_vec(), stop.clone());
    tokio::spawn(async move {
        let mut notes: Acknowledged = vec![BTreeSet::new(); keys.len()];
        let mut failed = Vec::new();
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for (i, key) in keys.iter().enumerate() {
                let router = &routers[(round + i) % routers.len()];
                let note = format!("note-{i}-{round}");
                let body = json!({"documents": [{"id": note,
                    "text": format!("Round {round} of {} was logged in the journal.", tenant_id(i))}]});
                let add = || {
                    http.post(format!("{router}/v1/documents"))
                        .bearer_auth(key)
                        .json(&body)
                };
                acknowledge(add, &mut failed, &note).await;
                notes[i].insert(note);
                if round % 2 == 1 {
                    let old = format!("note-{i}-{}", round - 1);
                    let delete = || {
                        http.delete(format!("{router}/v1/documents/{old}"))
                            .bearer_auth(key)
                    };
                    acknowledge(delete, &mut failed, &old).await;
                    notes[i].remove(&old);
                }
            }
            round += 1;
        }
        (notes, failed)
    })
}

/// Sends a request until it is answered 200; each other answer is noted.
async fn acknowledge(
    request: impl Fn() -> reqwest::RequestBuilder,
    failed: &mut Vec<String>,
    what: &str,
) {
    for attempt in 0.. {
        assert!(attempt < 50, "{what}: never acknowledged: {failed:?}");
        match request().send().await {
            Ok(resp) if resp.status() == 200 => return,
            Ok(resp) => failed.push(format!("{what}: {}", resp.status())),
            Err(e) => failed.push(format!("{what}: {e}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100 + 50 * attempt)).await;
    }
}

/// Points each tenant should hold: its fact and the notes acknowledged.
pub fn expected_points(notes: &Acknowledged) -> Vec<u64> {
    notes.iter().map(|n| 1 + n.len() as u64).collect()
}

/// Waits until `cell` holds no point of any tenant.
pub async fn emptied(cluster: &Cluster, cell: &str, tenants: usize, secs: u64) {
    eventually(
        secs,
        &format!("{cell} holds no tenant's points"),
        || async {
            for i in 0..tenants {
                if cluster.points_on(cell, &tenant_id(i)).await.unwrap() != 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// The tenants whose move is at `step` (`dual_write`, `copy`, `verify`).
pub async fn moving_at(cluster: &Cluster, step: &str) -> Vec<String> {
    placement(cluster).await["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["moving"]["step"] == step)
        .map(|t| t["tenant"].as_str().unwrap().to_owned())
        .collect()
}

/// Readers and a writer running against every tenant while cells change.
pub struct Load {
    stop: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<(Vec<String>, usize)>,
    writer: tokio::task::JoinHandle<(Acknowledged, Vec<String>)>,
}

impl Load {
    pub fn start(cluster: &Cluster, keys: &[String]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        Self {
            reader: keep_reading(cluster, keys, &stop),
            writer: keep_writing(cluster, keys, &stop),
            stop,
        }
    }

    /// Stops both; fails the test if any answer was wrong (an error, or
    /// without the tenant's document) or none was asked; returns the notes
    /// each tenant holds.
    pub async fn finish(self) -> Acknowledged {
        self.stop.store(true, Ordering::Relaxed);
        let (wrong, asked) = self.reader.await.unwrap();
        let (notes, tried_again) = self.writer.await.unwrap();
        println!("{asked} answers, writes tried again: {tried_again:?}");
        assert!(asked > 0, "no question was asked");
        assert!(
            wrong.is_empty(),
            "{} of {asked} answers wrong: {wrong:?}",
            wrong.len()
        );
        notes
    }
}
