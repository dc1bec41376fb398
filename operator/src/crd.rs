//! The `Cell` custom resource (`cells.cellnet.io/v1`): what an operator asks
//! for (region, template, overrides, provider regions, storage, image) and
//! what the operator reports back (phase, conditions, endpoint, tenants).
//! `crdgen` prints the CustomResourceDefinition these types derive; the copy
//! in `k8s/operator/crd.yaml` is checked against it by a test.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer that makes deleting a Cell drain it first.
pub const FINALIZER: &str = "cellnet.io/drain";

/// One cell: a single-pod StatefulSet with its vector shard on a volume,
/// registered with the control plane, which places tenants on it.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn repeats `type_ = \"string\"`, which clippy takes for a duplicate"
)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cellnet.io",
    version = "v1",
    kind = "Cell",
    namespaced,
    status = "CellStatus",
    shortname = "cl",
    category = "cellnet",
    doc = "A cell of cellnet: a serving cell the operator provisions, registers with the control plane, and drains before it is deleted.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Template", type_ = "string", json_path = ".spec.template"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Tenants", type_ = "integer", json_path = ".status.tenants"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CellSpec {
    /// Region the cell serves from; placement keeps a tenant's replicas in
    /// distinct regions.
    pub region: String,
    /// A template from `cell-templates/` (small, standard, large): index
    /// parameters, cache budget, limits and the pod's resources.
    #[serde(default = "default_template")]
    pub template: String,
    /// Fields of the cell config that override the template's, by section
    /// (`vector`, `cache`, `limits`, `embedding`, `retrieval`, `ingest`,
    /// `workers`, `hedging`, `prices`), e.g. `{cache: {threshold: 0.9}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "free_form_object")]
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// The LLM provider regions the cell calls, in order of preference.
    #[schemars(length(min = 1))]
    pub provider_regions: Vec<ProviderRegion>,
    /// Size of the vector shard's volume (a Kubernetes quantity); by
    /// default the template's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Container image; by default the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn default_template() -> String {
    common::template::DEFAULT.to_owned()
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One LLM provider region, as the cell config's `providers` entry.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRegion {
    /// The provider's name in metrics and provider-region health, e.g.
    /// `azure-eastus`.
    pub name: String,
    pub kind: ProviderKind,
    /// The provider's own region, e.g. `eastus`.
    pub region: String,
    /// Azure: the resource endpoint; OpenAI-compatible: the base URL up to
    /// the API version; Vertex AI: optional, by default Google's regional one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Azure OpenAI: the model deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Vertex AI and OpenAI-compatible: the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Vertex AI: the Google Cloud project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Vertex AI: the location, e.g. `us-central1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The Secret key holding the credential: the API key (Azure,
    /// OpenAI-compatible) or the service-account JSON (Vertex AI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretKeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    AzureOpenai,
    VertexAi,
    OpenaiCompatible,
}

/// A key of a Secret in the Cell's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Where a cell is in its life, as the control plane records it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Starting, or registered and taking its share of tenants.
    Joining,
    /// Serving its tenants.
    Active,
    /// Its tenants are being moved to other cells.
    Draining,
    /// Holds no tenant.
    Drained,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CellStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Progressing, Draining and Degraded.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The URL routers reach the cell at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Tenants whose committed replica set holds the cell.
    #[serde(default)]
    pub tenants: u32,
    /// The Cell generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Cell {
    /// The condition of `type_`, if the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// The CustomResourceDefinition, as checked in at `k8s/operator/crd.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let header = "# Generated by `cargo run -p operator --bin crdgen`; do not edit.\n";
    Ok(format!("{header}{}", serde_yaml::to_string(&Cell::crd())?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    #[test]
    fn the_checked_in_crd_is_what_the_types_generate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/base/cell-crd.yaml");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == crd_yaml().unwrap(),
            "k8s/base/cell-crd.yaml is stale: cargo run -p operator --bin crdgen > k8s/base/cell-crd.yaml"
        );
    }

    #[test]
    fn the_crd_is_structural_with_a_status_subresource() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Cell::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "cells.cellnet.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        let schema = &version["schema"]["openAPIV3Schema"]["properties"];
        let spec = &schema["spec"];
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"region") && required.contains(&"providerRegions"),
            "{required:?}"
        );
        assert_eq!(
            spec["properties"]["overrides"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        let kinds = &spec["properties"]["providerRegions"]["items"]["properties"]["kind"]["enum"];
        assert_eq!(
            *kinds,
            serde_json::json!(["azure_openai", "vertex_ai", "openai_compatible"])
        );
        let conditions = &schema["status"]["properties"]["conditions"]["items"]["properties"];
        for field in [
            "type",
            "status",
            "reason",
            "message",
            "lastTransitionTime",
            "observedGeneration",
        ] {
            assert!(conditions[field].is_object(), "conditions lack {field}");
        }
        let phases = &schema["status"]["properties"]["phase"];
        assert!(phases.to_string().contains("Draining"), "{phases}");
    }
}
