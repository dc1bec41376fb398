//! Provider-region health coordinated through etcd: cells report, the
//! elected control-plane leader judges and publishes, cells follow; an
//! operator can drain a region; a second control plane takes over
//! leadership when the first dies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::time::Duration;

use e2e::cluster::ADMIN_TOKEN;
use e2e::{Cluster, ClusterOptions, Service, eventually};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

async fn tenant_with_documents(cluster: &Cluster, id: &str) -> String {
    let shipping = json!({"documents": [{"id": "shipping", "text": SHIPPING}]});
    cluster.tenant_with_documents(id, &shipping).await.unwrap()
}

/// A fresh (uncached) answer; returns the provider that gave it.
async fn fresh_answer(cluster: &Cluster, key: &str) -> String {
    assert!(cluster.purge_cache(key).await.unwrap().is_success());
    let (status, body, _) = cluster
        .post(
            key,
            "/v1/query",
            &json!({"query": "Where do orders ship from?"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cache"], "miss", "{body}");
    body["provider"].as_str().unwrap_or_default().to_owned()
}

async fn admin(cluster: &Cluster, url: &str, method: reqwest::Method, path: &str) -> Value {
    let resp = cluster
        .http
        .request(method, format!("{url}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn provider<'a>(list: &'a Value, id: &str) -> Option<&'a Value> {
    list["providers"].as_array()?.iter().find(|p| p["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_drain_moves_traffic_and_undrain_brings_it_back() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = tenant_with_documents(&cluster, "acme").await;
    assert_eq!(fresh_answer(&cluster, &key).await, "azure-eastus");

    let cp = cluster.control_plane.url.clone();
    admin(
        &cluster,
        &cp,
        reqwest::Method::POST,
        "/admin/providers/azure-eastus/drain",
    )
    .await;
    eventually(5, "answers from the next region", || async {
        fresh_answer(&cluster, &key).await == "azure-westeurope"
    })
    .await;
    // Drained: not even tried.
    let before = cluster.provider_requests("azure-eastus").await.unwrap();
    for _ in 0..3 {
        assert_eq!(fresh_answer(&cluster, &key).await, "azure-westeurope");
    }
    assert_eq!(
        cluster.provider_requests("azure-eastus").await.unwrap(),
        before
    );
    let list = admin(&cluster, &cp, reqwest::Method::GET, "/admin/providers").await;
    assert_eq!(
        provider(&list, "azure-eastus").unwrap()["drained"],
        true,
        "{list}"
    );

    admin(
        &cluster,
        &cp,
        reqwest::Method::DELETE,
        "/admin/providers/azure-eastus/drain",
    )
    .await;
    eventually(5, "answers from the first region again", || async {
        fresh_answer(&cluster, &key).await == "azure-eastus"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_judges_a_failing_region_down_from_cell_reports() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = tenant_with_documents(&cluster, "globex").await;
    let cp = cluster.control_plane.url.clone();
    cluster
        .set_faults("azure-eastus", &json!({"outage": true}))
        .await
        .unwrap();
    // Every answer still comes (from the next region) while the cell reports
    // the failures and the leader judges them.
    eventually(15, "azure-eastus published as down", || async {
        assert_eq!(fresh_answer(&cluster, &key).await, "azure-westeurope");
        let list = admin(&cluster, &cp, reqwest::Method::GET, "/admin/providers").await;
        provider(&list, "azure-eastus").is_some_and(|p| p["health"]["state"] == "down")
    })
    .await;
    let list = admin(&cluster, &cp, reqwest::Method::GET, "/admin/providers").await;
    let eastus = provider(&list, "azure-eastus").unwrap();
    assert!(
        eastus["health"]["error_rate"].as_f64().unwrap() >= 0.5,
        "{eastus}"
    );
    let leader = admin(&cluster, &cp, reqwest::Method::GET, "/admin/leader").await;
    assert_eq!(
        eastus["health"]["leader"], leader["leader"],
        "{eastus} {leader}"
    );
    // The healthy region is published as such.
    eventually(5, "azure-westeurope published as healthy", || async {
        let list = admin(&cluster, &cp, reqwest::Method::GET, "/admin/providers").await;
        provider(&list, "azure-westeurope").is_some_and(|p| p["health"]["state"] == "healthy")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_takes_over_when_the_leader_dies() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let config = cluster.dir.path().join("control-plane.yaml");
    let second = Service::start(
        "control-plane",
        &config,
        &[("CELLNET_ADMIN_TOKEN", ADMIN_TOKEN)],
        cluster.dir.path(),
    )
    .unwrap();
    let first_url = cluster.control_plane.url.clone();
    let first_addr = first_url.trim_start_matches("http://").to_owned();
    let second_addr = second.url.trim_start_matches("http://").to_owned();
    let leader_of = |url: String| {
        let http = cluster.http.clone();
        async move {
            let resp = http
                .get(format!("{url}/admin/leader"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let body: Value = resp.json().await.unwrap();
            body["leader"].as_str().unwrap_or_default().to_owned()
        }
    };
    eventually(10, "the first control plane leads", || {
        let f = leader_of(first_url.clone());
        let first_addr = first_addr.clone();
        async move { f.await.contains(&first_addr) }
    })
    .await;

    cluster.control_plane.kill();
    let killed = tokio::time::Instant::now();
    eventually(10, "the second control plane leads", || {
        let f = leader_of(second.url.clone());
        let second_addr = second_addr.clone();
        async move { f.await.contains(&second_addr) }
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "takeover took {took:?}");
    eprintln!("leadership moved {took:?} after the leader was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_cells_keep_their_last_routing_table() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let key = tenant_with_documents(&cluster, "umbrella").await;
    let cp = cluster.control_plane.url.clone();
    admin(
        &cluster,
        &cp,
        reqwest::Method::POST,
        "/admin/providers/azure-eastus/drain",
    )
    .await;
    eventually(5, "the drain applied", || async {
        fresh_answer(&cluster, &key).await == "azure-westeurope"
    })
    .await;

    cluster.etcd.kill();
    let before = cluster.provider_requests("azure-eastus").await.unwrap();
    for _ in 0..3 {
        assert_eq!(fresh_answer(&cluster, &key).await, "azure-westeurope");
    }
    assert_eq!(
        cluster.provider_requests("azure-eastus").await.unwrap(),
        before
    );

    cluster.etcd.restart().unwrap();
    admin(
        &cluster,
        &cp,
        reqwest::Method::DELETE,
        "/admin/providers/azure-eastus/drain",
    )
    .await;
    eventually(15, "the undrain applied after etcd returned", || async {
        fresh_answer(&cluster, &key).await == "azure-eastus"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_system_lists_every_configured_provider_region_as_unjudged() {
    let cluster = Cluster::start(ClusterOptions::two_regions()).await.unwrap();
    // No request has been served: the regions are known from the cells' configs.
    let list = cluster
        .admin(reqwest::Method::GET, "/admin/providers", None)
        .await
        .unwrap();
    for region in ["azure-eastus", "azure-westeurope"] {
        let p = list["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == region)
            .unwrap_or_else(|| panic!("{region} not listed: {list}"));
        assert!(p["health"].is_null(), "{p}");
        assert_eq!(p["configured_cells"], json!(["cell-a", "cell-b"]), "{p}");
    }
    let out = std::process::Command::new(e2e::process::binary("cellctl").unwrap())
        .args(["providers", "list"])
        .env("ADMIN_URL", &cluster.control_plane.url)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for region in ["azure-eastus", "azure-westeurope"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(region))
            .unwrap_or_else(|| panic!("{region} missing: {stdout}"));
        assert!(line.contains("unjudged"), "{line}");
    }
}
