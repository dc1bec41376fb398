//! The operator process: checks that the Cell CRD is installed, serves
//! `/healthz`, `/readyz` and `/metrics`, and runs the controller until
//! SIGTERM. The controller watches Cells, what it owns (StatefulSets,
//! Services, ConfigMaps: one deleted comes back) and the cells' pods (their
//! readiness is in the Cell's status).
//!
//! One replica runs at a time (the Deployment uses `Recreate`): reconciles
//! are idempotent, but two operators would race on the drain's events.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, CustomResourceExt, ResourceExt};

use crate::admin::AdminClient;
use crate::config::Config;
use crate::controller::{Context, error_policy, reconcile};
use crate::crd::Cell;
use crate::metrics::Metrics;

/// Selects what the operator made.
const MANAGED: &str = "app.kubernetes.io/managed-by=cell-operator";

pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let crd_name = Cell::crd_name();
    Api::<CustomResourceDefinition>::all(client.clone())
        .get(crd_name)
        .await
        .with_context(|| {
            format!("the CRD {crd_name} is not readable: install it with kubectl apply -f k8s/operator/crd.yaml")
        })?;

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .merge(common::metrics::route(registry));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    common::process::announce_ready("cell-operator", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let ns = config.namespace.clone();
    let admin = AdminClient::new(&config.admin_url, config.admin_token.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        admin,
        config.cells.clone(),
        metrics,
    ));
    controller(client, &ns)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((cell, action)) => tracing::debug!(cell = %cell.name, ?action, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile did not finish"),
            }
        })
        .await;
    server.abort();
    Ok(())
}

/// The controller over `namespace`: Cells, what it owns, the cells' pods.
pub fn controller(client: Client, namespace: &str) -> Controller<Cell> {
    let managed = || watcher::Config::default().labels(MANAGED);
    let pod_ns = namespace.to_owned();
    Controller::new(
        Api::<Cell>::namespaced(client.clone(), namespace),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::namespaced(client.clone(), namespace),
        managed(),
    )
    .owns(
        Api::<Service>::namespaced(client.clone(), namespace),
        managed(),
    )
    .owns(
        Api::<ConfigMap>::namespaced(client.clone(), namespace),
        managed(),
    )
    .watches(
        Api::<Pod>::namespaced(client, namespace),
        managed(),
        move |pod| {
            pod.labels()
                .get("app.kubernetes.io/instance")
                .map(|cell| ObjectRef::<Cell>::new(cell).within(&pod_ns))
        },
    )
}
