//! One tenant: read it, delete it. Deleting takes the tenant's keys out of
//! service at once (its record goes) and leaves its points to the leader,
//! which deletes them from every cell that held them, as it does for a
//! cell that left a replica set, and then forgets the placement record.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{AdminError, AdminState, TenantSummary, update_tenant};
use crate::model::{Leaving, PlacementRecord, TenantRecord, now_ms};
use crate::store::{decode, encode};

pub fn routes() -> Router<AdminState> {
    Router::new().route(
        "/admin/tenants/{id}",
        get(show_tenant).patch(update_tenant).delete(delete_tenant),
    )
}

/// `GET /admin/tenants/{id}`.
async fn show_tenant(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<TenantSummary>, AdminError> {
    let key = state.keys.tenant(&id);
    let resp = state
        .store
        .retrying("read tenant", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    let Some(kv) = resp.kvs().first() else {
        return Err(AdminError::NotFound(format!("no tenant {id:?}")));
    };
    let record: TenantRecord = decode(&key, kv.value())?;
    Ok(Json(TenantSummary::from(&record)))
}

/// `DELETE /admin/tenants/{id}`: in one transaction, the tenant record goes
/// and its placement keeps no member, every cell that held the tenant
/// listed as leaving. Refused while a move of the tenant is under way.
async fn delete_tenant(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AdminError> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let tenant_key = state.keys.tenant(&id);
    let placement_key = state.keys.placement(&id);
    for _ in 0..5 {
        let (tenant, placement) = state
            .store
            .retrying("read tenant and placement", |mut c| {
                let (t, p) = (tenant_key.clone(), placement_key.clone());
                async move {
                    let tenant = c.get(t, None).await?;
                    let placement = c.get(p, None).await?;
                    Ok((tenant, placement))
                }
            })
            .await?;
        let Some(tenant_kv) = tenant.kvs().first() else {
            return Err(AdminError::NotFound(format!("no tenant {id:?}")));
        };
        let mut compares = vec![Compare::mod_revision(
            tenant_key.as_str(),
            CompareOp::Equal,
            tenant_kv.mod_revision(),
        )];
        let mut ops = vec![TxnOp::delete(tenant_key.as_str(), None)];
        let mut cells = Vec::new();
        match placement.kvs().first() {
            Some(kv) => {
                let mut record: PlacementRecord = decode(&placement_key, kv.value())?;
                if let Some(m) = &record.moving {
                    return Err(AdminError::Conflict(format!(
                        "tenant {id:?} is being moved (step {}); delete it once the move is done",
                        m.step.as_str()
                    )));
                }
                let after_ms = now_ms() + state.placement.cleanup_grace.as_millis() as u64;
                for cell in std::mem::take(&mut record.members) {
                    record.leaving.retain(|l| l.cell != cell);
                    cells.push(cell.clone());
                    record.leaving.push(Leaving { cell, after_ms });
                }
                record.epoch += 1;
                record.updated_at_ms = now_ms();
                compares.push(Compare::mod_revision(
                    placement_key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                ));
                ops.push(TxnOp::put(placement_key.as_str(), encode(&record), None));
            }
            None => compares.push(Compare::create_revision(
                placement_key.as_str(),
                CompareOp::Equal,
                0,
            )),
        }
        let resp = state
            .store
            .retrying("delete tenant", |mut c| {
                let txn = Txn::new().when(compares.clone()).and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            tracing::info!(tenant = %id, ?cells, "tenant deleted; its points are removed from its cells");
            return Ok(Json(json!({"id": id, "deleted": true, "cells": cells})));
        }
    }
    Err(AdminError::Conflict(format!(
        "tenant {id:?} kept changing; try again"
    )))
}
