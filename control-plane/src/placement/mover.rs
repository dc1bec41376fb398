//! Moving one tenant, a step at a time, each step recorded in its placement
//! record so that a new leader carries on where the last one stopped:
//!
//! 1. dual-write: the move is recorded; once every router reports routing by
//!    that revision (and has no write in flight from before it), every write
//!    reaches the old and the new members;
//! 2. copy: the tenant's points are streamed from a current member that owes
//!    nothing (no pending hint, no queued ingestion job) to each new one;
//! 3. verify (module `verify`): point ids and a checksum of every point
//!    compared on both sides (a mismatch copies again);
//! 4. flip: the new replica set committed in one transaction on the record's
//!    revision;
//! 5. clean up: the cells that left delete the tenant's points once the grace
//!    period is over and every router routes by the flip.
//!
//! A step that fails five times in a row rolls the move back.

use std::time::Duration;

use crate::model::{
    CellSpec, Leaving, Lifecycle, Move, MoveStep, PlacementRecord, hint_stream, ingest_stream,
    now_ms,
};
use crate::placement::{MoveContext, MoveError};
use crate::store::{decode, encode};
use crate::watch::ClusterView;

/// Points sent to a destination in one import.
const COPY_BATCH: usize = 256;
/// Batches between two progress records in etcd.
const PROGRESS_EVERY: u64 = 8;
/// Failed attempts at one step before the move rolls back.
const MAX_FAILURES: u32 = 5;
/// How long a move waits for routers to report a revision, or for a source
/// to owe nothing, before the attempt counts as failed.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Reads a tenant's placement record and its revision.
pub async fn read_record(
    ctx: &MoveContext,
    tenant: &str,
) -> Result<Option<(PlacementRecord, i64)>, MoveError> {
    let key = ctx.keys.placement(tenant);
    let resp = ctx
        .store
        .retrying("read placement", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    match resp.kvs().first() {
        Some(kv) => Ok(Some((decode(&key, kv.value())?, kv.mod_revision()))),
        None => Ok(None),
    }
}

/// Writes `record` if the stored one is still at `revision` (0: absent);
/// returns the new revision, or `None` if someone wrote in between.
pub async fn write_record(
    ctx: &MoveContext,
    tenant: &str,
    record: &PlacementRecord,
    revision: i64,
) -> Result<Option<i64>, MoveError> {
    let key = ctx.keys.placement(tenant);
    Ok(ctx
        .store
        .put_if_revision("write placement", &key, &encode(record), revision)
        .await?)
}

/// Commits `members` for a tenant without moving data: a new tenant, or a
/// new order of the same members.
pub async fn commit(
    ctx: &MoveContext,
    tenant: &str,
    members: Vec<String>,
) -> Result<(), MoveError> {
    let (record, revision) = match read_record(ctx, tenant).await? {
        Some((mut r, rev)) if r.moving.is_none() => {
            r.members = members;
            r.epoch += 1;
            r.updated_at_ms = now_ms();
            (r, rev)
        }
        Some(_) => return Ok(()),
        None => (
            PlacementRecord {
                members,
                epoch: 1,
                moving: None,
                leaving: Vec::new(),
                updated_at_ms: now_ms(),
            },
            0,
        ),
    };
    if write_record(ctx, tenant, &record, revision)
        .await?
        .is_some()
    {
        tracing::info!(tenant, members = ?record.members, "placement committed");
    }
    Ok(())
}

/// Moves a cell on in its lifecycle, unless its spec changed meanwhile.
pub async fn set_lifecycle(
    ctx: &MoveContext,
    cell: &str,
    lifecycle: Lifecycle,
) -> Result<(), MoveError> {
    let key = ctx.keys.cell_spec(cell);
    let resp = ctx
        .store
        .retrying("read cell spec", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(());
    };
    let revision = kv.mod_revision();
    let mut spec: CellSpec = decode(&key, kv.value())?;
    spec.lifecycle = lifecycle;
    ctx.store
        .put_if_revision("write cell lifecycle", &key, &encode(&spec), revision)
        .await?;
    tracing::info!(
        cell,
        lifecycle = lifecycle.as_str(),
        "cell lifecycle changed"
    );
    Ok(())
}

/// Starts a move: clears what an earlier, abandoned move may have left on
/// the destinations, then records the move (dual-write) and runs it.
pub async fn start(ctx: &MoveContext, tenant: &str, to: Vec<String>) -> Result<(), MoveError> {
    let Some((mut record, revision)) = read_record(ctx, tenant).await? else {
        return Ok(());
    };
    if record.moving.is_some() {
        return run(ctx, tenant).await;
    }
    let view = ctx.cluster.snapshot();
    for dest in to.iter().filter(|c| !record.members.contains(c)) {
        // Nothing routes to a destination yet: whatever it holds is left over.
        if ctx.cells.count(&view, dest, tenant).await? > 0 {
            ctx.cells.delete_all(&view, dest, tenant).await?;
        }
    }
    record.leaving.retain(|l| !to.contains(&l.cell));
    record.moving = Some(Move::new(to, MoveStep::DualWrite, now_ms()));
    record.updated_at_ms = now_ms();
    if write_record(ctx, tenant, &record, revision)
        .await?
        .is_none()
    {
        return Ok(());
    }
    ctx.metrics.moves_started.inc();
    tracing::info!(tenant, from = ?record.members, to = ?record.moving.as_ref().map(|m| &m.to), "move started");
    run(ctx, tenant).await
}

/// Carries a recorded move on from its step until it flips or rolls back.
pub async fn run(ctx: &MoveContext, tenant: &str) -> Result<(), MoveError> {
    loop {
        let Some((record, revision)) = read_record(ctx, tenant).await? else {
            return Ok(());
        };
        let Some(m) = record.moving.clone() else {
            return Ok(());
        };
        let outcome = match m.step {
            MoveStep::DualWrite => ctx
                .routers_at(revision)
                .await
                .map(|()| Next::Step(MoveStep::Copy)),
            MoveStep::Copy => copy(ctx, tenant, &record).await,
            MoveStep::Verify => super::verify::verify(ctx, tenant, &record).await,
        };
        // The step may have recorded progress meanwhile: apply its outcome
        // to the record as it is now, if the move is still the same one at
        // the same step.
        let Some((record, revision)) = read_record(ctx, tenant).await? else {
            return Ok(());
        };
        let mut next = record.clone();
        next.updated_at_ms = now_ms();
        let Some(moving) = next
            .moving
            .as_mut()
            .filter(|n| n.to == m.to && n.step == m.step)
        else {
            continue;
        };
        match outcome {
            Ok(Next::Step(step)) => {
                moving.step = step;
                moving.failures = 0;
                moving.last_error = None;
            }
            Ok(Next::Copied {
                source,
                total,
                copied,
            }) => {
                moving.step = MoveStep::Verify;
                moving.source = Some(source);
                moving.total_points = total;
                moving.copied_points = copied;
                moving.failures = 0;
                moving.last_error = None;
            }
            Ok(Next::Flip) => {
                let to = moving.to.clone();
                let leaving_after = now_ms() + ctx.settings.cleanup_grace.as_millis() as u64;
                for old in &record.members {
                    if !to.contains(old) && !next.leaving.iter().any(|l| &l.cell == old) {
                        next.leaving.push(Leaving {
                            cell: old.clone(),
                            after_ms: leaving_after,
                        });
                    }
                }
                next.leaving.retain(|l| !to.contains(&l.cell));
                next.members = to;
                next.moving = None;
                next.epoch += 1;
                if write_record(ctx, tenant, &next, revision).await?.is_some() {
                    ctx.metrics.moves_completed.inc();
                    tracing::info!(tenant, members = ?next.members, epoch = next.epoch, "move flipped");
                    return Ok(());
                }
                continue;
            }
            Ok(Next::Again(why)) => {
                // Not a failure (a write landed between the two exports);
                // bounded like one all the same.
                moving.step = MoveStep::Copy;
                moving.failures += 1;
                moving.last_error = Some(why);
            }
            Err(e) => {
                tracing::warn!(tenant, step = m.step.as_str(), error = %e, "move step failed");
                moving.failures += 1;
                moving.last_error = Some(e.to_string());
            }
        }
        if moving.failures >= MAX_FAILURES {
            return roll_back(ctx, tenant, record, revision).await;
        }
        let failures = moving.failures;
        let step = moving.step;
        let written = write_record(ctx, tenant, &next, revision).await?;
        tracing::debug!(
            tenant,
            step = step.as_str(),
            written = written.is_some(),
            "move step recorded"
        );
        if failures > 0 {
            tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(failures.min(5))).await;
        }
    }
}

