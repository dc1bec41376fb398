//! Committed placement: which cells hold each tenant, and the move that is
//! changing it. Only the control-plane leader writes these records; routers
//! route by them, so every router flips at the same etcd revision.

use serde::{Deserialize, Serialize};

/// `placement/<tenant>`: the tenant's committed replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// The committed replica set, home first: reads go to these cells, in
    /// this order.
    pub members: Vec<String>,
    /// Bumped by every flip.
    pub epoch: u64,
    /// A move in progress, if any: while it lasts, writes also reach
    /// `moving.to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
    /// Cells that left the replica set and still hold the tenant's points,
    /// deleted once no router can still be routing to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<Leaving>,
    pub updated_at_ms: u64,
}

impl PlacementRecord {
    /// Every cell a write for the tenant must reach: the members, then the
    /// cells a move is bringing in.
    pub fn write_set(&self) -> Vec<&str> {
        let mut cells: Vec<&str> = self.members.iter().map(String::as_str).collect();
        if let Some(m) = &self.moving {
            for c in &m.to {
                if !cells.contains(&c.as_str()) {
                    cells.push(c);
                }
            }
        }
        cells
    }

    /// Whether `cell` is a member, a move's destination, or still holds points.
    pub fn involves(&self, cell: &str) -> bool {
        self.write_set().contains(&cell) || self.leaving.iter().any(|l| l.cell == cell)
    }
}

/// The steps of a move, in order. The flip (the new replica set committed)
/// ends the move; clean-up of the cells that left follows in `leaving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveStep {
    /// Writes reach old and new members; waiting for every router to route so.
    DualWrite,
    /// Points being streamed from a current member to the new ones.
    Copy,
    /// Point ids and checksums being compared on both sides.
    Verify,
}

impl MoveStep {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStep::DualWrite => "dual_write",
            MoveStep::Copy => "copy",
            MoveStep::Verify => "verify",
        }
    }
}

/// A tenant on its way from `members` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The replica set to commit, home first.
    pub to: Vec<String>,
    pub step: MoveStep,
    pub started_at_ms: u64,
    /// The member points are copied from, once chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Points the source held when the copy began.
    #[serde(default)]
    pub total_points: u64,
    /// Points written to the new members so far (per destination, summed).
    #[serde(default)]
    pub copied_points: u64,
    /// Attempts of the current step that failed; the move rolls back after a few.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Move {
    /// A move to `to` at `step`, with no copy progress yet.
    pub fn new(to: Vec<String>, step: MoveStep, started_at_ms: u64) -> Self {
        Self {
            to,
            step,
            started_at_ms,
            source: None,
            total_points: 0,
            copied_points: 0,
            failures: 0,
            last_error: None,
        }
    }

    /// The cells the move brings in.
    pub fn destinations<'a>(&'a self, members: &'a [String]) -> impl Iterator<Item = &'a str> {
        self.to
            .iter()
            .filter(move |c| !members.contains(c))
            .map(String::as_str)
    }
}

/// A cell that left a tenant's replica set and still holds its points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaving {
    pub cell: String,
    /// Not deleted before this time, so that a router whose watch lags
    /// still finds the points where it looks.
    pub after_ms: u64,
}

/// `routers/<id>`, bound to the router's lease: the placement revision the
/// router routes by, reported only once no write it began under an older
/// placement is still in flight. A move copies only after every router
/// reports the revision that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterPresence {
    pub placement_revision: i64,
    pub at_ms: u64,
}

/// The Redis stream of writes a router still owes `cell` (durable hints).
pub fn hint_stream(cell: &str) -> String {
    format!("cn:hints:{cell}")
}

/// The Redis stream of `cell`'s queued asynchronous ingestion jobs.
pub fn ingest_stream(cell: &str) -> String {
    format!("cn:{{{cell}}}:ingest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_members_and_destinations_once() {
        let record = PlacementRecord {
            members: vec!["a".into(), "b".into()],
            epoch: 1,
            moving: Some(Move::new(vec!["c".into(), "a".into()], MoveStep::Copy, 0)),
            leaving: vec![Leaving {
                cell: "d".into(),
                after_ms: 0,
            }],
            updated_at_ms: 0,
        };
        assert_eq!(record.write_set(), ["a", "b", "c"]);
        let dest: Vec<&str> = record
            .moving
            .as_ref()
            .unwrap()
            .destinations(&record.members)
            .collect();
        assert_eq!(dest, ["c"]);
        assert!(record.involves("d"));
        assert!(!record.involves("e"));
    }
}
