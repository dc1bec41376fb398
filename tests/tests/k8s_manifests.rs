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
