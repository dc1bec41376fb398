//! What a Cell renders to: the cell config, the objects, their hardening,
//! and the errors of a spec that cannot be rendered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use kube::api::ObjectMeta;
use serde_json::json;

use crate::config::CellDefaults;
use crate::crd::{Cell, CellSpec};
use crate::render::{CONFIG_DIGEST, render};

pub fn defaults() -> CellDefaults {
    CellDefaults {
        image: "ghcr.io/cellnet/cellnet:0.1.0".into(),
        port: 8080,
        cluster_domain: "cluster.local".into(),
        storage_class: Some("fast".into()),
        etcd: serde_yaml::from_str("{endpoints: ['http://etcd:2379'], prefix: /cellnet/}").unwrap(),
        redis: serde_yaml::from_str("{url: 'redis://redis:6379'}").unwrap(),
        prices: None,
    }
}

fn cell(spec: serde_json::Value) -> Cell {
    let spec: CellSpec = serde_json::from_value(spec).unwrap();
    Cell {
        metadata: ObjectMeta {
            name: Some("cell-c".into()),
            namespace: Some("cellnet".into()),
            uid: Some("4b1f".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

fn spec() -> serde_json::Value {
    json!({
        "region": "eu-west",
        "template": "standard",
        "overrides": {"cache": {"threshold": 0.9}, "workers": 3},
        "providerRegions": [
            {"name": "azure-westeurope", "kind": "azure_openai", "region": "westeurope",
             "endpoint": "https://westeurope.openai.azure.com", "deployment": "gpt-4o-mini",
             "credentials": {"name": "azure-openai", "key": "westeurope"}},
            {"name": "vertex-us-central1", "kind": "vertex_ai", "region": "us-central1",
             "project": "acme", "location": "us-central1", "model": "gemini-2.0-flash",
             "credentials": {"name": "vertex-sa", "key": "key.json"}}
        ]
    })
}

#[test]
fn the_config_is_the_template_by_name_with_the_overrides_and_the_operators_wiring() {
    let w = render(&cell(spec()), &defaults()).unwrap();
    let text = &w.config_map.data.as_ref().unwrap()["cell.yaml"];
    let config: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    assert_eq!(config["id"], "cell-c");
    assert_eq!(config["region"], "eu-west");
    assert_eq!(config["template"], "standard");
    assert_eq!(config["listen"], "0.0.0.0:8080");
    assert_eq!(
        config["advertise"],
        "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080"
    );
    assert_eq!(
        w.endpoint,
        "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080"
    );
    assert_eq!(config["etcd"]["endpoints"][0], "http://etcd:2379");
    assert_eq!(config["redis"]["url"], "redis://redis:6379");
    assert_eq!(config["cache"]["threshold"], 0.9);
    assert_eq!(config["workers"], 3);
    let providers = config["providers"].as_sequence().unwrap();
    assert_eq!(providers[0]["kind"], "azure_openai");
    assert_eq!(providers[0]["api_key_env"], "CELLNET_PROVIDER_0_KEY");
    assert_eq!(providers[1]["kind"], "vertex_ai");
    assert_eq!(
        providers[1]["auth"]["service_account_key_file"],
        "/var/run/secrets/cellnet/provider-1/key.json"
    );
    assert!(
        !text.contains("westeurope\"\n  key"),
        "no secret value is in the config"
    );
}

#[test]
fn the_objects_are_owned_hardened_and_sized_by_the_template() {
    let w = render(&cell(spec()), &defaults()).unwrap();
    for meta in [
        &w.config_map.metadata,
        &w.service.metadata,
        &w.stateful_set.metadata,
    ] {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Cell", "cell-c", "4b1f")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("cellnet"));
        assert_eq!(
            meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "cell-operator"
        );
    }
    let svc = w.service.spec.as_ref().unwrap();
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"), "headless");
    let sts = w.stateful_set.spec.as_ref().unwrap();
    assert_eq!(sts.replicas, Some(1));
    assert_eq!(sts.service_name.as_deref(), Some("cell-c"));
    let claim = &sts.volume_claim_templates.as_ref().unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "50Gi"
    );
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    let pod = sts.template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(pod.termination_grace_period_seconds.unwrap() >= 40);
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let resources = c.resources.as_ref().unwrap();
    assert_eq!(resources.requests.as_ref().unwrap()["cpu"].0, "2");
    assert_eq!(resources.limits.as_ref().unwrap()["memory"].0, "8Gi");
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    let env = &c.env.as_ref().unwrap()[0];
    let secret = env
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (env.name.as_str(), secret.name.as_str(), secret.key.as_str()),
        ("CELLNET_PROVIDER_0_KEY", "azure-openai", "westeurope")
    );
    assert!(env.value.is_none(), "keys by reference only");
    assert!(pod.volumes.as_ref().unwrap().iter().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("vertex-sa"))
    }));
}

#[test]
fn a_template_change_changes_the_pod_template_so_the_pod_rolls() {
    let standard = render(&cell(spec()), &defaults()).unwrap();
    let mut small_spec = spec();
    small_spec["template"] = json!("small");
    let small = render(&cell(small_spec), &defaults()).unwrap();
    let digest = |w: &crate::render::Workload| {
        w.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_DIGEST]
            .clone()
    };
    assert_eq!(digest(&standard), standard.config_digest);
    assert_ne!(digest(&standard), digest(&small));
    let cpu = |w: &crate::render::Workload| {
        w.stateful_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["cpu"]
            .0
            .clone()
    };
    assert_ne!(cpu(&standard), cpu(&small));
    // Rendering is deterministic: the same Cell, the same digest.
    assert_eq!(
        digest(&render(&cell(spec()), &defaults()).unwrap()),
        digest(&standard)
    );
}

#[test]
fn every_mistake_in_a_spec_is_named_by_its_field() {
    let mut bad = spec();
    bad["template"] = json!("huge");
    bad["overrides"] = json!({"etcd": {"endpoints": []}});
    bad["storage"] = json!("lots");
    bad["providerRegions"][0]
        .as_object_mut()
        .unwrap()
        .remove("deployment");
    bad["providerRegions"][1]
        .as_object_mut()
        .unwrap()
        .remove("credentials");
    let err = render(&cell(bad), &defaults()).unwrap_err();
    let text = err.to_string();
    for needle in [
        "spec.template",
        "\"huge\" is not a cell template",
        "spec.overrides.etcd: not a section a Cell may override",
        "spec.providerRegions[0].deployment: required",
        "spec.providerRegions[1].credentials: Vertex AI needs",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    let mut path = spec();
    path["template"] = json!("/etc/passwd");
    assert!(
        render(&cell(path), &defaults())
            .unwrap_err()
            .to_string()
            .contains("must name a shipped template")
    );
}
