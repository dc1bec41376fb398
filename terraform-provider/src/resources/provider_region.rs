//! `cellnet_provider_region`: whether an LLM provider region is drained
//! (no cell sends it calls) or in service. Cells register the regions
//! they are configured with; destroying the resource puts the region back
//! in service.

use control_plane::admin::ProviderSummary;

use super::{Ctx, Planned, object, required_str, set, strings};
use crate::diag::{self, Diagnostic};
use crate::schema::{Attribute, Mode, Schema, Type};
use crate::value::Value;

pub const NAME: &str = "cellnet_provider_region";

const ATTRIBUTES: &[&[&str]] = &[&["name"], &["drained"]];

pub fn schema() -> Schema {
    Schema {
        version: 0,
        description: "An LLM provider region (Azure OpenAI, Vertex AI, OpenAI-compatible), drained or in service.",
        attributes: vec![
            Attribute::new(
                "id",
                Type::String,
                Mode::Computed,
                "The provider region's name.",
            ),
            Attribute::new(
                "name",
                Type::String,
                Mode::Required,
                "The provider region's name, as cells are configured with it (for example azure-westeurope).",
            ),
            Attribute::new(
                "drained",
                Type::Bool,
                Mode::OptionalComputed,
                "Whether cells stop calling it (they fail over to their next region); false when left out.",
            ),
            Attribute::new(
                "configured_cells",
                Type::list(Type::String),
                Mode::Computed,
                "Cells configured to call it.",
            ),
        ],
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
    let renamed = !prior.is_null() && !prior.get("name").same(proposed.get("name"));
    if prior.is_null() || renamed {
        set(&mut state, "id", proposed.get("name").clone());
        set(&mut state, "configured_cells", Value::Unknown);
    }
    if state.get("drained").is_null() {
        set(&mut state, "drained", Value::Bool(false));
    }
    // An apply reads the cells configured with it again.
    if !prior.is_null() && !prior.get("drained").same(state.get("drained")) {
        set(&mut state, "configured_cells", Value::Unknown);
    }
    Planned {
        state,
        requires_replace: if renamed { vec!["name"] } else { Vec::new() },
    }
}

fn state_of(id: &str, p: Option<&ProviderSummary>) -> Value {
    let mut cells: Vec<String> = p.map(|p| p.configured_cells.clone()).unwrap_or_default();
    cells.sort();
    cells.dedup();
    object([
        ("id", Value::string(id)),
        ("name", Value::string(id)),
        ("drained", Value::Bool(p.is_some_and(|p| p.drained))),
        ("configured_cells", strings(Some(&cells))),
    ])
}

async fn fetch(ctx: &Ctx, id: &str) -> Result<Option<ProviderSummary>, Diagnostic> {
    #[derive(serde::Deserialize)]
    struct List {
        providers: Vec<ProviderSummary>,
    }
    let list: List = ctx
        .admin
        .get("/admin/providers")
        .await
        .map_err(|e| diag::from_admin("Cannot read the provider regions", &e, &[]))?;
    Ok(list.providers.into_iter().find(|p| p.id == id))
}

async fn set_drained(ctx: &Ctx, id: &str, drained: bool) -> Result<(), Diagnostic> {
    let path = format!("/admin/providers/{id}/drain");
    let result = if drained {
        ctx.admin
            .post::<serde_json::Value>(&path, None)
            .await
            .map(drop)
    } else {
        ctx.admin.delete(&path).await
    };
    result.map_err(|e| diag::from_admin("Cannot change the provider region", &e, ATTRIBUTES))
}

pub async fn apply(ctx: &Ctx, prior: &Value, planned: &Value) -> (Value, Vec<Diagnostic>) {
    if planned.is_null() {
        let result = match required_str(prior, "id") {
            Ok(id) => set_drained(ctx, id, false).await,
            Err(d) => Err(d),
        };
        return match result {
            Ok(()) => (Value::Null, Vec::new()),
            Err(d) => (prior.clone(), vec![d]),
        };
    }
    let name = match required_str(planned, "name") {
        Ok(n) => n,
        Err(d) => return (prior.clone(), vec![d]),
    };
    let drained = planned.get("drained").as_bool().unwrap_or(false);
    let mut diags = Vec::new();
    if let Err(d) = set_drained(ctx, name, drained).await {
        return (prior.clone(), vec![d]);
    }
    let current = match fetch(ctx, name).await {
        Ok(p) => p,
        Err(d) => return (prior.clone(), vec![d]),
    };
    if current
        .as_ref()
        .is_none_or(|p| p.configured_cells.is_empty())
    {
        diags.push(
            Diagnostic::warning(
                "No cell is configured with this provider region",
                format!("No cell has registered {name:?} yet; the setting applies once one starts with it."),
            )
            .at(&["name"]),
        );
    }
    (state_of(name, current.as_ref()), diags)
}

/// The region as the control plane has it. It is never gone: a region no
/// cell names is simply in service and unused.
pub async fn read(ctx: &Ctx, state: &Value) -> Result<Value, Diagnostic> {
    let id = required_str(state, "id")?;
    Ok(state_of(id, fetch(ctx, id).await?.as_ref()))
}

pub fn import(id: &str) -> Value {
    object([
        ("id", Value::string(id)),
        ("name", Value::string(id)),
        ("drained", Value::Null),
        ("configured_cells", Value::Null),
    ])
}
