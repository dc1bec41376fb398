//! `cellnet_cell`: a cell's record in the control plane and its desired
//! state. `active` takes tenants; `drained` has every tenant moved off and
//! waits until none is left. Destroying a cell drains it, waits, and then
//! removes it; a removed cell's id is never used again.

use control_plane::admin::CellSummary;
use control_plane::model::Lifecycle;
use serde_json::json;

use super::{Ctx, Planned, object, required_str, set};
use crate::diag::{self, Diagnostic};
use crate::schema::{Attribute, Mode, Schema, Type};
use crate::value::Value;

pub const NAME: &str = "cellnet_cell";

const ATTRIBUTES: &[&[&str]] = &[
    &["name"],
    &["region"],
    &["endpoint"],
    &["template"],
    &["state"],
];

/// What the control plane reports for a cell and Terraform cannot set.
const REPORTED: [&str; 3] = ["lifecycle", "alive", "tenants"];

pub fn schema() -> Schema {
    Schema {
        version: 0,
        description: "A cell registered with the control plane, active or drained.",
        attributes: vec![
            Attribute::new(
                "id",
                Type::String,
                Mode::Computed,
                "The cell's id (its name).",
            ),
            Attribute::new(
                "name",
                Type::String,
                Mode::Required,
                "The cell's id, as its process is started with. Changing it replaces the cell.",
            ),
            Attribute::new(
                "region",
                Type::String,
                Mode::Required,
                "The region the cell serves from. Changing it replaces the cell.",
            ),
            Attribute::new(
                "endpoint",
                Type::String,
                Mode::Required,
                "Base URL routers reach the cell at (the address its process advertises).",
            ),
            Attribute::new(
                "template",
                Type::String,
                Mode::OptionalComputed,
                "Cell template from cell-templates/ (small, standard, large); standard when left out.",
            ),
            Attribute::new(
                "state",
                Type::String,
                Mode::OptionalComputed,
                "active (takes tenants) or drained (every tenant moved off); active when left out.",
            ),
            Attribute::new(
                "lifecycle",
                Type::String,
                Mode::Computed,
                "Where the cell is in its lifecycle: joining, active, draining or drained.",
            ),
            Attribute::new(
                "alive",
                Type::Bool,
                Mode::Computed,
                "Whether the cell's process holds its lease.",
            ),
            Attribute::new(
                "tenants",
                Type::Number,
                Mode::Computed,
                "Tenants whose committed replica set holds the cell.",
            ),
        ],
    }
}

pub fn validate(config: &Value) -> Vec<Diagnostic> {
    match config.get("state") {
        Value::String(s) if s != "active" && s != "drained" => vec![
            Diagnostic::error(
                "Unknown cell state",
                format!("state must be active or drained, got {s:?}"),
            )
            .at(&["state"]),
        ],
        _ => Vec::new(),
    }
}

pub fn plan(prior: &Value, proposed: &Value) -> Planned {
    let mut state = proposed.clone();
    if proposed.is_null() {
        return Planned {
            state,
            requires_replace: Vec::new(),
        };
    }
    let requires_replace: Vec<&'static str> = if prior.is_null() {
        Vec::new()
    } else {
        ["name", "region"]
            .into_iter()
            .filter(|a| !prior.get(a).same(proposed.get(a)))
            .collect()
    };
    if prior.is_null() || !requires_replace.is_empty() {
        set(&mut state, "id", proposed.get("name").clone());
    }
    for (attr, default) in [("template", "standard"), ("state", "active")] {
        if state.get(attr).is_null() {
            set(&mut state, attr, Value::string(default));
        }
    }
    let changed = prior.is_null()
        || ["endpoint", "template", "state", "name", "region"]
            .iter()
            .any(|a| !prior.get(a).same(state.get(a)));
    if changed {
        for attr in REPORTED {
            set(&mut state, attr, Value::Unknown);
        }
    }
    Planned {
        state,
        requires_replace,
    }
}

/// The desired state a lifecycle amounts to: a joining cell is on its way
/// to active, a draining one to drained.
fn desired(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::Joining | Lifecycle::Active => "active",
        Lifecycle::Draining | Lifecycle::Drained | Lifecycle::Removed => "drained",
    }
}

fn state_of(c: &CellSummary) -> Value {
    let Some(spec) = &c.spec else {
        return Value::Null;
    };
    object([
        ("id", Value::string(&c.id)),
        ("name", Value::string(&c.id)),
        ("region", Value::string(&spec.region)),
        ("endpoint", Value::string(&spec.endpoint)),
        ("template", Value::string(&spec.template)),
        ("state", Value::string(desired(spec.lifecycle))),
        ("lifecycle", Value::string(spec.lifecycle.as_str())),
        ("alive", Value::Bool(c.alive.is_some())),
        ("tenants", Value::number(c.tenants)),
    ])
}

async fn fetch(ctx: &Ctx, id: &str) -> Result<Option<CellSummary>, Diagnostic> {
    match ctx
        .admin
        .get::<CellSummary>(&format!("/admin/cells/{id}"))
        .await
    {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(diag::from_admin("Cannot read the cell", &e, &[])),
    }
}

fn lifecycle(c: &CellSummary) -> Option<Lifecycle> {
    c.spec.as_ref().map(|s| s.lifecycle)
}

pub async fn read(ctx: &Ctx, state: &Value) -> Result<Value, Diagnostic> {
    let id = required_str(state, "id")?;
    Ok(match fetch(ctx, id).await? {
        // A removed cell is gone for Terraform: its id cannot come back.
        Some(c) if lifecycle(&c) != Some(Lifecycle::Removed) => state_of(&c),
        _ => Value::Null,
    })
}

