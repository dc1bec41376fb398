//! Fixtures of the operator tests: the paths a Cell named `cell-c` and its
//! objects have in the in-memory API server, the operator's defaults, and
//! the Cell resource itself.

use operator::config::CellDefaults;
use serde_json::{Value, json};

pub const NS: &str = "cellnet";
pub const CELL: &str = "/apis/cellnet.io/v1/namespaces/cellnet/cells/cell-c";
pub const STS: &str = "/apis/apps/v1/namespaces/cellnet/statefulsets/cell-c";
pub const SVC: &str = "/api/v1/namespaces/cellnet/services/cell-c";
pub const CM: &str = "/api/v1/namespaces/cellnet/configmaps/cell-c-config";
pub const POD: &str = "/api/v1/namespaces/cellnet/pods/cell-c-0";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/cellnet/events";

pub fn defaults() -> CellDefaults {
    CellDefaults {
        image: "ghcr.io/cellnet/cellnet:0.1.0".into(),
        port: 8080,
        cluster_domain: "cluster.local".into(),
        storage_class: None,
        etcd: serde_yaml::from_str("{endpoints: ['http://etcd:2379'], prefix: /cellnet/}")
            .unwrap_or_default(),
        redis: serde_yaml::from_str("{url: 'redis://redis:6379'}").unwrap_or_default(),
        prices: None,
    }
}

pub fn cell_resource(template: &str) -> Value {
    json!({
        "apiVersion": "cellnet.io/v1",
        "kind": "Cell",
        "metadata": {"name": "cell-c", "namespace": NS},
        "spec": {
            "region": "eu-west",
            "template": template,
            "overrides": {"cache": {"threshold": 0.9}},
            "providerRegions": [{
                "name": "azure-westeurope", "kind": "azure_openai", "region": "westeurope",
                "endpoint": "https://westeurope.openai.azure.com", "deployment": "gpt-4o-mini",
                "credentials": {"name": "azure-openai", "key": "westeurope"}
            }]
        }
    })
}
