//! The cell operator as a process: the whole kube `Controller` run against
//! the in-memory API server (its watches re-create what is deleted and
//! bring pod readiness into the status), the cell config it renders
//! accepted by the cell binary, and the operator binary's own errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use common::config::Secret;
use e2e::cluster::ADMIN_TOKEN;
use e2e::fake_kube::FakeKube;
use e2e::operator_fixture::*;
use e2e::{Cluster, ClusterOptions, eventually};
use futures::StreamExt;
use http::Method;
use operator::admin::AdminClient;
use operator::controller::{Context, Recheck, error_policy, reconcile};
use operator::crd::Cell;
use serde_json::json;

#[test]
fn the_rendered_config_is_one_the_cell_accepts() {
    let mut resource = cell_resource("large");
    resource["metadata"]["uid"] = json!("u1");
    resource["spec"]["overrides"] =
        json!({"vector": {"hnsw_ef": 64}, "workers": 3, "limits": {"max_concurrent_requests": 64}});
    resource["spec"]["providerRegions"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "local-vllm", "kind": "openai_compatible", "region": "onprem",
            "endpoint": "http://vllm:8000/v1", "model": "llama-3.1-8b"
        }));
    let cell: Cell = serde_json::from_value(resource).unwrap();
    let workload = operator::render::render(&cell, &defaults()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cell.yaml");
    std::fs::write(
        &path,
        &workload.config_map.data.as_ref().unwrap()["cell.yaml"],
    )
    .unwrap();
    let out = std::process::Command::new(e2e::process::binary("cell").unwrap())
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env("CELLNET_PROVIDER_0_KEY", "k")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok: cell cell-c in eu-west"));
    // Without the key the Secret provides, the cell says which is missing.
    let out = std::process::Command::new(e2e::process::binary("cell").unwrap())
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .env_remove("CELLNET_PROVIDER_0_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CELLNET_PROVIDER_0_KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_controller_puts_back_what_is_deleted_and_follows_the_pod() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let fake = FakeKube::new();
    fake.insert(CELL, cell_resource("standard"));
    let mut registry = prometheus_client::registry::Registry::default();
    let mut ctx = Context::new(
        fake.client(NS),
        AdminClient::new(&cluster.control_plane.url, Secret::new(ADMIN_TOKEN)),
        defaults(),
        operator::metrics::Metrics::register(&mut registry),
    );
    // No timed recheck here: only watch events make the controller act.
    ctx.recheck = Recheck {
        settled: Duration::from_secs(3600),
        busy: Duration::from_secs(3600),
    };
    let controller = tokio::spawn(
        operator::run::controller(fake.client(NS), NS)
            .run(reconcile, error_policy, Arc::new(ctx))
            .for_each(|_| async {}),
    );
    eventually(30, "the controller applies the StatefulSet", || async {
        fake.get(STS).is_some()
    })
    .await;
    let requests = fake.requests();
    for watched in [
        "/apis/cellnet.io/v1/namespaces/cellnet/cells",
        "/apis/apps/v1/namespaces/cellnet/statefulsets",
        "/api/v1/namespaces/cellnet/services",
        "/api/v1/namespaces/cellnet/configmaps",
        "/api/v1/namespaces/cellnet/pods",
    ] {
        assert!(
            requests.iter().any(|r| r.method == Method::GET
                && r.path == watched
                && r.query.get("watch").is_some_and(|w| w == "true")),
            "no watch of {watched}"
        );
    }
    let first = fake.get(STS).unwrap()["metadata"]["uid"].clone();
    fake.remove(STS);
    eventually(30, "the deleted StatefulSet comes back", || async {
        fake.get(STS).is_some_and(|s| s["metadata"]["uid"] != first)
    })
    .await;

    let ready_reason = || {
        let cell = fake.get(CELL).unwrap();
        cell["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    eventually(30, "the status says the pod is missing", || async {
        ready_reason() == "PodMissing"
    })
    .await;
    // The pod turns up: its watch brings its readiness into the status (the
    // cell process is not running, so the control plane has no lease).
    fake.insert(
        POD,
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "cell-c-0", "namespace": NS,
                "labels": {"app.kubernetes.io/instance": "cell-c",
                    "app.kubernetes.io/managed-by": "cell-operator"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    eventually(30, "the pod's readiness reaches the status", || async {
        ready_reason() == "NotAlive"
    })
    .await;
    controller.abort();
}

#[test]
fn the_operator_binary_names_every_config_mistake_and_says_when_no_cluster_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: nowhere\nnamespace: ''\nadmin: {url: ftp://x, token_env: NO_SUCH_TOKEN}\n\
         cells: {image: '', etcd: 3, redis: {url: 'redis://redis:6379'}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(e2e::process::binary("cell-operator").unwrap())
        .arg("--config")
        .arg(&bad)
        .env_remove("NO_SUCH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let said = String::from_utf8_lossy(&out.stderr);
    for field in [
        "listen",
        "namespace",
        "admin.url",
        "admin.token_env",
        "cells.image",
        "cells.etcd",
    ] {
        assert!(
            said.contains(&format!("{field} ")) || said.contains(&format!("{field}:")),
            "{field}: {said}"
        );
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../k8s/base/config/operator.yaml"),
        )
        .unwrap()
        .replace("0.0.0.0:8080", "127.0.0.1:0"),
    )
    .unwrap();
    let out = std::process::Command::new(e2e::process::binary("cell-operator").unwrap())
        .arg("--config")
        .arg(&good)
        .env("CELLNET_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("cannot reach the Kubernetes API"), "{said}");
}