pub async fn apply(ctx: &Ctx, prior: &Value, planned: &Value) -> (Value, Vec<Diagnostic>) {
    let result = if planned.is_null() {
        destroy(ctx, prior).await.map(|()| Value::Null)
    } else {
        converge(ctx, prior, planned).await
    };
    match result {
        Ok(state) => (state, Vec::new()),
        Err(d) => {
            // Whatever happened, the state says what the cell is now.
            let id = required_str(planned, "id")
                .or_else(|_| required_str(prior, "id"))
                .or_else(|_| required_str(planned, "name"))
                .map(str::to_owned);
            let now = match id {
                Ok(id) => match fetch(ctx, &id).await {
                    Ok(Some(c)) if lifecycle(&c) != Some(Lifecycle::Removed) => state_of(&c),
                    Ok(_) => Value::Null,
                    Err(_) => prior.clone(),
                },
                Err(_) => prior.clone(),
            };
            (now, vec![d])
        }
    }
}

/// Creates or changes the cell until it is as planned.
async fn converge(ctx: &Ctx, prior: &Value, planned: &Value) -> Result<Value, Diagnostic> {
    let name = required_str(planned, "name")?;
    let endpoint = required_str(planned, "endpoint")?;
    let template = required_str(planned, "template")?;
    if prior.is_null() {
        let body = json!({
            "id": name,
            "region": required_str(planned, "region")?,
            "endpoint": endpoint,
            "template": template,
        });
        ctx.admin
            .post::<serde_json::Value>("/admin/cells", Some(&body))
            .await
            .map_err(|e| {
                let mut d = diag::from_admin("Cannot add the cell", &e, ATTRIBUTES);
                if e.status() == Some(reqwest::StatusCode::CONFLICT) {
                    d = d.at(&["name"]);
                }
                d
            })?;
    } else if !prior.get("endpoint").same(planned.get("endpoint"))
        || !prior.get("template").same(planned.get("template"))
    {
        ctx.admin
            .patch::<serde_json::Value>(
                &format!("/admin/cells/{name}"),
                &json!({"endpoint": endpoint, "template": template}),
            )
            .await
            .map_err(|e| diag::from_admin("Cannot change the cell", &e, ATTRIBUTES))?;
    }
    let Some(current) = fetch(ctx, name).await? else {
        return Err(
            Diagnostic::error("The cell is gone", format!("no cell {name:?}")).at(&["name"]),
        );
    };
    let now = lifecycle(&current).unwrap_or_default();
    match required_str(planned, "state")? {
        "drained" => {
            if !matches!(now, Lifecycle::Draining | Lifecycle::Drained) {
                ctx.admin
                    .post::<serde_json::Value>(&format!("/admin/cells/{name}/drain"), None)
                    .await
                    .map_err(|e| {
                        diag::from_admin("Cannot drain the cell", &e, ATTRIBUTES).at(&["state"])
                    })?;
            }
            wait_drained(ctx, name).await?;
        }
        _ => {
            if matches!(now, Lifecycle::Draining | Lifecycle::Drained) {
                ctx.admin
                    .post::<serde_json::Value>(&format!("/admin/cells/{name}/activate"), None)
                    .await
                    .map_err(|e| {
                        diag::from_admin("Cannot activate the cell", &e, ATTRIBUTES).at(&["state"])
                    })?;
            }
        }
    }
    match fetch(ctx, name).await? {
        Some(c) => Ok(state_of(&c)),
        None => {
            Err(Diagnostic::error("The cell is gone", format!("no cell {name:?}")).at(&["name"]))
        }
    }
}

async fn wait_drained(ctx: &Ctx, id: &str) -> Result<(), Diagnostic> {
    let mut wait = ctx.drain_wait(&format!("cell {id} to be drained"));
    loop {
        let done = match fetch(ctx, id).await? {
            Some(c) => matches!(lifecycle(&c), Some(Lifecycle::Drained | Lifecycle::Removed)),
            None => true,
        };
        if done {
            return Ok(());
        }
        wait.next().await?;
    }
}

/// Drains the cell, waits until it holds no tenant, then removes it.
async fn destroy(ctx: &Ctx, prior: &Value) -> Result<(), Diagnostic> {
    let id = required_str(prior, "id")?;
    let Some(current) = fetch(ctx, id).await? else {
        return Ok(());
    };
    match lifecycle(&current) {
        Some(Lifecycle::Removed) | None => return Ok(()),
        Some(Lifecycle::Draining | Lifecycle::Drained) => {}
        Some(_) => {
            ctx.admin
                .post::<serde_json::Value>(&format!("/admin/cells/{id}/drain"), None)
                .await
                .map_err(|e| diag::from_admin("Cannot drain the cell", &e, &[]))?;
        }
    }
    wait_drained(ctx, id).await?;
    ctx.admin
        .delete(&format!("/admin/cells/{id}"))
        .await
        .map_err(|e| diag::from_admin("Cannot remove the drained cell", &e, &[]))
}

pub fn import(id: &str) -> Value {
    object([
        ("id", Value::string(id)),
        ("name", Value::string(id)),
        ("region", Value::Null),
        ("endpoint", Value::Null),
        ("template", Value::Null),
        ("state", Value::Null),
        ("lifecycle", Value::Null),
        ("alive", Value::Null),
        ("tenants", Value::Null),
    ])
}
