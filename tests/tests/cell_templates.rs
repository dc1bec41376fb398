//! Every shipped cell template starts a cell that serves: one cell of each
//! size, a tenant pinned to each, its document ingested and cited.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use e2e::{Cluster, ClusterOptions, eventually};
use serde_json::json;

#[tokio::test]
async fn a_cell_started_from_each_template_serves_a_query() {
    let mut cluster = Cluster::start(ClusterOptions {
        cells: vec![("cell-small".into(), "eu-west".into())],
        cell_settings: json!({"template": "small"}),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    for (cell, region, template) in [
        ("cell-standard", "us-east", "standard"),
        ("cell-large", "ap-south", "large"),
    ] {
        cluster
            .add_cell_with(cell, region, &json!({"template": template}))
            .unwrap();
    }
    cluster.wait_for_cells(3).await.unwrap();

    let cells = cluster
        .admin(reqwest::Method::GET, "/admin/cells", None)
        .await
        .unwrap();
    for template in ["small", "standard", "large"] {
        let cell = format!("cell-{template}");
        let listed = cells["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == cell.as_str())
            .unwrap_or_else(|| panic!("{cell} not listed: {cells}"));
        assert_eq!(listed["spec"]["template"], template, "{listed}");

        let tenant = format!("on-{template}");
        let key = cluster.create_tenant(&tenant).await.unwrap();
        cluster
            .admin(
                reqwest::Method::PATCH,
                &format!("/admin/tenants/{tenant}"),
                Some(&json!({"pin": [cell]})),
            )
            .await
            .unwrap();
        eventually(15, &format!("{tenant} committed to {cell}"), || async {
            let placement = cluster
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/placement?tenant={tenant}"),
                    None,
                )
                .await
                .unwrap();
            placement["tenants"][0]["members"] == json!([cell])
        })
        .await;
        cluster.wait_for_tenant(&key).await.unwrap();

        let text = format!("The {template} cell keeps its lantern in the boathouse.");
        let (status, body, _) = cluster
            .post(
                &key,
                "/v1/documents",
                &json!({"documents": [{"id": format!("doc-{template}"), "text": text}]}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, body, _) = cluster
            .post(
                &key,
                "/v1/query",
                &json!({"query": format!("Where does the {template} cell keep its lantern?")}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["cell"], cell.as_str(), "{body}");
        assert_eq!(
            body["citations"][0]["document_id"],
            format!("doc-{template}"),
            "{body}"
        );
        assert_eq!(cluster.points_on(&cell, &tenant).await.unwrap(), 1);
    }
}
