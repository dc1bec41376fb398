//! The operator's moves on cells and placement: add, drain, remove, list
//! cells; show committed placement, targets and moves; move a tenant; the
//! rebalance the leader is carrying out. The leader does the moving: these
//! calls record what operators want and report what is happening.

use std::collections::BTreeMap;
use std::collections::HashSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AdminError, AdminState, UpdateTenant, apply_tenant_update};
use crate::model::{
    CellAlive, CellSpec, KeyKind, Leaving, Lifecycle, Move, now_ms, validate_tenant_id,
};
use crate::placement::plan::{Pending, plan};
use crate::placement::ring::Placement;
use crate::store::{decode, encode};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/cells", get(list_cells).post(add_cell))
        .route(
            "/admin/cells/{id}",
            get(show_cell).patch(update_cell).delete(remove_cell),
        )
        .route("/admin/cells/{id}/drain", post(drain_cell))
        .route("/admin/cells/{id}/activate", post(activate_cell))
        .route("/admin/placement", get(show_placement))
        .route("/admin/rebalance", get(rebalance))
        .route("/admin/tenants/{id}/move", post(move_tenant))
}

/// A cell as operators see it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CellSummary {
    pub id: String,
    pub spec: Option<CellSpec>,
    pub alive: Option<CellAlive>,
    /// Tenants whose committed replica set holds the cell.
    #[serde(default)]
    pub tenants: usize,
    /// Moves under way that bring the cell in or take it out.
    #[serde(default)]
    pub moves: usize,
}

async fn list_cells(
    State(state): State<AdminState>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let cells = cell_summaries(&state, &state.keys.cells()).await?;
    Ok(Json(json!({ "cells": cells })))
}

/// `GET /admin/cells/{id}`.
async fn show_cell(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CellSummary>, AdminError> {
    cell_summaries(&state, &format!("{}{id}/", state.keys.cells()))
        .await?
        .into_iter()
        .find(|c| c.id == id && c.spec.is_some())
        .map(Json)
        .ok_or_else(|| AdminError::NotFound(format!("no cell {id:?}")))
}

/// The cells whose keys start with `prefix`, with the tenants they hold.
async fn cell_summaries(state: &AdminState, prefix: &str) -> Result<Vec<CellSummary>, AdminError> {
    let prefix = prefix.to_owned();
    let resp = state
        .store
        .retrying("list cells", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let view = state.cluster.snapshot();
    let mut cells: BTreeMap<String, CellSummary> = BTreeMap::new();
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let (id, spec, alive) = match state.keys.parse(key) {
            KeyKind::CellSpec(id) => (id, Some(decode::<CellSpec>(key, kv.value())?), None),
            KeyKind::CellAlive(id) => (id, None, Some(decode::<CellAlive>(key, kv.value())?)),
            _ => continue,
        };
        let summary = cells.entry(id.to_owned()).or_insert_with(|| CellSummary {
            id: id.to_owned(),
            spec: None,
            alive: None,
            tenants: 0,
            moves: 0,
        });
        summary.spec = spec.or(summary.spec.take());
        summary.alive = alive.or(summary.alive.take());
    }
    for record in view.placements.values() {
        for c in &record.members {
            if let Some(s) = cells.get_mut(c) {
                s.tenants += 1;
            }
        }
        if let Some(m) = &record.moving {
            for c in m.to.iter().chain(&record.members) {
                let both = m.to.contains(c) && record.members.contains(c);
                if let Some(s) = cells.get_mut(c).filter(|_| !both) {
                    s.moves += 1;
                }
            }
        }
    }
    Ok(cells.into_values().collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddCell {
    id: String,
    region: String,
    endpoint: String,
    #[serde(default = "default_template")]
    template: String,
}

fn default_template() -> String {
    "standard".to_owned()
}

/// `POST /admin/cells`: registers a cell before its process starts (it
/// joins; the process keeps the lifecycle it finds).
async fn add_cell(
    State(state): State<AdminState>,
    body: Result<Json<AddCell>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CellSpec>), AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    validate_tenant_id(&body.id).map_err(|_| {
        AdminError::BadRequest(format!(
            "cell id {:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            body.id
        ))
    })?;
    if body.region.trim().is_empty() {
        return Err(AdminError::BadRequest("region must not be empty".into()));
    }
    validate_endpoint(&body.endpoint)?;
    validate_template(&body.template)?;
    let spec = CellSpec {
        region: body.region,
        endpoint: body.endpoint,
        template: body.template,
        lifecycle: Lifecycle::Joining,
    };
    let created = state
        .store
        .create_if_absent("add cell", &state.keys.cell_spec(&body.id), &encode(&spec))
        .await?;
    if !created {
        return Err(AdminError::Conflict(format!(
            "cell {:?} already exists",
            body.id
        )));
    }
    tracing::info!(cell = %body.id, "cell added");
    Ok((StatusCode::CREATED, Json(spec)))
}

fn validate_endpoint(endpoint: &str) -> Result<(), AdminError> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return Ok(());
    }
    Err(AdminError::BadRequest(format!(
        "endpoint must be an http(s) URL, got {endpoint:?}"
    )))
}

