//! The cellnet Terraform provider under the real `terraform` binary, against
//! a control plane the harness starts: init, plan, apply, plan (no
//! changes), drift made with cellctl, import by id of a tenant, a cell and
//! a provider region, an admin API error as a diagnostic on its attribute,
//! and destroy, with the records in etcd checked at each step. Destroying
//! the cell drains it first; destroying a tenant deletes its documents from
//! its cells.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::cluster::ADMIN_TOKEN;
use e2e::fleet::{ask, lifecycle, options, tenants};
use e2e::process::{binary, free_port};
use e2e::terraform::{SOURCE, VERSION, Workdir, available, describe};
use e2e::{Cluster, eventually};
use serde_json::{Value, json};

const KEYS_PREFIX: &str = "/cellnet/";

/// The record at `key` in etcd, parsed; `None` when absent.
async fn record(cluster: &Cluster, key: &str) -> Option<Value> {
    let mut client = etcd_client::Client::connect([cluster.etcd.client_url.as_str()], None)
        .await
        .unwrap();
    let resp = client.get(key, None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| serde_json::from_slice(kv.value()).unwrap())
}

fn keys() -> control_plane::model::Keys {
    control_plane::model::Keys::new(KEYS_PREFIX)
}

fn config(cell_d: &str, extra: &str) -> String {
    format!(
        r#"terraform {{
  required_providers {{
    cellnet = {{
      source  = "{SOURCE}"
      version = "{VERSION}"
    }}
  }}
}}

variable "admin_url" {{
  type = string
}}

provider "cellnet" {{
  endpoint      = var.admin_url
  drain_timeout = "3m"
}}

resource "cellnet_tenant" "acme" {{
  name            = "tf-acme"
  plan            = "standard"
  cache_threshold = 0.85
  limits = {{
    requests_per_second = 5
    burst               = 10
  }}
}}

resource "cellnet_tenant" "globex" {{
  name = "tf-globex"
  plan = "free"
  pin  = ["cell-a", "cell-b"]
}}

resource "cellnet_cell" "d" {{
  name     = "cell-d"
  region   = "us-east"
  endpoint = "{cell_d}"
}}

resource "cellnet_provider_region" "westeurope" {{
  name    = "azure-westeurope"
  drained = true
}}

data "cellnet_cells" "all" {{
  depends_on = [cellnet_cell.d]
}}

data "cellnet_placement" "acme" {{
  tenant     = cellnet_tenant.acme.name
  depends_on = [cellnet_tenant.acme]
}}

output "globex_key" {{
  value     = cellnet_tenant.globex.api_key
  sensitive = true
}}

output "cells" {{
  value = [for c in data.cellnet_cells.all.cells : c.id]
}}

