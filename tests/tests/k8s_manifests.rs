//! The Kubernetes manifests in `k8s/`: every overlay renders with
//! `kubectl kustomize`, passes the Kubernetes schemas offline
//! (`kubernetes-validate`, installed by scripts/setup.sh), and every pod is
//! locked down: non-root, read-only root filesystem, no capabilities, no
//! privilege escalation, resources bounded, probed, secrets by reference.
//! No API server runs on these machines, so nothing here is applied.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const OVERLAYS: [&str; 3] = ["dev", "eu-west", "us-east"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The rendered objects of an overlay, and the rendered YAML; None when
/// kubectl is not installed.
fn render(overlay: &str) -> Option<(Vec<Value>, String)> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("k8s/overlays").join(overlay))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: kubectl cannot run ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let objects = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .collect();
    Some((objects, text))
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Every field of a pod the hardening rules name, checked for one workload.
fn check_pod(workload: &Value) {
    let name = workload["metadata"]["name"].as_str().unwrap();
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .is_some_and(|s| s >= 30),
        "{name}: a termination grace period that fits the drain"
    );
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "{name}: resources.{kind}.{resource}"
                );
            }
        }
        assert!(c["livenessProbe"].is_object(), "{name}: liveness probe");
        assert!(c["readinessProbe"].is_object(), "{name}: readiness probe");
        if c["image"].as_str().unwrap().contains("cellnet") {
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        }
        for env in c["env"].as_array().into_iter().flatten() {
            assert!(
                env["value"].is_null(),
                "{name}: {} is set inline; secrets come by reference",
                env["name"]
            );
        }
    }
}

#[test]
fn every_overlay_renders_and_every_pod_is_locked_down() {
    for overlay in OVERLAYS {
        let Some((objects, _)) = render(overlay) else {
            return;
        };
        let workloads: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "StatefulSet")
            .collect();
        assert!(workloads.len() >= 2, "{overlay}: {workloads:?}");
        for w in &workloads {
            check_pod(w);
        }
        let cp = named(&objects, "Deployment", "control-plane").unwrap();
        assert!(
            cp["spec"]["replicas"].as_u64().unwrap() >= 2,
            "leader election needs 2+"
        );
        let token = &cp["spec"]["template"]["spec"]["containers"][0]["env"][0];
        assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "cellnet-admin");
        for kind in [
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ] {
            assert!(
                named(&objects, kind, "router").is_some(),
                "{overlay}: router {kind}"
            );
        }
        let hpa = named(&objects, "HorizontalPodAutoscaler", "router").unwrap();
        assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
        // etcd and Redis: external endpoints in a region, pods of their own in dev.
        for backing in ["etcd", "redis"] {
            let svc = named(&objects, "Service", backing).unwrap();
            let in_cluster = named(&objects, "StatefulSet", backing).is_some();
            assert_eq!(in_cluster, overlay == "dev", "{overlay}: {backing}");
            assert_eq!(
                svc["spec"]["type"] == "ExternalName",
                !in_cluster,
                "{overlay}: {svc}"
            );
        }
    }
}