/// A shipped template's name, or the path of a template file.
fn validate_template(template: &str) -> Result<(), AdminError> {
    let names = common::template::names();
    if names.contains(&template) || template.contains('/') || template.ends_with(".yaml") {
        return Ok(());
    }
    Err(AdminError::BadRequest(format!(
        "template {template:?} is not a cell template ({}) nor a template file",
        names.join(", ")
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateCell {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    template: Option<String>,
}

/// `PATCH /admin/cells/{id}`: a new endpoint (the cell moved) or template
/// (recorded; the cell's process applies it when restarted with it).
async fn update_cell(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<UpdateCell>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<CellSpec>, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    if let Some(endpoint) = &body.endpoint {
        validate_endpoint(endpoint)?;
    }
    if let Some(template) = &body.template {
        validate_template(template)?;
    }
    let spec = change_spec(&state, &id, |spec| {
        if spec.lifecycle == Lifecycle::Removed {
            return Err(format!("cell {id:?} was removed"));
        }
        if let Some(endpoint) = &body.endpoint {
            spec.endpoint.clone_from(endpoint);
        }
        if let Some(template) = &body.template {
            spec.template.clone_from(template);
        }
        Ok(())
    })
    .await?;
    Ok(Json(spec))
}

/// `POST /admin/cells/{id}/activate`: a draining or drained cell takes
/// tenants again (the leader moves its share back onto it).
async fn activate_cell(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CellSpec>, AdminError> {
    let spec = change_lifecycle(&state, &id, Lifecycle::Active, |l| match l {
        Lifecycle::Removed => Err(format!("cell {id:?} was removed")),
        Lifecycle::Joining => Err(format!("cell {id:?} is still joining")),
        _ => Ok(()),
    })
    .await?;
    Ok(Json(spec))
}

/// Changes a cell's lifecycle with compare-and-swap, if `allowed` accepts
/// its current one.
async fn change_lifecycle(
    state: &AdminState,
    id: &str,
    to: Lifecycle,
    allowed: impl Fn(Lifecycle) -> Result<(), String>,
) -> Result<CellSpec, AdminError> {
    let spec = change_spec(state, id, |spec| {
        allowed(spec.lifecycle)?;
        spec.lifecycle = to;
        Ok(())
    })
    .await?;
    tracing::info!(cell = %id, lifecycle = to.as_str(), "cell lifecycle set by an operator");
    Ok(spec)
}

/// Changes a cell's spec with compare-and-swap, if `change` accepts it.
async fn change_spec(
    state: &AdminState,
    id: &str,
    change: impl Fn(&mut CellSpec) -> Result<(), String>,
) -> Result<CellSpec, AdminError> {
    let key = state.keys.cell_spec(id);
    for _ in 0..5 {
        let resp = state
            .store
            .retrying("read cell spec", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let Some(kv) = resp.kvs().first() else {
            return Err(AdminError::NotFound(format!("no cell {id:?}")));
        };
        let revision = kv.mod_revision();
        let mut spec: CellSpec = decode(&key, kv.value())?;
        change(&mut spec).map_err(AdminError::Conflict)?;
        let written = state
            .store
            .put_if_revision("write cell spec", &key, &encode(&spec), revision)
            .await?
            .is_some();
        if written {
            return Ok(spec);
        }
    }
    Err(AdminError::Conflict(format!(
        "cell {id:?} kept changing; try again"
    )))
}

/// `POST /admin/cells/{id}/drain`: the leader moves every tenant off.
async fn drain_cell(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<CellSpec>, AdminError> {
    let spec = change_lifecycle(&state, &id, Lifecycle::Draining, |l| match l {
        Lifecycle::Removed => Err(format!("cell {id:?} was removed")),
        Lifecycle::Drained => Err(format!("cell {id:?} is already drained")),
        _ => Ok(()),
    })
    .await?;
    Ok(Json(spec))
}

#[derive(Debug, Default, Deserialize)]
struct RemoveOptions {
    #[serde(default)]
    force: bool,
}

/// Tenants whose placement still needs the cell: committed on it, moving
/// onto it.
fn tenants_on(view: &crate::watch::ClusterView, cell: &str) -> Vec<String> {
    let mut held: Vec<String> = view
        .placements
        .iter()
        .filter(|(_, r)| r.write_set().contains(&cell))
        .map(|(t, _)| t.clone())
        .collect();
    held.sort();
    held
}

/// `DELETE /admin/cells/{id}`: refused while the cell holds a tenant,
/// unless `?force=true` (a cell lost for good: its tenants are copied again
/// from their surviving members onto others).
async fn remove_cell(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(options): Query<RemoveOptions>,
) -> Result<Json<CellSpec>, AdminError> {
    let view = state.cluster.snapshot();
    let held = tenants_on(&view, &id);
    if !held.is_empty() && !options.force {
        let shown: Vec<&str> = held.iter().take(5).map(String::as_str).collect();
        return Err(AdminError::Conflict(format!(
            "cell {id:?} still holds {} ({}{}); drain it first, or remove it with force if it is lost for good",
            match held.len() {
                1 => "1 tenant".to_owned(),
                n => format!("{n} tenants"),
            },
            shown.join(", "),
            if held.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )));
    }
    let spec = change_lifecycle(&state, &id, Lifecycle::Removed, |_| Ok(())).await?;
    Ok(Json(spec))
}

/// One tenant's committed placement beside its target.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantPlacement {
    pub tenant: String,
    pub members: Vec<String>,
    pub epoch: u64,
    pub target: Vec<String>,
    #[serde(default)]
    pub moving: Option<Move>,
    #[serde(default)]
    pub leaving: Vec<Leaving>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PlacementSummary {
    pub tenants: Vec<TenantPlacement>,
    /// Tenants away from their target (moving, or waiting for a turn).
    pub pending: Vec<Pending>,
}

#[derive(Debug, Default, Deserialize)]
struct PlacementQuery {
    #[serde(default)]
    tenant: Option<String>,
}

/// `GET /admin/placement[?tenant=T]`.
async fn show_placement(
    State(state): State<AdminState>,
    Query(query): Query<PlacementQuery>,
) -> Result<Json<PlacementSummary>, AdminError> {
    let view = state.cluster.snapshot();
    if let Some(t) = &query.tenant
        && !view.tenants.contains_key(t)
    {
        return Err(AdminError::NotFound(format!("no tenant {t:?}")));
    }
    let target = Placement::build(&view, state.placement.ring);
    let mut tenants: Vec<TenantPlacement> = view
        .tenants
        .values()
        .filter(|t| query.tenant.as_ref().is_none_or(|q| q == &t.id))
        .map(|t| {
            let record = view.placement(&t.id);
            TenantPlacement {
                tenant: t.id.clone(),
                members: record.map(|r| r.members.clone()).unwrap_or_default(),
                epoch: record.map(|r| r.epoch).unwrap_or(0),
                target: target.target_ids(&t.id, t.pin.as_deref()),
                moving: record.and_then(|r| r.moving.clone()),
                leaving: record.map(|r| r.leaving.clone()).unwrap_or_default(),
            }
        })
        .collect();
    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    let pending = planned(&state)
        .into_iter()
        .filter(|p| query.tenant.as_ref().is_none_or(|q| q == &p.tenant))
        .collect();
    Ok(Json(PlacementSummary { tenants, pending }))
}

fn planned(state: &AdminState) -> Vec<Pending> {
    let view = state.cluster.snapshot();
    let target = Placement::build(&view, state.placement.ring);
    plan(
        &view,
        &target,
        &HashSet::new(),
        state.placement.throttle,
        now_ms(),
    )
    .pending
}

/// `GET /admin/rebalance`: the moves that bring committed placement to the
/// target, as the leader is carrying them out.
async fn rebalance(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(json!({ "moves": planned(&state) }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTenant {
    to: Vec<String>,
}

/// `POST /admin/tenants/{id}/move`: pins the tenant to `to`; the leader
/// moves it there (dual-write, copy, verify, flip) and keeps it there until
/// the pin is cleared.
async fn move_tenant(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Result<Json<MoveTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, AdminError> {
    let Json(body) = body.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    if body.to.is_empty() {
        return Err(AdminError::BadRequest(
            "to must name at least one cell".into(),
        ));
    }
    let view = state.cluster.snapshot();
    for (i, cell) in body.to.iter().enumerate() {
        let lifecycle = view.cells.get(cell).and_then(|c| c.lifecycle());
        match lifecycle {
            None => return Err(AdminError::BadRequest(format!("to[{i}]: no cell {cell:?}"))),
            Some(l) if !l.takes_tenants() => {
                return Err(AdminError::BadRequest(format!(
                    "to[{i}]: cell {cell:?} is {} and takes no tenants",
                    l.as_str()
                )));
            }
            Some(_) => {}
        }
        if body.to[..i].contains(cell) {
            return Err(AdminError::BadRequest(format!(
                "to[{i}]: {cell:?} is named twice"
            )));
        }
    }
    let summary = apply_tenant_update(
        &state,
        &id,
        UpdateTenant {
            pin: Some(Some(body.to.clone())),
            ..Default::default()
        },
    )
    .await?;
    Ok(Json(json!({"tenant": summary.id, "to": body.to})))
}
