//! A Cell's workload, rendered: the cell config (template plus overrides)
//! in a ConfigMap, a headless Service that gives the pod a stable name, and
//! a one-pod StatefulSet whose volume holds the vector shard. Pure
//! functions, so what is applied can be checked without a cluster.
//!
//! The pod template carries a digest of the config: a changed template or
//! override changes the pod template, and the StatefulSet rolls the pod.

use std::collections::BTreeMap;

use common::template::CellTemplate;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};

use crate::config::CellDefaults;
use crate::crd::{Cell, ProviderKind, ProviderRegion};

/// Pod-template annotation holding the config's SHA-256.
pub const CONFIG_DIGEST: &str = "cellnet.io/config-sha256";
/// The file the cell reads its config from.
const CONFIG_DIR: &str = "/etc/cellnet";
const DATA_DIR: &str = "/var/lib/cellnet";
const CREDENTIALS_DIR: &str = "/var/run/secrets/cellnet";
/// The cell answers what is in flight on SIGTERM (its request timeout is
/// 30 s) before it exits; the drain of its tenants happens before, through
/// the control plane.
const TERMINATION_GRACE_SECONDS: i64 = 45;
/// The non-root user of the image.
const UID: i64 = 10001;
/// Sections of the cell config a Cell may override; the rest (identity,
/// listen address, etcd, Redis, providers) the operator owns.
pub const OVERRIDABLE: [&str; 9] = [
    "vector",
    "cache",
    "limits",
    "embedding",
    "retrieval",
    "ingest",
    "workers",
    "hedging",
    "prices",
];

/// What is wrong with a Cell's spec, each with the field it is at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SpecErrors(pub Vec<String>);

/// Everything a Cell becomes.
#[derive(Debug, Clone)]
pub struct Workload {
    pub config_map: ConfigMap,
    pub service: Service,
    pub stateful_set: StatefulSet,
    /// The URL routers reach the cell at.
    pub endpoint: String,
    pub config_digest: String,
}

/// Labels every object of a cell carries; the first two select its pod.
pub fn labels(cell: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "cell".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cell.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "cell-operator".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "cellnet".to_owned()),
    ])
}

fn selector(cell: &str) -> BTreeMap<String, String> {
    labels(cell).into_iter().take(2).collect()
}

/// The name of the cell's one pod.
pub fn pod_name(cell: &str) -> String {
    format!("{cell}-0")
}

pub fn render(cell: &Cell, defaults: &CellDefaults) -> Result<Workload, SpecErrors> {
    let name = cell.name_any();
    let namespace = cell.namespace().unwrap_or_else(|| "default".to_owned());
    let mut problems = Vec::new();
    // Only shipped templates: a path would be read from the operator's disk.
    let template = if cell.spec.template.contains('/') || cell.spec.template.ends_with(".yaml") {
        problems.push(format!(
            "spec.template: {:?} must name a shipped template ({})",
            cell.spec.template,
            common::template::names().join(", ")
        ));
        None
    } else {
        CellTemplate::load(&cell.spec.template)
            .map_err(|e| problems.push(format!("spec.template: {e}")))
            .ok()
    };
    if cell.spec.region.trim().is_empty() {
        problems.push("spec.region: must not be empty".to_owned());
    }
    for key in cell.spec.overrides.keys() {
        if !OVERRIDABLE.contains(&key.as_str()) {
            problems.push(format!(
                "spec.overrides.{key}: not a section a Cell may override ({})",
                OVERRIDABLE.join(", ")
            ));
        }
    }
    if cell.spec.provider_regions.is_empty() {
        problems.push("spec.providerRegions: needs at least one provider region".to_owned());
    }
    let providers: Vec<Provider> = cell
        .spec
        .provider_regions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| provider(i, p).map_err(|e| problems.extend(e)).ok())
        .collect();
    let storage = cell
        .spec
        .storage
        .clone()
        .or_else(|| template.as_ref().map(|t| t.resources.disk.clone()))
        .unwrap_or_default();
    if common::template::parse_quantity(&storage).is_none() {
        problems.push(format!(
            "spec.storage: {storage:?} is not a Kubernetes quantity"
        ));
    }
    let (Some(template), true) = (template, problems.is_empty()) else {
        return Err(SpecErrors(problems));
    };

    let endpoint = format!(
        "http://{}.{name}.{namespace}.svc.{}:{}",
        pod_name(&name),
        defaults.cluster_domain,
        defaults.port
    );
    let config = cell_config(cell, defaults, &endpoint, &providers);
    let config_digest = hex::encode(Sha256::digest(config.as_bytes()));
    let owner = cell
        .controller_owner_ref(&())
        .into_iter()
        .collect::<Vec<_>>();
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&cell.name_any())),
        owner_references: Some(owner.clone()),
        ..ObjectMeta::default()
    };
    let config_map = ConfigMap {
        metadata: meta(&config_map_name(&name)),
        data: Some(BTreeMap::from([("cell.yaml".to_owned(), config)])),
        ..ConfigMap::default()
    };
    let service = Service {
        metadata: meta(&name),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector(&name)),
            // Routers reach a cell once it is alive in etcd, which it is
            // before its readiness settles; its name must resolve by then.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: i32::from(defaults.port),
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let image = cell
        .spec
        .image
        .clone()
        .unwrap_or_else(|| defaults.image.clone());
    let stateful_set = StatefulSet {
        metadata: meta(&name),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_DIGEST.to_owned(),
                        config_digest.clone(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(&name, &image, &template, defaults, &providers)),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".to_owned()),
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: defaults.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(storage))])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            // The shard's tenants were moved off before the Cell went, so
            // its volume goes with it.
            persistent_volume_claim_retention_policy: Some(
                k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    Ok(Workload {
        config_map,
        service,
        stateful_set,
        endpoint,
        config_digest,
    })
}