output "placed" {{
  value = [for t in data.cellnet_placement.acme.tenants : t.tenant]
}}
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_applies_plans_no_changes_sees_drift_imports_and_destroys() {
    if let Err(why) = available() {
        println!("skipped: {why}");
        return;
    }
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
    // Tenants of the system's own, whose documents must outlive the cell
    // Terraform adds and then destroys.
    let own = tenants(&cluster, 6).await;
    let keys = keys();
    let port = free_port().unwrap();
    let cell_d = format!("http://127.0.0.1:{port}");
    let mut tf = Workdir::new().unwrap();
    tf.env("ADMIN_TOKEN", ADMIN_TOKEN);
    tf.env("TF_VAR_admin_url", &cluster.control_plane.url);
    tf.write(&config(&cell_d, "")).unwrap();

    // init installs the provider from the mirror and locks it.
    let out = tf.expect(0, &["init", "-no-color"]).unwrap();
    assert!(out.contains("cellnet/cellnet"), "{out}");
    let lock = std::fs::read_to_string(tf.config().join(".terraform.lock.hcl")).unwrap();
    assert!(lock.contains(SOURCE) && lock.contains(VERSION), "{lock}");
    tf.expect(0, &["validate", "-no-color"]).unwrap();

    // plan: everything to create, nothing written yet.
    let out = tf
        .expect(2, &["plan", "-detailed-exitcode", "-no-color"])
        .unwrap();
    assert!(out.contains("4 to add, 0 to change, 0 to destroy"), "{out}");
    assert!(record(&cluster, &keys.tenant("tf-acme")).await.is_none());

    // apply writes the records.
    tf.expect(0, &["apply", "-auto-approve", "-no-color"])
        .unwrap();
    let acme = record(&cluster, &keys.tenant("tf-acme")).await.unwrap();
    assert_eq!(acme["plan"], "standard");
    assert_eq!(acme["cache_threshold"].as_f64().unwrap() as f32, 0.85);
    assert_eq!(acme["limits"]["burst"], 10);
    let globex = record(&cluster, &keys.tenant("tf-globex")).await.unwrap();
    assert_eq!(globex["plan"], "free");
    assert_eq!(globex["pin"], json!(["cell-a", "cell-b"]));
    let spec = record(&cluster, &keys.cell_spec("cell-d")).await.unwrap();
    assert_eq!(spec["lifecycle"], "joining");
    assert_eq!(spec["endpoint"], cell_d);
    assert!(
        record(&cluster, &keys.provider_drain("azure-westeurope"))
            .await
            .is_some()
    );
    // The API key in the state works at the router.
    let globex_key = tf.stdout(&["output", "-raw", "globex_key"]).unwrap();
    assert!(globex_key.starts_with("cn_"), "{globex_key}");
    // The data sources read what the apply made.
    let cells: Value =
        serde_json::from_str(&tf.stdout(&["output", "-json", "cells"]).unwrap()).unwrap();
    assert_eq!(cells, json!(["cell-a", "cell-b", "cell-c", "cell-d"]));
    let placed: Value =
        serde_json::from_str(&tf.stdout(&["output", "-json", "placed"]).unwrap()).unwrap();
    assert_eq!(placed, json!(["tf-acme"]));
    let http = cluster.http.clone();
    let router = cluster.router.url.clone();
    let ingest = |key: String| {
        let (http, router) = (http.clone(), router.clone());
        async move {
            http.post(format!("{router}/v1/documents"))
                .bearer_auth(key)
                .json(&json!({"documents": [{"id": "globex-1", "text": "Globex keeps its ledgers in the vault."}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    eventually(30, "the router knows tf-globex's key", || async {
        ingest(globex_key.clone()).await == 200
    })
    .await;

    // The cell Terraform registered starts, joins and takes tenants.
    cluster
        .add_cell_with(
            "cell-d",
            "us-east",
            &json!({"listen": format!("127.0.0.1:{port}"), "advertise": cell_d}),
        )
        .unwrap();
    cluster.wait_for_cells(4).await.unwrap();
    eventually(120, "cell-d becomes active with tenants", || async {
        let c = e2e::fleet::cell_record(&cluster, "cell-d").await;
        c["spec"]["lifecycle"] == "active" && c["tenants"].as_u64().unwrap_or(0) > 0
    })
    .await;
    e2e::fleet::settled(&cluster, 60).await;

    // plan again: no changes.
    let out = tf
        .expect(0, &["plan", "-detailed-exitcode", "-no-color"])
        .unwrap();
    assert!(out.contains("No changes."), "{out}");

    // Drift: a change made with cellctl shows in the next plan.
    let cellctl = std::process::Command::new(binary("cellctl").unwrap())
        .args([
            "tenants",
            "set",
            "tf-acme",
            "--plan",
            "free",
            "--cache-threshold",
            "0.5",
        ])
        .env("ADMIN_URL", &cluster.control_plane.url)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(cellctl.status.success(), "{}", describe(&cellctl));
    let out = tf
        .expect(2, &["plan", "-detailed-exitcode", "-no-color"])
        .unwrap();
    assert!(
        out.contains(r#""free" -> "standard""#)
            && out.contains("0.5 -> 0.85")
            && out.contains("0 to add, 1 to change, 0 to destroy"),
        "{out}"
    );
    tf.expect(0, &["apply", "-auto-approve", "-no-color"])
        .unwrap();
    let acme = record(&cluster, &keys.tenant("tf-acme")).await.unwrap();
    assert_eq!(acme["plan"], "standard");
    assert_eq!(acme["cache_threshold"].as_f64().unwrap() as f32, 0.85);

    // Import by id: a tenant made with cellctl comes under Terraform.
    cluster
        .create_tenant_on_plan("tf-imported", "enterprise")
        .await
        .unwrap();
    let imported = r#"
resource "cellnet_tenant" "imported" {
  name = "tf-imported"
  plan = "enterprise"
}
"#;
    tf.write(&config(&cell_d, imported)).unwrap();
    let out = tf
        .expect(
            0,
            &[
                "import",
                "-no-color",
                "cellnet_tenant.imported",
                "tf-imported",
            ],
        )
        .unwrap();
    assert!(out.contains("Import successful"), "{out}");
    let out = tf
        .expect(0, &["plan", "-detailed-exitcode", "-no-color"])
        .unwrap();
    assert!(out.contains("No changes."), "{out}");

    // A cell and a provider region that already run are imported by id too,
    // then left to the system again (`state rm`) so that destroy keeps them.
    let cell_c = record(&cluster, &keys.cell_spec("cell-c")).await.unwrap();
    let adopted = format!(
        r#"{imported}
resource "cellnet_cell" "c" {{
  name     = "cell-c"
  region   = "eu-west"
  endpoint = "{}"
}}

resource "cellnet_provider_region" "eastus" {{
  name = "azure-eastus"
}}
"#,
        cell_c["endpoint"].as_str().unwrap()
    );
    tf.write(&config(&cell_d, &adopted)).unwrap();
    for (address, id) in [
        ("cellnet_cell.c", "cell-c"),
        ("cellnet_provider_region.eastus", "azure-eastus"),
    ] {
        let out = tf.expect(0, &["import", "-no-color", address, id]).unwrap();
        assert!(out.contains("Import successful"), "{address}: {out}");
    }
    let out = tf
        .expect(0, &["plan", "-detailed-exitcode", "-no-color"])
        .unwrap();
    assert!(out.contains("No changes."), "{out}");
    let shown: Value = serde_json::from_str(&tf.stdout(&["show", "-json"]).unwrap()).unwrap();
    let resources = shown["values"]["root_module"]["resources"]
        .as_array()
        .unwrap();
    let of = |address: &str| {
        resources
            .iter()
            .find(|r| r["address"] == address)
            .unwrap_or_else(|| panic!("{address} in {shown}"))["values"]
            .clone()
    };
    let c = of("cellnet_cell.c");
    assert_eq!(c["lifecycle"], "active");
    assert_eq!(c["state"], "active");
    assert_eq!(c["alive"], true);
    assert_eq!(of("cellnet_provider_region.eastus")["drained"], false);
    tf.expect(
        0,
        &[
            "state",
            "rm",
            "-no-color",
            "cellnet_cell.c",
            "cellnet_provider_region.eastus",
        ],
    )
    .unwrap();
    tf.write(&config(&cell_d, imported)).unwrap();

    // An admin API error reaches the user as a diagnostic on its attribute.
    let bad = format!(
        "{imported}\nresource \"cellnet_tenant\" \"bad\" {{\n  name = \"tf-bad\"\n  plan = \"gold\"\n}}\n"
    );
    tf.write(&config(&cell_d, &bad)).unwrap();
    let out = tf
        .expect(1, &["apply", "-auto-approve", "-no-color"])
        .unwrap();
    assert!(
        out.contains("Cannot create the tenant")
            && out.contains(r#"unknown plan "gold""#)
            && out.contains(r#"plan = "gold""#),
        "the diagnostic names the plan attribute:\n{out}"
    );
    assert!(record(&cluster, &keys.tenant("tf-bad")).await.is_none());
    tf.write(&config(&cell_d, imported)).unwrap();

    // destroy: the cell is drained before it goes, every tenant of the
    // system keeps its documents, and the tenants' data leaves their cells.
    tf.expect(0, &["destroy", "-auto-approve", "-no-color"])
        .unwrap();
    for t in ["tf-acme", "tf-globex", "tf-imported"] {
        assert!(record(&cluster, &keys.tenant(t)).await.is_none(), "{t}");
    }
    assert_eq!(lifecycle(&cluster, "cell-c").await, "active");
    let spec = record(&cluster, &keys.cell_spec("cell-d")).await.unwrap();
    assert_eq!(spec["lifecycle"], "removed");
    assert!(
        record(&cluster, &keys.provider_drain("azure-westeurope"))
            .await
            .is_none()
    );
    for (i, key) in own.iter().enumerate() {
        let tenant = e2e::fleet::tenant_id(i);
        let placement = record(&cluster, &keys.placement(&tenant)).await.unwrap();
        assert!(
            !placement["members"]
                .as_array()
                .unwrap()
                .contains(&json!("cell-d")),
            "{tenant} still on cell-d: {placement}"
        );
        assert!(cluster.purge_cache(key).await.unwrap().is_success());
        let (status, cited, cell) = ask(&cluster.http, &cluster.router.url, key, i).await;
        assert_eq!(status, 200, "{tenant}");
        assert!(
            cited.contains(&format!("fact-{i}")),
            "{tenant} by {cell}: {cited:?}"
        );
    }
    assert_eq!(lifecycle(&cluster, "cell-d").await, "removed");
    // The deleted tenant's key is refused, and its points leave its cells.
    eventually(30, "the router refuses tf-globex's key", || async {
        ingest(globex_key.clone()).await == 401
    })
    .await;
    eventually(60, "tf-globex's placement is forgotten", || async {
        record(&cluster, &keys.placement("tf-globex"))
            .await
            .is_none()
    })
    .await;
    // Once forgotten, the id may be taken again, by a tenant that finds
    // none of the deleted one's points on the cells that held them.
    cluster.create_tenant("tf-globex").await.unwrap();
    cluster
        .update_tenant("tf-globex", &json!({"pin": ["cell-a", "cell-b"]}))
        .await
        .unwrap();
    for cell in ["cell-a", "cell-b"] {
        eventually(30, "cells know the new tf-globex", || async {
            cluster.points_on(cell, "tf-globex").await.is_ok()
        })
        .await;
        assert_eq!(
            cluster.points_on(cell, "tf-globex").await.unwrap(),
            0,
            "{cell}"
        );
    }
    // Nothing left for Terraform.
    let out = tf.expect(0, &["state", "list"]).unwrap();
    assert!(!out.contains("cellnet_"), "{out}");
}
