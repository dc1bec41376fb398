//! Combining and cleaning retrieval results: reciprocal-rank fusion of
//! several ranked lists, and collapsing chunks that say the same thing.

use std::collections::{HashMap, HashSet};

use super::Hit;

/// Fuses ranked lists by reciprocal rank (Cormack et al., 2009): a chunk
/// scores Σ 1 / (k + rank) over the lists it appears in (rank from 1).
/// Returns the best `limit`, each scored by its fused score; ties keep the
/// order of first appearance.
pub fn reciprocal_rank(lists: &[Vec<Hit>], k: f32, limit: usize) -> Vec<Hit> {
    let mut fused: Vec<(f32, Hit)> = Vec::new();
    let mut position: HashMap<(String, u32), usize> = HashMap::new();
    for list in lists {
        for (rank, hit) in list.iter().enumerate() {
            let contribution = 1.0 / (k + rank as f32 + 1.0);
            let key = (hit.document_id.clone(), hit.chunk);
            match position.get(&key) {
                Some(&i) => fused[i].0 += contribution,
                None => {
                    position.insert(key, fused.len());
                    fused.push((contribution, hit.clone()));
                }
            }
        }
    }
    // Stable: equal scores keep their first-seen order.
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    fused
        .into_iter()
        .take(limit)
        .map(|(score, mut hit)| {
            hit.score = score;
            hit
        })
        .collect()
}

/// Words of a chunk, lowercased, for near-duplicate detection.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Jaccard similarity of two word sets.
fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let shared = a.intersection(b).count();
    shared as f32 / (a.len() + b.len() - shared) as f32
}

/// Two chunks sharing at least this share of their words say the same thing.
pub const NEAR_DUPLICATE: f32 = 0.85;

/// Drops every hit whose words mostly repeat a better-ranked hit's (the same
/// paragraph ingested twice, boilerplate, overlapping chunks), then keeps
/// the best `limit`. The order of the survivors is unchanged.
pub fn collapse_near_duplicates(hits: Vec<Hit>, limit: usize) -> Vec<Hit> {
    let mut kept: Vec<(HashSet<String>, Hit)> = Vec::with_capacity(limit);
    for hit in hits {
        if kept.len() == limit {
            break;
        }
        let w = words(&hit.text);
        if kept
            .iter()
            .any(|(seen, _)| jaccard(seen, &w) >= NEAR_DUPLICATE)
        {
            continue;
        }
        kept.push((w, hit));
    }
    kept.into_iter().map(|(_, hit)| hit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(doc: &str, chunk: u32, text: &str) -> Hit {
        Hit {
            document_id: doc.into(),
            chunk,
            text: text.into(),
            score: 0.0,
            metadata: serde_json::Value::Null,
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.document_id.as_str()).collect()
    }

    #[test]
    fn fusion_rewards_agreement_between_lists() {
        let dense = vec![hit("a", 0, ""), hit("b", 0, ""), hit("c", 0, "")];
        let lexical = vec![hit("c", 0, ""), hit("d", 0, ""), hit("b", 0, "")];
        let fused = reciprocal_rank(&[dense, lexical], 60.0, 3);
        // b: 1/62 + 1/63, c: 1/63 + 1/61, a: 1/61 only.
        assert_eq!(ids(&fused), ["c", "b", "a"]);
        let expected = 1.0 / 63.0 + 1.0 / 61.0;
        assert!((fused[0].score - expected).abs() < 1e-6);
    }

    #[test]
    fn fusion_tells_chunks_of_one_document_apart() {
        let fused = reciprocal_rank(&[vec![hit("a", 0, ""), hit("a", 1, "")]], 60.0, 5);
        assert_eq!(fused.len(), 2);
    }

    #[test]
    fn near_duplicates_collapse_onto_the_better_hit() {
        let hits = vec![
            hit("a", 0, "Refunds are issued within 30 days of purchase."),
            hit("b", 0, "Refunds are issued within 30 days of the purchase!"),
            hit("c", 0, "Shipping takes three to five days."),
            hit("d", 0, "Gift cards cannot be refunded."),
        ];
        let kept = collapse_near_duplicates(hits.clone(), 10);
        assert_eq!(ids(&kept), ["a", "c", "d"]);
        assert_eq!(ids(&collapse_near_duplicates(hits, 2)), ["a", "c"]);
    }
}
