//! Prints the Cell CustomResourceDefinition as YAML; `k8s/operator/crd.yaml`
//! is its output (`cargo run -p operator --bin crdgen > k8s/operator/crd.yaml`).

fn main() -> anyhow::Result<()> {
    print!("{}", operator::crd::crd_yaml()?);
    Ok(())
}
