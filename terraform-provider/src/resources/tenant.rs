//! `cellnet_tenant`: a tenant with its plan, its own limits, its pin to
//! cells and its cache threshold. The API key is made on create and shown
//! once, so it lives only in the state (sensitive); an imported tenant has
//! none.

use control_plane::admin::{CreatedTenant, TenantSummary};
use serde_json::json;

use super::{Ctx, Planned, number_json, object, required_str, set, strings, to_json};
use crate::diag::{self, Diagnostic};
use crate::schema::{Attribute, Mode, Schema, Type};
use crate::value::Value;

pub const NAME: &str = "cellnet_tenant";

/// The attributes an admin API error can be about.
const ATTRIBUTES: &[&[&str]] = &[
    &["name"],
    &["plan"],
    &["pin"],
    &["cache_threshold"],
    &["limits", "requests_per_second"],
    &["limits", "burst"],
    &["limits", "tokens_per_day"],
];

pub fn schema() -> Schema {
    Schema {
        version: 0,
        description: "A tenant of cellnet: its plan, limits, pin to cells and semantic-cache threshold.",
        attributes: vec![
            Attribute::new(
                "id",
                Type::String,
                Mode::Computed,
                "The tenant's id (its name).",
            ),
            Attribute::new(
                "name",
                Type::String,
                Mode::Required,
                "The tenant's id: 1-63 characters of a-z, 0-9 and '-'. Changing it replaces the tenant.",
            ),
            Attribute::new(
                "plan",
                Type::String,
                Mode::OptionalComputed,
                "The tenant's plan (free, standard, enterprise); standard when left out.",
            ),
            Attribute::new(
                "pin",
                Type::list(Type::String),
                Mode::Optional,
                "Cells the tenant is kept on, home first; left out, the control plane places it.",
            ),
            Attribute::new(
                "cache_threshold",
                Type::Number,
                Mode::Optional,
                "Similarity in (0, 1] a cached answer needs to be served; left out, the cell's.",
            ),
            Attribute::nested(
                "limits",
                vec![
                    Attribute::new(
                        "requests_per_second",
                        Type::Number,
                        Mode::Required,
                        "Sustained request rate.",
                    ),
                    Attribute::new(
                        "burst",
                        Type::Number,
                        Mode::Required,
                        "Requests that may arrive at once above the rate.",
                    ),
                    Attribute::new(
                        "tokens_per_day",
                        Type::Number,
                        Mode::Optional,
                        "LLM tokens per UTC day; left out, no quota.",
                    ),
                ],
                Mode::Optional,
                "The tenant's own limits, in place of its plan's; left out, the plan's.",
            ),
            Attribute::new(
                "api_key",
                Type::String,
                Mode::Computed,
                "The API key made when the tenant was created (not known for an imported tenant).",
            )
            .sensitive(),
        ],
    }
}

pub fn validate(config: &Value) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(t) = config.get("cache_threshold").as_f64()
        && !(t > 0.0 && t <= 1.0)
    {
        out.push(
            Diagnostic::error(
                "cache_threshold out of range",
                format!("cache_threshold must be in (0, 1], got {t}"),
            )
            .at(&["cache_threshold"]),
        );
    }
    if config.get("pin").as_list().is_some_and(<[Value]>::is_empty) {
        out.push(
            Diagnostic::error(
                "Empty pin",
                "pin must name at least one cell, or be left out.",
            )
            .at(&["pin"]),
        );
    }
    out
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
        set(&mut state, "api_key", Value::Unknown);
        if state.get("plan").is_null() {
            set(
                &mut state,
                "plan",
                Value::string(control_plane::model::DEFAULT_PLAN),
            );
        }
    }
    Planned {
        state,
        requires_replace: if renamed { vec!["name"] } else { Vec::new() },
    }
}

