//! The operator dashboard in headless Chromium: behind a login form, it
//! shows the running cells, traffic, cache hits, cost and provider-regions,
//! and follows a cell being killed and a provider-region being drained
//! within seconds. A screenshot is left in `target/test-artifacts/`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::path::PathBuf;
use std::time::Duration;

use e2e::cluster::ADMIN_TOKEN;
use e2e::webdriver::Browser;
use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::{Value, json};

const SHIPPING: &str = "Shipping. Orders ship from our warehouse in Lyon. \
Standard delivery takes three to five days inside the European Union.";

/// The page refreshes every two seconds and cells are read every half
/// second here: "within a few seconds" with room for a slow machine.
const FOLLOWS: Duration = Duration::from_secs(15);

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("test-artifacts").join(name)
}

async fn data(cluster: &Cluster) -> Value {
    cluster
        .http
        .get(format!("{}/dashboard/data", cluster.control_plane.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_system_and_follows_failures() {
    let mut cluster = Cluster::start(ClusterOptions {
        control_plane_settings: json!({"dashboard": {"scrape_interval": "500ms"}}),
        ..ClusterOptions::two_regions()
    })
    .await
    .unwrap();
    let cp = cluster.control_plane.url.clone();

    // Without a session: the page sends to the login form, the data is refused.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = plain.get(format!("{cp}/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/dashboard/login");
    let refused = plain
        .get(format!("{cp}/dashboard/panel"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sign in"),
        "{body}"
    );
    let wrong = plain
        .post(format!("{cp}/dashboard/login"))
        .form(&[("token", "not-the-operator-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    // Traffic counted from the dashboard's first reading of both cells.
    eventually(20, "both cells' metrics read", || async {
        let d = data(&cluster).await;
        d["cells"]
            .as_array()
            .is_some_and(|cells| cells.len() == 2 && cells.iter().all(|c| c["metrics"] == "ok"))
    })
    .await;
    let key = cluster
        .tenant_with_documents(
            "acme",
            &json!({"documents": [{"id": "shipping", "text": SHIPPING}]}),
        )
        .await
        .unwrap();
    for expected in ["miss", "hit"] {
        let (status, answer, _) = cluster
            .post(
                &key,
                "/v1/query",
                &json!({"query": "Where do orders ship from?"}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["cache"], expected, "{answer}");
    }

    let browser = Browser::start(1280, 1600).await.unwrap();
    browser.goto(&format!("{cp}/dashboard")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/dashboard/login"));
    browser
        .type_into("#token", "not-the-operator-token")
        .await
        .unwrap();
    browser.click("button[type=submit]").await.unwrap();
    browser
        .wait_for_text(".error", FOLLOWS, |t| t.contains("not the operator token"))
        .await
        .unwrap();
    browser.type_into("#token", ADMIN_TOKEN).await.unwrap();
    browser.click("button[type=submit]").await.unwrap();
    let cells = browser
        .wait_for_text("#cells", FOLLOWS, |t| {
            t.contains("cell-a") && t.contains("cell-b")
        })
        .await
        .unwrap();
    assert!(
        browser.url().await.unwrap().ends_with("/dashboard"),
        "{cells}"
    );
    for (cell, region) in [("cell-a", "eu-west"), ("cell-b", "us-east")] {
        let row = browser
            .text(&format!("tr[data-cell=\"{cell}\"]"))
            .await
            .unwrap();
        assert!(row.contains(region) && row.contains("standard"), "{row}");
        assert_eq!(
            browser
                .text(&format!("tr[data-cell=\"{cell}\"] .alive"))
                .await
                .unwrap(),
            "yes"
        );
        // One tenant, on a replica set of both cells.
        assert_eq!(
            browser
                .text(&format!("tr[data-cell=\"{cell}\"] .tenants"))
                .await
                .unwrap(),
            "1"
        );
    }
    // One fresh answer and one exact hit: half the answers came from the
    // exact tier; the fresh one cost something.
    browser
        .wait_for_text("#exact-hits .value", FOLLOWS, |t| t == "50.0 %")
        .await
        .unwrap();
    browser
        .wait_for_text("#cost tr[data-tenant=\"acme\"]", FOLLOWS, |t| !t.is_empty())
        .await
        .unwrap();
    // Every provider-region the cells are configured with is listed, called
    // or not.
    for provider in ["azure-eastus", "azure-westeurope"] {
        assert_eq!(
            browser
                .text(&format!("tr[data-provider=\"{provider}\"] .cells"))
                .await
                .unwrap(),
            "2"
        );
    }
    let points: u32 = browser
        .attribute("#chart", "data-points")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(points > 0);

    // A cell killed: the dashboard says so within seconds.
    cluster.cell_mut("cell-b").unwrap().guard.kill();
    browser
        .wait_for_text("tr[data-cell=\"cell-b\"] .metrics", FOLLOWS, |t| {
            t == "unreachable" || t == "not running"
        })
        .await
        .unwrap();
    assert_eq!(
        browser
            .text("tr[data-cell=\"cell-a\"] .metrics")
            .await
            .unwrap(),
        "ok"
    );

    // A provider-region drained by an operator: shown as drained.
    cluster
        .admin(
            reqwest::Method::POST,
            "/admin/providers/azure-westeurope/drain",
            None,
        )
        .await
        .unwrap();
    browser
        .wait_for_text(
            "tr[data-provider=\"azure-westeurope\"] .state",
            FOLLOWS,
            |t| t == "drained",
        )
        .await
        .unwrap();
    let screenshot = artifact("dashboard.png");
    browser.screenshot(&screenshot).await.unwrap();
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    eprintln!("dashboard screenshot: {}", screenshot.display());

    // Signing out ends the session.
    browser.click("header button[type=submit]").await.unwrap();
    eventually(10, "back at the login form", || async {
        browser.url().await.unwrap().ends_with("/dashboard/login")
    })
    .await;
}
