//! A move's verification: the same point ids, and the same digest of every
//! point's canonical JSON (text, metadata, vector), on the source and on each
//! destination.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::model::{MoveStep, PlacementRecord};
use crate::placement::cells::CellCallError;
use crate::placement::mover::{Next, owes_writes};
use crate::placement::{MoveContext, MoveError};
use crate::watch::ClusterView;

/// Every point of the tenant on `cell`, by (document, chunk), with a digest
/// of its canonical JSON (text, metadata and vector).
async fn digests(
    ctx: &MoveContext,
    view: &ClusterView,
    cell: &str,
    tenant: &str,
) -> Result<BTreeMap<(String, u64), [u8; 32]>, MoveError> {
    let mut out = BTreeMap::new();
    let mut export = ctx.cells.export(view, cell, tenant).await?;
    while let Some(line) = export.next().await? {
        let v: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| CellCallError::Failed {
                cell: cell.to_owned(),
                message: format!("unreadable exported point: {e}"),
            })?;
        let id = (
            v["document_id"].as_str().unwrap_or_default().to_owned(),
            v["chunk"].as_u64().unwrap_or(0),
        );
        let mut canonical = Vec::new();
        write_canonical(&v, &mut canonical);
        let digest: [u8; 32] = Sha256::digest(&canonical).into();
        out.insert(id, digest);
    }
    Ok(out)
}

/// JSON with every object's keys sorted, so the same point prints alike
/// whatever order a cell keeps its payload fields in.
fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::Value::from(k.as_str()).to_string().as_bytes());
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// One checksum over every point's id and digest, in id order.
pub fn checksum(points: &BTreeMap<(String, u64), [u8; 32]>) -> String {
    let mut h = Sha256::new();
    for ((doc, chunk), digest) in points {
        h.update(doc.as_bytes());
        h.update(chunk.to_le_bytes());
        h.update(digest);
    }
    hex::encode(&h.finalize()[..16])
}

pub(super) async fn verify(
    ctx: &MoveContext,
    tenant: &str,
    record: &PlacementRecord,
) -> Result<Next, MoveError> {
    let Some(m) = &record.moving else {
        return Ok(Next::Flip);
    };
    let view = ctx.cluster.snapshot();
    let source = match &m.source {
        Some(s) if record.members.contains(s) => s.clone(),
        _ => return Ok(Next::Step(MoveStep::Copy)),
    };
    let destinations: Vec<&str> = m.destinations(&record.members).collect();
    // Writes the destinations still owe would show as differences.
    for cell in std::iter::once(source.as_str()).chain(destinations.iter().copied()) {
        if owes_writes(ctx, cell, tenant).await? {
            return Ok(Next::Again(format!(
                "{cell} still owes writes for {tenant}"
            )));
        }
    }
    let mut verified = (0, String::new());
    for dest in &destinations {
        // The source is read before and after the destination: a point on
        // the destination that neither read of the source has is one the
        // copy read before a delete reached the source and wrote after the
        // delete reached the destination (the copy only adds). Such a
        // document is deleted here, and the next copy brings back whatever of
        // it the source still has.
        let before = digests(ctx, &view, &source, tenant).await?;
        let have = digests(ctx, &view, dest, tenant).await?;
        let after = digests(ctx, &view, &source, tenant).await?;
        if have == before && before == after {
            verified = (after.len(), checksum(&after));
            continue;
        }
        let missing = after.keys().filter(|k| !have.contains_key(*k)).count();
        let extra: BTreeSet<&str> = have
            .keys()
            .filter(|k| !before.contains_key(*k) && !after.contains_key(*k))
            .map(|(doc, _)| doc.as_str())
            .collect();
        for doc in &extra {
            ctx.cells.delete_document(&view, dest, tenant, doc).await?;
        }
        return Ok(Next::Again(format!(
            "{dest} differs from {source}: {missing} points missing, {} documents extra, checksums {} and {}",
            extra.len(),
            checksum(&have),
            checksum(&after)
        )));
    }
    let (points, checksum) = verified;
    tracing::info!(tenant, points, checksum, "move verified");
    Ok(Next::Flip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_only() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[2,1]},"b":1}"#).unwrap();
        let print = |v: &serde_json::Value| {
            let mut out = Vec::new();
            write_canonical(v, &mut out);
            out
        };
        assert_eq!(print(&a), print(&b));
        assert_ne!(print(&a), print(&c));
        assert_eq!(print(&a), br#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn checksums_tell_points_apart() {
        let mut points = BTreeMap::new();
        points.insert(("doc".to_owned(), 0), [1u8; 32]);
        let one = checksum(&points);
        points.insert(("doc".to_owned(), 1), [2u8; 32]);
        let two = checksum(&points);
        assert_ne!(one, two);
        points.insert(("doc".to_owned(), 1), [3u8; 32]);
        assert_ne!(two, checksum(&points));
    }
}