pub fn config_map_name(cell: &str) -> String {
    format!("{cell}-config")
}

/// One provider region as the cell config's entry, with where its
/// credential comes from.
struct Provider {
    entry: Mapping,
    env: Option<EnvVar>,
    volume: Option<(Volume, VolumeMount)>,
}

fn provider(i: usize, p: &ProviderRegion) -> Result<Provider, Vec<String>> {
    let at = |field: &str| format!("spec.providerRegions[{i}].{field}");
    let mut problems = Vec::new();
    let mut need = |field: &str, value: &Option<String>| -> String {
        match value {
            Some(v) if !v.is_empty() => v.clone(),
            _ => {
                problems.push(format!("{}: required for {:?}", at(field), p.kind));
                String::new()
            }
        }
    };
    let mut entry = Mapping::new();
    let mut put = |k: &str, v: String| {
        entry.insert(Value::from(k), Value::from(v));
    };
    let kind = match p.kind {
        ProviderKind::AzureOpenai => "azure_openai",
        ProviderKind::VertexAi => "vertex_ai",
        ProviderKind::OpenaiCompatible => "openai_compatible",
    };
    put("kind", kind.to_owned());
    put("name", p.name.clone());
    put("region", p.region.clone());
    let env_name = format!("CELLNET_PROVIDER_{i}_KEY");
    let mut env = None;
    let mut volume = None;
    match p.kind {
        ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible => {
            let url_field = if p.kind == ProviderKind::AzureOpenai {
                "endpoint"
            } else {
                "base_url"
            };
            put(url_field, need("endpoint", &p.endpoint));
            if p.kind == ProviderKind::AzureOpenai {
                put("deployment", need("deployment", &p.deployment));
            } else {
                put("model", need("model", &p.model));
            }
            if let Some(secret) = &p.credentials {
                put("api_key_env", env_name.clone());
                env = Some(EnvVar {
                    name: env_name,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.name.clone(),
                            key: secret.key.clone(),
                            optional: Some(false),
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                });
            } else if p.kind == ProviderKind::AzureOpenai {
                problems.push(format!(
                    "{}: Azure OpenAI needs the Secret key holding its API key",
                    at("credentials")
                ));
            }
        }
        ProviderKind::VertexAi => {
            put("project", need("project", &p.project));
            put("location", need("location", &p.location));
            put("model", need("model", &p.model));
            if let Some(endpoint) = &p.endpoint {
                put("endpoint", endpoint.clone());
            }
            match &p.credentials {
                Some(secret) => {
                    let dir = format!("{CREDENTIALS_DIR}/provider-{i}");
                    let mut auth = Mapping::new();
                    auth.insert(
                        Value::from("service_account_key_file"),
                        Value::from(format!("{dir}/key.json")),
                    );
                    entry.insert(Value::from("auth"), Value::Mapping(auth));
                    let name = format!("provider-{i}");
                    volume = Some((
                        Volume {
                            name: name.clone(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(secret.name.clone()),
                                items: Some(vec![KeyToPath {
                                    key: secret.key.clone(),
                                    path: "key.json".to_owned(),
                                    mode: None,
                                }]),
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        VolumeMount {
                            name,
                            mount_path: dir,
                            read_only: Some(true),
                            ..VolumeMount::default()
                        },
                    ));
                }
                None => problems.push(format!(
                    "{}: Vertex AI needs the Secret key holding a service-account JSON",
                    at("credentials")
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(Provider { entry, env, volume })
    } else {
        Err(problems)
    }
}

/// The cell config: identity and wiring from the operator, the template by
/// name, then the Cell's overrides.
fn cell_config(
    cell: &Cell,
    defaults: &CellDefaults,
    endpoint: &str,
    providers: &[Provider],
) -> String {
    let mut m = Mapping::new();
    let mut put = |k: &str, v: Value| {
        m.insert(Value::from(k), v);
    };
    put("id", Value::from(cell.name_any()));
    put("region", Value::from(cell.spec.region.clone()));
    put("template", Value::from(cell.spec.template.clone()));
    put("listen", Value::from(format!("0.0.0.0:{}", defaults.port)));
    put("advertise", Value::from(endpoint));
    put("data_dir", Value::from(format!("{DATA_DIR}/data")));
    put("etcd", defaults.etcd.clone());
    put("redis", defaults.redis.clone());
    put(
        "providers",
        Value::Sequence(
            providers
                .iter()
                .map(|p| Value::Mapping(p.entry.clone()))
                .collect(),
        ),
    );
    if let Some(prices) = &defaults.prices {
        put("prices", prices.clone());
    }
    for (key, value) in &cell.spec.overrides {
        // JSON values are YAML values; the conversion cannot fail.
        if let Ok(v) = serde_yaml::to_value(value) {
            put(key, v);
        }
    }
    let header = format!(
        "# Cell {}, rendered by the cell operator from template {:?} and the Cell's overrides.\n",
        cell.name_any(),
        cell.spec.template
    );
    header + &serde_yaml::to_string(&Value::Mapping(m)).unwrap_or_default()
}

fn pod_spec(
    name: &str,
    image: &str,
    template: &CellTemplate,
    defaults: &CellDefaults,
    providers: &[Provider],
) -> PodSpec {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(template.resources.cpu.clone())),
        (
            "memory".to_owned(),
            Quantity(template.resources.memory.clone()),
        ),
    ]);
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
    ];
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("data", DATA_DIR, false),
        mount("tmp", "/tmp", false),
    ];
    for (volume, volume_mount) in providers.iter().filter_map(|p| p.volume.clone()) {
        volumes.push(volume);
        mounts.push(volume_mount);
    }
    let env: Vec<EnvVar> = providers.iter().filter_map(|p| p.env.clone()).collect();
    PodSpec {
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            fs_group: Some(UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: "cell".to_owned(),
            image: Some(image.to_owned()),
            command: Some(vec![
                "/usr/local/bin/cell".to_owned(),
                "--config".to_owned(),
                format!("{CONFIG_DIR}/cell.yaml"),
            ]),
            ports: Some(vec![ContainerPort {
                name: Some("http".to_owned()),
                container_port: i32::from(defaults.port),
                ..ContainerPort::default()
            }]),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: Some(mounts),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            // Requests equal limits: a cell's latency should not depend on
            // what its neighbours burst to.
            resources: Some(ResourceRequirements {
                requests: Some(resources.clone()),
                limits: Some(resources),
                ..ResourceRequirements::default()
            }),
            // Opening a large shard takes a while; liveness waits for it.
            startup_probe: Some(probe("/healthz", 5, 60)),
            liveness_probe: Some(probe("/healthz", 10, 3)),
            readiness_probe: Some(probe("/readyz", 5, 2)),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}
