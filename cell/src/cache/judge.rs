//! The cache's decision for one candidate: the same function serves live
//! lookups and `cellctl cache eval`, so what operators measure is what runs.

use super::guard::{Rejection, verify};
use super::normalise;
use crate::embed::cosine;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Serve the cached answer.
    Hit { similarity: f32, exact: bool },
    /// Not similar enough.
    Below { similarity: f32 },
    /// Similar enough, but the guard found a difference that changes the answer.
    Rejected { similarity: f32, reason: Rejection },
}

impl Judgement {
    pub fn is_hit(&self) -> bool {
        matches!(self, Judgement::Hit { .. })
    }

    pub fn similarity(&self) -> f32 {
        match *self {
            Judgement::Hit { similarity, .. }
            | Judgement::Below { similarity }
            | Judgement::Rejected { similarity, .. } => similarity,
        }
    }
}

/// Whether the answer cached for `cached` may be served for `asked`.
pub fn judge(
    cached: &str,
    cached_embedding: &[f32],
    asked: &str,
    asked_embedding: &[f32],
    threshold: f32,
) -> Judgement {
    if normalise(cached) == normalise(asked) {
        return Judgement::Hit {
            similarity: 1.0,
            exact: true,
        };
    }
    let similarity = cosine(cached_embedding, asked_embedding);
    if similarity < threshold {
        return Judgement::Below { similarity };
    }
    match verify(cached, asked) {
        Ok(()) => Judgement::Hit {
            similarity,
            exact: false,
        },
        Err(reason) => Judgement::Rejected { similarity, reason },
    }
}
