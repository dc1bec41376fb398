//! Data sources: `cellnet_cells` (every cell, with its lifecycle and the
//! tenants it holds) and `cellnet_placement` (each tenant's committed
//! replica set beside its target).

use control_plane::admin::{CellSummary, PlacementSummary};

use super::{Ctx, object, strings};
use crate::diag::{self, Diagnostic};
use crate::schema::{Attribute, Mode, Schema, Type};
use crate::value::Value;

pub const CELLS: &str = "cellnet_cells";
/// How long a placement read waits for a tenant it does not know yet.
const NEW_TENANT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
pub const PLACEMENT: &str = "cellnet_placement";

fn cell_type() -> Type {
    Type::Object(vec![
        ("id", Type::String),
        ("region", Type::String),
        ("endpoint", Type::String),
        ("template", Type::String),
        ("lifecycle", Type::String),
        ("alive", Type::Bool),
        ("tenants", Type::Number),
    ])
}

fn placement_type() -> Type {
    Type::Object(vec![
        ("tenant", Type::String),
        ("members", Type::list(Type::String)),
        ("target", Type::list(Type::String)),
        ("epoch", Type::Number),
        ("moving", Type::Bool),
    ])
}

pub fn cells_schema() -> Schema {
    Schema {
        version: 0,
        description: "Every cell registered with the control plane.",
        attributes: vec![
            Attribute::new("id", Type::String, Mode::Computed, "Always \"cells\"."),
            Attribute::new(
                "cells",
                Type::list(cell_type()),
                Mode::Computed,
                "The cells, by id: region, endpoint, template, lifecycle, whether alive, tenants held.",
            ),
        ],
    }
}

pub fn placement_schema() -> Schema {
    Schema {
        version: 0,
        description: "Committed placement: each tenant's replica set beside its target.",
        attributes: vec![
            Attribute::new(
                "id",
                Type::String,
                Mode::Computed,
                "The tenant asked for, or \"placement\".",
            ),
            Attribute::new(
                "tenant",
                Type::String,
                Mode::Optional,
                "Only this tenant; left out, every tenant.",
            ),
            Attribute::new(
                "tenants",
                Type::list(placement_type()),
                Mode::Computed,
                "Each tenant's committed members (home first), target, epoch, and whether a move is under way.",
            ),
        ],
    }
}

pub async fn read_cells(ctx: &Ctx) -> Result<Value, Diagnostic> {
    #[derive(serde::Deserialize)]
    struct List {
        cells: Vec<CellSummary>,
    }
    let list: List = ctx
        .admin
        .get("/admin/cells")
        .await
        .map_err(|e| diag::from_admin("Cannot list the cells", &e, &[]))?;
    let cells = list
        .cells
        .iter()
        .filter_map(|c| {
            let spec = c.spec.as_ref()?;
            Some(object([
                ("id", Value::string(&c.id)),
                ("region", Value::string(&spec.region)),
                ("endpoint", Value::string(&spec.endpoint)),
                ("template", Value::string(&spec.template)),
                ("lifecycle", Value::string(spec.lifecycle.as_str())),
                ("alive", Value::Bool(c.alive.is_some())),
                ("tenants", Value::number(c.tenants)),
            ]))
        })
        .collect();
    Ok(object([
        ("id", Value::string("cells")),
        ("cells", Value::List(cells)),
    ]))
}

pub async fn read_placement(ctx: &Ctx, config: &Value) -> Result<Value, Diagnostic> {
    let tenant = config.get("tenant").as_str();
    let path = match tenant {
        Some(t) => format!("/admin/placement?tenant={t}"),
        None => "/admin/placement".to_owned(),
    };
    // A tenant created a moment ago may not be in the control plane's
    // snapshot yet: wait a little for it rather than call it missing.
    let mut wait = ctx.wait("the tenant to reach the control plane", NEW_TENANT_WAIT);
    let summary: PlacementSummary = loop {
        match ctx.admin.get(&path).await {
            Ok(s) => break s,
            Err(e) if e.is_not_found() && tenant.is_some() => {
                wait.next().await.map_err(|d| d.at(&["tenant"]))?;
            }
            Err(e) => {
                return Err(diag::from_admin(
                    "Cannot read placement",
                    &e,
                    &[&["tenant"]],
                ));
            }
        }
    };
    let tenants = summary
        .tenants
        .iter()
        .map(|t| {
            object([
                ("tenant", Value::string(&t.tenant)),
                ("members", strings(Some(&t.members))),
                ("target", strings(Some(&t.target))),
                ("epoch", Value::number(t.epoch)),
                ("moving", Value::Bool(t.moving.is_some())),
            ])
        })
        .collect();
    Ok(object([
        ("id", Value::string(tenant.unwrap_or("placement"))),
        ("tenant", tenant.map_or(Value::Null, Value::string)),
        ("tenants", Value::List(tenants)),
    ]))
}
