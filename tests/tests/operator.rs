//! The cell operator against an in-memory Kubernetes API (`e2e::fake_kube`,
//! which checks paths, verbs, content types and bodies) and a real control
//! plane with real cells: a Cell becomes a registered, serving cell; a
//! template change rolls its pod; a deleted StatefulSet comes back; deleting
//! the Cell drains it through the control plane before the finalizer lets
//! go, and no tenant loses a document; errors back off and are recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use common::config::Secret;
use e2e::cluster::ADMIN_TOKEN;
use e2e::fake_kube::{FakeKube, Recorded};
use e2e::fleet::*;
use e2e::operator_fixture::*;
use e2e::{Cluster, ClusterOptions, eventually};
use http::Method;
use kube::runtime::controller::Action;
use operator::admin::AdminClient;
use operator::controller::{Context, Error, error_policy, reconcile};
use operator::crd::Cell;
use serde_json::{Value, json};

struct Operator {
    fake: FakeKube,
    ctx: Arc<Context>,
}

impl Operator {
    fn new(admin_url: &str, template: &str) -> Self {
        let fake = FakeKube::new();
        fake.insert(CELL, cell_resource(template));
        let mut registry = prometheus_client::registry::Registry::default();
        let ctx = Arc::new(Context::new(
            fake.client(NS),
            AdminClient::new(admin_url, Secret::new(ADMIN_TOKEN)),
            defaults(),
            operator::metrics::Metrics::register(&mut registry),
        ));
        Operator { fake, ctx }
    }

    fn cell(&self) -> Option<Cell> {
        self.fake
            .get(CELL)
            .map(|v| serde_json::from_value(v).unwrap())
    }

    async fn reconcile(&self) -> Result<Action, Error> {
        reconcile(
            Arc::new(self.cell().expect("the Cell exists")),
            self.ctx.clone(),
        )
        .await
    }

    fn status(&self) -> Value {
        self.fake.get(CELL).unwrap()["status"].clone()
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let status = self.status();
        let c = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
            .clone();
        (
            c["status"].as_str().unwrap().to_owned(),
            c["reason"].as_str().unwrap().to_owned(),
        )
    }

    /// Event reasons recorded so far, once per occurrence.
    fn events(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            // A first event is created; the same one again is patched
            // into a series.
            .filter(|r| {
                (r.method == Method::POST && r.path == EVENTS)
                    || (r.method == Method::PATCH && r.path.starts_with(&format!("{EVENTS}/")))
            })
            .filter_map(|r| r.body.as_ref()?["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// What the kubelet and the StatefulSet controller would report once
    /// the pod runs the current template.
    fn pod_runs(&self) {
        self.fake.edit(STS, |sts| {
            let generation = sts["metadata"]["generation"].clone();
            sts["status"] = json!({"observedGeneration": generation, "replicas": 1,
                "updatedReplicas": 1, "readyReplicas": 1,
                "currentRevision": "cell-c-1", "updateRevision": "cell-c-1"});
        });
        self.fake.insert(
            POD,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "cell-c-0", "namespace": NS,
                    "labels": {"app.kubernetes.io/instance": "cell-c",
                        "app.kubernetes.io/managed-by": "cell-operator"}},
                "status": {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }
}

fn applied<'a>(requests: &'a [Recorded], path: &str) -> &'a Recorded {
    let r = requests
        .iter()
        .find(|r| r.method == Method::PATCH && r.path == path)
        .unwrap_or_else(|| panic!("no PATCH of {path} in {requests:#?}"));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{path}"
    );
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some("cell-operator")
    );
    assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_resource_becomes_a_serving_cell_and_deleting_it_drains_it_first() {
    let mut cluster = Cluster::start(options(
        &[("cell-a", "eu-west"), ("cell-b", "us-east")],
        json!({"cleanup_grace": "1s"}),
    ))
    .await
    .unwrap();
    let keys = tenants(&cluster, 8).await;
    let op = Operator::new(&cluster.control_plane.url, "standard");

    // First the finalizer, by JSON patch, and nothing else.
    assert_eq!(op.reconcile().await.unwrap(), Action::await_change());
    let requests = op.fake.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        (
            requests[0].method.clone(),
            requests[0].path.as_str(),
            requests[0].content_type.as_deref()
        ),
        (Method::PATCH, CELL, Some("application/json-patch+json"))
    );
    assert_eq!(
        op.cell().unwrap().metadata.finalizers,
        Some(vec!["cellnet.io/drain".to_owned()])
    );
    op.fake.clear_requests();