/// The tenant as the state holds it; the API key is the state's own.
fn state_of(t: &TenantSummary, api_key: Value) -> Value {
    let limits = if t.custom_limits {
        object([
            (
                "requests_per_second",
                Value::number(t.limits.requests_per_second),
            ),
            ("burst", Value::number(t.limits.burst)),
            (
                "tokens_per_day",
                t.limits.tokens_per_day.map_or(Value::Null, Value::number),
            ),
        ])
    } else {
        Value::Null
    };
    object([
        ("id", Value::string(&t.id)),
        ("name", Value::string(&t.id)),
        ("plan", Value::string(&t.plan)),
        ("pin", strings(t.pin.as_deref())),
        (
            "cache_threshold",
            t.cache_threshold.map_or(Value::Null, Value::number),
        ),
        ("limits", limits),
        ("api_key", api_key),
    ])
}

/// The settings a PATCH writes: every one, so that what is left out of the
/// configuration is cleared.
fn update_body(planned: &Value) -> serde_json::Value {
    let limits = planned.get("limits");
    let limits = if limits.is_null() {
        serde_json::Value::Null
    } else {
        let mut l = json!({
            "requests_per_second": number_json(limits.get("requests_per_second")),
            "burst": number_json(limits.get("burst")),
        });
        if !limits.get("tokens_per_day").is_null() {
            l["tokens_per_day"] = number_json(limits.get("tokens_per_day"));
        }
        l
    };
    json!({
        "plan": to_json(planned.get("plan")),
        "pin": to_json(planned.get("pin")),
        "cache_threshold": number_json(planned.get("cache_threshold")),
        "limits": limits,
    })
}

fn has_settings(planned: &Value) -> bool {
    ["pin", "cache_threshold", "limits"]
        .iter()
        .any(|a| !planned.get(a).is_null())
}

pub async fn apply(ctx: &Ctx, prior: &Value, planned: &Value) -> (Value, Vec<Diagnostic>) {
    if planned.is_null() {
        return match delete(ctx, prior).await {
            Ok(()) => (Value::Null, Vec::new()),
            Err(d) => (prior.clone(), vec![d]),
        };
    }
    if prior.is_null() {
        return create(ctx, planned).await;
    }
    let Ok(id) = required_str(prior, "id") else {
        return (
            prior.clone(),
            vec![Diagnostic::error(
                "Tenant without an id",
                "The state holds no id.",
            )],
        );
    };
    match ctx
        .admin
        .patch::<TenantSummary>(&format!("/admin/tenants/{id}"), &update_body(planned))
        .await
    {
        Ok(t) => (state_of(&t, prior.get("api_key").clone()), Vec::new()),
        Err(e) => (
            prior.clone(),
            vec![diag::from_admin("Cannot update the tenant", &e, ATTRIBUTES)],
        ),
    }
}

async fn create(ctx: &Ctx, planned: &Value) -> (Value, Vec<Diagnostic>) {
    let name = match required_str(planned, "name") {
        Ok(n) => n,
        Err(d) => return (Value::Null, vec![d]),
    };
    let created: CreatedTenant = match ctx
        .admin
        .post(
            "/admin/tenants",
            Some(&json!({"id": name, "plan": to_json(planned.get("plan"))})),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return (
                Value::Null,
                vec![diag::from_admin("Cannot create the tenant", &e, ATTRIBUTES)],
            );
        }
    };
    let api_key = Value::string(&created.api_key);
    if !has_settings(planned) {
        return (state_of(&created.tenant, api_key), Vec::new());
    }
    match ctx
        .admin
        .patch::<TenantSummary>(&format!("/admin/tenants/{name}"), &update_body(planned))
        .await
    {
        Ok(t) => (state_of(&t, api_key), Vec::new()),
        // Created all the same: the state keeps it (tainted), with its key.
        Err(e) => (
            state_of(&created.tenant, api_key),
            vec![diag::from_admin(
                "Tenant created, but its settings were refused",
                &e,
                ATTRIBUTES,
            )],
        ),
    }
}