/// Abandons a move: the committed set stays, the destinations' copies go
/// after the grace period.
async fn roll_back(
    ctx: &MoveContext,
    tenant: &str,
    mut record: PlacementRecord,
    revision: i64,
) -> Result<(), MoveError> {
    let Some(m) = record.moving.take() else {
        return Ok(());
    };
    let after_ms = now_ms() + ctx.settings.cleanup_grace.as_millis() as u64;
    for dest in m.destinations(&record.members) {
        if !record.leaving.iter().any(|l| l.cell == dest) {
            record.leaving.push(Leaving {
                cell: dest.to_owned(),
                after_ms,
            });
        }
    }
    record.updated_at_ms = now_ms();
    if write_record(ctx, tenant, &record, revision)
        .await?
        .is_some()
    {
        ctx.metrics.moves_rolled_back.inc();
        tracing::warn!(tenant, error = ?m.last_error, "move rolled back");
    }
    Ok(())
}

pub(super) enum Next {
    Step(MoveStep),
    Copied {
        source: String,
        total: u64,
        copied: u64,
    },
    /// Verified: commit the new set.
    Flip,
    /// Verification found the sides apart: copy again.
    Again(String),
}

/// A live member that owes nothing for the tenant: it holds every write
/// acknowledged for it.
async fn choose_source(
    ctx: &MoveContext,
    view: &ClusterView,
    tenant: &str,
    members: &[String],
) -> Result<String, MoveError> {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        for cell in members {
            let alive = view.cells.get(cell).is_some_and(|c| c.is_serving());
            if alive && !owes_writes(ctx, cell, tenant).await? {
                return Ok(cell.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(MoveError::Waiting(format!(
                "no live member of {members:?} is free of pending writes for {tenant}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `cell` still has writes for `tenant` to apply: hints routers
/// hold for it, or queued asynchronous ingestion jobs.
pub(super) async fn owes_writes(
    ctx: &MoveContext,
    cell: &str,
    tenant: &str,
) -> Result<bool, MoveError> {
    let Some(redis) = &ctx.redis else {
        return Ok(false);
    };
    let mut conn = redis.clone();
    for (stream, field) in [(hint_stream(cell), "t"), (ingest_stream(cell), "tenant")] {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(|e| MoveError::Redis(e.to_string()))?;
        let owes = reply.ids.iter().any(|entry| {
            entry
                .map
                .get(field)
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .is_some_and(|t| t == tenant)
        });
        if owes {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn copy(
    ctx: &MoveContext,
    tenant: &str,
    record: &PlacementRecord,
) -> Result<Next, MoveError> {
    let Some(m) = &record.moving else {
        return Ok(Next::Step(MoveStep::Copy));
    };
    let view = ctx.cluster.snapshot();
    let source = choose_source(ctx, &view, tenant, &record.members).await?;
    let destinations: Vec<String> = m.destinations(&record.members).map(str::to_owned).collect();
    let total = ctx.cells.count(&view, &source, tenant).await?;
    let started = tokio::time::Instant::now();
    let rate = ctx.settings.copy_points_per_second.max(1) as f64;
    let mut copied = 0u64;
    let mut batch: Vec<u8> = Vec::new();
    let mut lines = 0usize;
    let mut batches = 0u64;
    record_progress(ctx, tenant, &source, 0, total * destinations.len() as u64).await?;
    let mut export = ctx.cells.export(&view, &source, tenant).await?;
    loop {
        let line = export.next().await?;
        let end = line.is_none();
        if let Some(line) = line {
            batch.extend_from_slice(&line);
            lines += 1;
        }
        if lines >= COPY_BATCH || (end && lines > 0) {
            let body = std::mem::take(&mut batch);
            for dest in &destinations {
                ctx.cells.import(&view, dest, tenant, body.clone()).await?;
            }
            ctx.metrics
                .points_copied
                .inc_by((lines * destinations.len()) as u64);
            copied += lines as u64;
            lines = 0;
            batches += 1;
            if batches.is_multiple_of(PROGRESS_EVERY) {
                let fanout = destinations.len() as u64;
                record_progress(ctx, tenant, &source, copied * fanout, total * fanout).await?;
            }
            // The copy-rate cap: no faster than `rate` points a second.
            tokio::time::sleep_until(started + Duration::from_secs_f64(copied as f64 / rate)).await;
        }
        if end {
            break;
        }
    }
    tracing::info!(tenant, %source, points = copied, ?destinations, "points copied");
    Ok(Next::Copied {
        source,
        total: total * destinations.len() as u64,
        copied: copied * destinations.len() as u64,
    })
}

/// Records where a copy reads from and how far it has got (points written,
/// summed over the destinations), for `cellctl` and anyone else watching etcd.
async fn record_progress(
    ctx: &MoveContext,
    tenant: &str,
    source: &str,
    copied: u64,
    total: u64,
) -> Result<(), MoveError> {
    let Some((mut record, revision)) = read_record(ctx, tenant).await? else {
        return Ok(());
    };
    if let Some(m) = record.moving.as_mut() {
        m.source = Some(source.to_owned());
        m.copied_points = copied;
        m.total_points = total;
        record.updated_at_ms = now_ms();
        write_record(ctx, tenant, &record, revision).await?;
    }
    Ok(())
}

/// Deletes the tenant's points on a cell that left its replica set, once
/// every router routes by a placement without it; then forgets the entry.
pub async fn clean_up(ctx: &MoveContext, tenant: &str, cell: &str) -> Result<(), MoveError> {
    let view = ctx.cluster.snapshot();
    ctx.routers_at(view.placement_revision).await?;
    let Some((mut record, revision)) = read_record(ctx, tenant).await? else {
        return Ok(());
    };
    if record.write_set().contains(&cell) {
        // Back in the replica set since: its points are wanted again.
        record.leaving.retain(|l| l.cell != cell);
        write_record(ctx, tenant, &record, revision).await?;
        return Ok(());
    }
    let view = ctx.cluster.snapshot();
    let gone = view
        .cells
        .get(cell)
        .and_then(|c| c.lifecycle())
        .is_none_or(|l| l == Lifecycle::Removed);
    if !gone {
        ctx.cells.delete_all(&view, cell, tenant).await?;
    }
    record.leaving.retain(|l| l.cell != cell);
    record.updated_at_ms = now_ms();
    if write_record(ctx, tenant, &record, revision)
        .await?
        .is_some()
    {
        tracing::info!(tenant, cell, "points removed from a cell that left");
    }
    Ok(())
}

/// Deletes the placement record of a deleted tenant once no cell holds its
/// points, unless the record changed since it was read.
pub async fn forget(ctx: &MoveContext, tenant: &str) -> Result<(), MoveError> {
    let Some((record, revision)) = read_record(ctx, tenant).await? else {
        return Ok(());
    };
    if !(record.members.is_empty() && record.moving.is_none() && record.leaving.is_empty()) {
        return Ok(());
    }
    if ctx
        .store
        .delete_if_revision("forget placement", &ctx.keys.placement(tenant), revision)
        .await?
    {
        tracing::info!(tenant, "deleted tenant's points are gone from every cell");
    }
    Ok(())
}