#[test]
fn rendered_objects_pass_the_kubernetes_schemas() {
    let home = std::env::var("HOME").unwrap_or_default();
    let validate = Path::new(&home).join(".cache/cellnet/venv/bin/kubernetes-validate");
    if !validate.exists() {
        println!("skipped: kubernetes-validate is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let Some((_, text)) = render(overlay) else {
            return;
        };
        let file = dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{overlay}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn venv_tool(name: &str) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let tool = Path::new(&home).join(".cache/cellnet/venv/bin").join(name);
    tool.exists().then_some(tool)
}

/// The operator's defaults from the base's config, as the operator would
/// load them.
fn operator_defaults() -> operator::config::CellDefaults {
    let text = std::fs::read_to_string(repo().join("k8s/base/config/operator.yaml")).unwrap();
    let raw: Value = serde_yaml::from_str(&text).unwrap();
    let cells = &raw["cells"];
    operator::config::CellDefaults {
        image: cells["image"].as_str().unwrap().to_owned(),
        port: cells["port"].as_u64().unwrap() as u16,
        cluster_domain: "cluster.local".into(),
        storage_class: None,
        etcd: serde_yaml::to_value(&cells["etcd"]).unwrap(),
        redis: serde_yaml::to_value(&cells["redis"]).unwrap(),
        prices: None,
    }
}

/// What the operator would apply for each Cell of the dev overlay.
fn rendered_cells(objects: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for cell in objects.iter().filter(|o| o["kind"] == "Cell") {
        let mut cell = cell.clone();
        cell["metadata"]["uid"] = serde_json::json!("0b5e7d1c");
        let cell: operator::crd::Cell = serde_json::from_value(cell).unwrap();
        let w = operator::render::render(&cell, &operator_defaults()).unwrap();
        out.push(serde_json::to_value(&w.config_map).unwrap());
        out.push(serde_json::to_value(&w.service).unwrap());
        out.push(serde_json::to_value(&w.stateful_set).unwrap());
    }
    out
}

#[test]
fn the_operator_has_exactly_the_access_it_uses() {
    let Some((objects, _)) = render("dev") else {
        return;
    };
    let op = named(&objects, "Deployment", "cell-operator").unwrap();
    check_pod(op);
    assert_eq!(op["spec"]["replicas"], 1);
    assert_eq!(op["spec"]["strategy"]["type"], "Recreate");
    let pod = &op["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "cell-operator");
    let token = &pod["containers"][0]["env"][0];
    assert_eq!(token["valueFrom"]["secretKeyRef"]["name"], "cellnet-admin");
    assert!(named(&objects, "ServiceAccount", "cell-operator").is_some());
    assert!(named(&objects, "CustomResourceDefinition", "cells.cellnet.io").is_some());
    let role = named(&objects, "Role", "cell-operator").unwrap();
    let mut granted = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                granted.push(format!(
                    "{}/{}",
                    resource.as_str().unwrap(),
                    verb.as_str().unwrap()
                ));
            }
        }
    }
    assert!(!granted.iter().any(|g| g.contains('*')), "{granted:?}");
    for needed in [
        "cells/watch",
        "cells/patch",
        "cells/status/patch",
        "cells/finalizers/update",
        "statefulsets/patch",
        "statefulsets/create",
        "services/patch",
        "configmaps/patch",
        "pods/get",
        "pods/watch",
        "events/create",
    ] {
        assert!(
            granted.contains(&needed.to_owned()),
            "{needed} missing from {granted:?}"
        );
    }
    for never in [
        "pods/delete",
        "secrets/get",
        "secrets/list",
        "statefulsets/delete",
        "cells/delete",
    ] {
        assert!(!granted.contains(&never.to_owned()), "{never} is granted");
    }
    let cluster_role = named(&objects, "ClusterRole", "cellnet-cell-operator").unwrap();
    assert_eq!(
        cluster_role["rules"],
        serde_json::json!([{"apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["cells.cellnet.io"], "verbs": ["get"]}])
    );
    // The pods the operator makes are locked down like the rest.
    let cells = rendered_cells(&objects);
    assert_eq!(cells.len(), 6, "two Cells in dev");
    for sts in cells.iter().filter(|o| o["kind"] == "StatefulSet") {
        check_pod(sts);
    }
}

#[test]
fn cells_pass_the_crds_schema_and_what_the_operator_renders_passes_kubernetes() {
    let (Some(validate), Some(python)) = (venv_tool("kubernetes-validate"), venv_tool("python"))
    else {
        println!("skipped: kubernetes-validate is not installed (scripts/setup.sh installs it)");
        return;
    };
    let Some((objects, text)) = render("dev") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("dev.yaml");
    std::fs::write(&manifests, text).unwrap();
    let crd = repo().join("k8s/base/cell-crd.yaml");
    let check = |mut command: Command| {
        let out = command.output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        said
    };
    let mut cells = Command::new(&python);
    cells
        .arg(repo().join("scripts/validate-custom-resources.py"))
        .arg(&crd)
        .arg(&manifests);
    assert!(check(cells).contains("2 Cell objects checked, 0 problems"));

    // A mistake the API server would reject, or silently drop, is caught.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: cellnet.io/v1\nkind: Cell\nmetadata: {name: bad}\n\
         spec: {region: eu-west, storge: 5Gi, providerRegions: [{name: a, kind: azure, region: r}]}\n",
    )
    .unwrap();
    let out = Command::new(&python)
        .arg(repo().join("scripts/validate-custom-resources.py"))
        .arg(&crd)
        .arg(&bad)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains(".spec.storge: not in the schema"), "{said}");
    assert!(said.contains(".spec.providerRegions[0].kind"), "{said}");

    let rendered = dir.path().join("rendered.yaml");
    let docs: Vec<String> = std::iter::once(std::fs::read_to_string(&crd).unwrap())
        .chain(
            rendered_cells(&objects)
                .iter()
                .map(|o| serde_yaml::to_string(o).unwrap()),
        )
        .collect();
    std::fs::write(&rendered, docs.join("---\n")).unwrap();
    let mut objects = Command::new(&validate);
    objects.arg("--strict").arg(&rendered);
    check(objects);
}