    // Then the workload by server-side apply, owned by the Cell, and the
    // cell registered with the control plane.
    op.reconcile().await.unwrap();
    let requests = op.fake.requests();
    let uid = op.cell().unwrap().metadata.uid.unwrap();
    for path in [CM, SVC, STS] {
        let body = applied(&requests, path).body.clone().unwrap();
        assert_eq!(
            body["metadata"]["ownerReferences"][0]["uid"],
            uid.as_str(),
            "{path}"
        );
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Cell");
    }
    let config = op.fake.get(CM).unwrap()["data"]["cell.yaml"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        config.contains("template: standard") && config.contains("threshold: 0.9"),
        "{config}"
    );
    let endpoint = "http://cell-c-0.cell-c.cellnet.svc.cluster.local:8080";
    let registered = cell_record(&cluster, "cell-c").await;
    assert_eq!(registered["spec"]["lifecycle"], "joining");
    assert_eq!(registered["spec"]["endpoint"], endpoint);
    assert_eq!(registered["spec"]["template"], "standard");
    assert!(
        requests
            .iter()
            .any(|r| r.method == Method::GET && r.path == POD)
    );
    applied(&requests, &format!("{CELL}/status"));
    assert_eq!(op.status()["phase"], "Joining");
    assert_eq!(op.status()["endpoint"], endpoint);
    assert_eq!(op.condition("Ready"), ("False".into(), "PodMissing".into()));
    assert_eq!(
        op.condition("Progressing"),
        ("True".into(), "RollingOut".into())
    );
    assert!(
        op.events().contains(&"Registered".to_owned()),
        "{:?}",
        op.events()
    );

    // Reconciling again changes nothing: the same objects, no new status.
    let before = (op.fake.get(STS), op.fake.get(CELL));
    op.fake.clear_requests();
    op.reconcile().await.unwrap();
    assert_eq!((op.fake.get(STS), op.fake.get(CELL)).0, before.0);
    assert_eq!(
        op.fake.get(CELL).unwrap()["status"],
        before.1.unwrap()["status"]
    );
    assert!(
        !op.fake
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/status")),
        "an unchanged status is not written"
    );

    // The pod runs (here: the cell process, started as the pod would be);
    // the control plane moves tenants onto it and the Cell turns Active.
    op.pod_runs();
    cluster.add_cell("cell-c", "eu-west").unwrap();
    eventually(180, "the Cell is Active and Ready", || async {
        op.reconcile().await.unwrap();
        op.status()["phase"] == "Active" && op.condition("Ready").0 == "True"
    })
    .await;
    settled(&cluster, 60).await;
    op.reconcile().await.unwrap();
    assert_eq!(op.condition("Ready"), ("True".into(), "Serving".into()));
    assert_eq!(
        op.condition("Degraded"),
        ("False".into(), "AsExpected".into())
    );
    let held = op.status()["tenants"].as_u64().unwrap();
    assert!(held >= 1, "cell-c holds {held} tenants");
    assert!(op.events().contains(&"PhaseChanged".to_owned()));