async fn delete(ctx: &Ctx, prior: &Value) -> Result<(), Diagnostic> {
    let id = required_str(prior, "id")?;
    let path = format!("/admin/tenants/{id}");
    // Refused while a move of the tenant is under way: wait for it.
    let mut wait = ctx.drain_wait(&format!("tenant {id}'s move to finish"));
    loop {
        match ctx.admin.delete(&path).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.status() == Some(reqwest::StatusCode::CONFLICT) => {
                wait.next().await.map_err(|mut d| {
                    d.detail = format!("{} Last refusal: {}", d.detail, e.message());
                    d
                })?;
            }
            Err(e) => return Err(diag::from_admin("Cannot delete the tenant", &e, ATTRIBUTES)),
        }
    }
}

/// The tenant as the control plane has it now; `Null` if it is gone.
pub async fn read(ctx: &Ctx, state: &Value) -> Result<Value, Diagnostic> {
    let id = required_str(state, "id")?;
    match ctx
        .admin
        .get::<TenantSummary>(&format!("/admin/tenants/{id}"))
        .await
    {
        Ok(t) => Ok(state_of(&t, state.get("api_key").clone())),
        Err(e) if e.is_not_found() => Ok(Value::Null),
        Err(e) => Err(diag::from_admin("Cannot read the tenant", &e, &[])),
    }
}

pub fn import(id: &str) -> Value {
    object([
        ("id", Value::string(id)),
        ("name", Value::string(id)),
        ("plan", Value::Null),
        ("pin", Value::Null),
        ("cache_threshold", Value::Null),
        ("limits", Value::Null),
        ("api_key", Value::Null),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str) -> Value {
        let mut v = import(name);
        set(&mut v, "id", Value::Null);
        v
    }

    #[test]
    fn a_create_plans_the_id_the_default_plan_and_a_key_to_come() {
        let p = plan(&Value::Null, &config("acme"));
        assert_eq!(p.state.get("id"), &Value::string("acme"));
        assert_eq!(p.state.get("plan"), &Value::string("standard"));
        assert_eq!(p.state.get("api_key"), &Value::Unknown);
        assert!(p.requires_replace.is_empty());
    }

    #[test]
    fn a_rename_replaces_and_other_changes_do_not() {
        let prior = state_of(
            &TenantSummary {
                id: "acme".into(),
                plan: "standard".into(),
                key_hints: Vec::new(),
                pin: None,
                cache_threshold: Some(0.85),
                limits: control_plane::model::plan_limits("standard").unwrap(),
                custom_limits: false,
                fallbacks: control_plane::model::Fallbacks::ALL,
                hybrid_retrieval: false,
                created_at_ms: 0,
            },
            Value::string("cn_key"),
        );
        assert_eq!(prior.get("cache_threshold"), &Value::number("0.85"));
        assert!(
            prior.get("limits").is_null(),
            "the plan's limits are not the tenant's own"
        );
        let mut proposed = prior.clone();
        set(&mut proposed, "plan", Value::string("free"));
        let p = plan(&prior, &proposed);
        assert!(p.requires_replace.is_empty());
        assert_eq!(p.state.get("api_key"), &Value::string("cn_key"));
        set(&mut proposed, "name", Value::string("acme-2"));
        let p = plan(&prior, &proposed);
        assert_eq!(p.requires_replace, vec!["name"]);
        assert_eq!(p.state.get("api_key"), &Value::Unknown);
    }

    #[test]
    fn settings_are_sent_as_numbers_even_when_terraform_sends_text() {
        let mut planned = config("acme");
        set(&mut planned, "plan", Value::string("free"));
        set(&mut planned, "cache_threshold", Value::string("0.85"));
        set(
            &mut planned,
            "limits",
            object([
                ("requests_per_second", Value::string("2.5")),
                ("burst", Value::number(10)),
                ("tokens_per_day", Value::Null),
            ]),
        );
        let body = update_body(&planned);
        assert_eq!(body["cache_threshold"], json!(0.85));
        assert_eq!(
            body["limits"],
            json!({"requests_per_second": 2.5, "burst": 10})
        );
        assert_eq!(body["pin"], serde_json::Value::Null);
        assert!(validate(&planned).is_empty());
        set(&mut planned, "cache_threshold", Value::number(2));
        assert_eq!(
            validate(&planned)[0].attribute,
            vec![crate::diag::Step::Attribute("cache_threshold".into())]
        );
    }
}