/// Checks the scanner's findings may skip, each for a reason that holds for
/// this project; any other finding fails the test.
const CHECKOV_SKIPPED: [(&str, &str); 7] = [
    (
        "CKV_K8S_15",
        "images are pinned by version tag; IfNotPresent is right for them",
    ),
    (
        "CKV_K8S_43",
        "the image is built from this repository; an overlay's `images:` pins a digest once pushed",
    ),
    (
        "CKV_K8S_35",
        "cellnet reads its tokens and provider keys from environment variables, set from Secrets by reference",
    ),
    (
        "CKV2_K8S_6",
        "no NetworkPolicies yet (noted in docs/architecture.md)",
    ),
    (
        "CKV_K8S_116",
        "dev's etcd serves plain HTTP inside the cluster; TLS to etcd is configured per region",
    ),
    ("CKV_K8S_117", "as CKV_K8S_116"),
    ("CKV_K8S_119", "dev's etcd is a single member: no peers"),
];

#[test]
fn a_pod_security_scan_of_every_overlay_and_every_rendered_cell_finds_nothing() {
    let home = std::env::var("HOME").unwrap_or_default();
    let checkov = Path::new(&home).join(".cache/cellnet/checkov/bin/checkov");
    if !checkov.exists() {
        println!("skipped: checkov is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for overlay in OVERLAYS {
        let Some((objects, text)) = render(overlay) else {
            return;
        };
        let file = dir.path().join(format!("{overlay}.yaml"));
        let cells: Vec<String> = rendered_cells(&objects)
            .iter()
            .map(|o| serde_yaml::to_string(o).unwrap())
            .collect();
        std::fs::write(
            &file,
            [text]
                .into_iter()
                .chain(cells)
                .collect::<Vec<_>>()
                .join("---\n"),
        )
        .unwrap();
        files.push(file);
    }
    let skipped: Vec<&str> = CHECKOV_SKIPPED.iter().map(|(id, _)| *id).collect();
    for file in files {
        let out = Command::new(&checkov)
            .args([
                "--framework",
                "kubernetes",
                "--output",
                "json",
                "--compact",
                "--quiet",
            ])
            .args(["--skip-check", &skipped.join(",")])
            .arg("--file")
            .arg(&file)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let failed: Vec<String> = report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{} {} on {}", c["check_id"], c["check_name"], c["resource"]))
            .collect();
        assert!(failed.is_empty(), "{}: {failed:#?}", file.display());
        assert!(
            report["summary"]["passed"].as_u64().unwrap_or(0) > 100,
            "{}: the scan ran its checks: {}",
            file.display(),
            report["summary"]
        );
    }
}