    // A template change rolls the pod: a new digest and new resources.
    let digest = |fake: &FakeKube| {
        fake.get(STS).unwrap()["spec"]["template"]["metadata"]["annotations"]["cellnet.io/config-sha256"].clone()
    };
    let old_digest = digest(&op.fake);
    op.fake
        .edit(CELL, |c| c["spec"]["template"] = json!("small"));
    op.reconcile().await.unwrap();
    assert_ne!(digest(&op.fake), old_digest);
    let sts = op.fake.get(STS).unwrap();
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "1"
    );
    assert!(
        op.fake.get(CM).unwrap()["data"]["cell.yaml"]
            .as_str()
            .unwrap()
            .contains("template: small")
    );
    assert_eq!(op.status()["observedGeneration"], 2);
    assert_eq!(
        op.condition("Progressing"),
        ("True".into(), "RollingOut".into())
    );
    op.pod_runs();

    // What it owns comes back when deleted.
    op.fake.remove(STS);
    op.fake.remove(SVC);
    op.reconcile().await.unwrap();
    assert!(op.fake.get(STS).is_some() && op.fake.get(SVC).is_some());
    op.pod_runs();

    // Deleting the Cell drains it first; the finalizer holds it until the
    // cell holds no tenant, and every tenant keeps its documents.
    let cells: kube::Api<Cell> = kube::Api::namespaced(op.fake.client(NS), NS);
    cells.delete("cell-c", &Default::default()).await.unwrap();
    assert!(op.cell().unwrap().metadata.deletion_timestamp.is_some());
    match op.reconcile().await {
        Err(Error::StillDraining { .. }) => {}
        other => panic!("expected the drain to hold the Cell, got {other:?}"),
    }
    assert_eq!(
        error_policy(
            Arc::new(op.cell().unwrap()),
            &Error::StillDraining {
                cell: "cell-c".into(),
                tenants: 1
            },
            op.ctx.clone()
        ),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(
        ["draining", "drained"].contains(
            &cell_record(&cluster, "cell-c").await["spec"]["lifecycle"]
                .as_str()
                .unwrap()
        )
    );
    assert!(op.events().contains(&"DrainStarted".to_owned()));
    assert_eq!(op.status()["phase"], "Draining");
    assert_eq!(op.condition("Draining").0, "True");
    eventually(180, "the drained Cell is let go", || async {
        match op.reconcile().await {
            Ok(_) => true,
            Err(Error::StillDraining { .. }) => false,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert!(
        op.cell().is_none(),
        "the finalizer was removed and the Cell went"
    );
    assert_eq!(
        cell_record(&cluster, "cell-c").await["spec"]["lifecycle"],
        "removed"
    );
    assert!(op.events().contains(&"Removed".to_owned()));
    let committed = members(&cluster).await;
    assert!(
        committed
            .values()
            .all(|m| !m.contains(&"cell-c".to_owned()) && m.len() == 2)
    );
    check_every_tenant(&cluster, &keys, &[1; 8]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_back_off_per_cell_and_are_recorded_as_events() {
    let cluster = Cluster::start(ClusterOptions::default()).await.unwrap();
    let op = Operator::new(&cluster.control_plane.url, "standard");
    op.reconcile().await.unwrap(); // the finalizer

    for (n, wait) in [(1, 1), (2, 2), (3, 4)] {
        op.fake.fail_next(Method::PATCH, STS, 500);
        let err = op.reconcile().await.unwrap_err();
        assert!(matches!(err, Error::Kube(_)), "{err}");
        let cell = Arc::new(op.cell().unwrap());
        assert_eq!(
            error_policy(cell, &err, op.ctx.clone()),
            Action::requeue(Duration::from_secs(wait)),
            "failure {n}"
        );
    }
    assert_eq!(
        op.events()
            .iter()
            .filter(|e| *e == "ReconcileFailed")
            .count(),
        3
    );
    // Success resets the backoff.
    op.reconcile().await.unwrap();
    op.fake.fail_next(Method::PATCH, STS, 500);
    let err = op.reconcile().await.unwrap_err();
    assert_eq!(
        error_policy(Arc::new(op.cell().unwrap()), &err, op.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    // An event that cannot be written fails nothing.
    op.fake.fail_next(Method::POST, EVENTS, 500);
    op.fake.fail_next(Method::PATCH, STS, 409);
    assert!(op.reconcile().await.is_err());
    op.reconcile().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_or_an_unreachable_control_plane_shows_in_the_status() {
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let op = Operator::new(&dead, "huge");
    op.reconcile().await.unwrap(); // the finalizer
    op.fake.clear_requests();
    let err = op.reconcile().await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
    assert!(err.to_string().contains("spec.template"), "{err}");
    assert_eq!(
        op.condition("Degraded"),
        ("True".into(), "InvalidSpec".into())
    );
    let message = op.status()["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()["message"]
        .clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("\"huge\" is not a cell template"),
        "{message}"
    );
    assert!(
        op.fake.get(STS).is_none(),
        "nothing is applied from an invalid spec"
    );
    assert!(op.status()["endpoint"].is_null(), "{}", op.status());
    assert!(op.events().contains(&"InvalidSpec".to_owned()));

    // Fixed, with the control plane away: the workload is applied, the
    // status says why the cell cannot join, and the reconcile is retried.
    op.fake
        .edit(CELL, |c| c["spec"]["template"] = json!("standard"));
    let err = op.reconcile().await.unwrap_err();
    assert!(matches!(err, Error::Admin(_)), "{err}");
    assert!(op.fake.get(STS).is_some());
    assert_eq!(
        op.condition("Degraded"),
        ("True".into(), "ControlPlaneUnreachable".into())
    );
    assert_eq!(op.condition("Ready").0, "False");
    assert_eq!(op.status()["observedGeneration"], 2);
}
