//! How well an answer is supported by the passages it was given: each
//! sentence is compared with every retrieved passage by the share of its
//! content words the passage contains. A sentence's support is its best
//! passage's share; the answer's groundedness is the mean over sentences,
//! weighted by their length. Passages supporting a sentence at least
//! [`SENTENCE_SUPPORT`] become that sentence's citations. Lexical, cheap and
//! explainable; it catches answers that drift from their sources, not
//! subtle contradictions.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::cache::Citation;
use crate::vector::Hit;

/// A passage supports a sentence when it holds this share of its content words.
pub const SENTENCE_SUPPORT: f32 = 0.5;
/// Answers below this groundedness are flagged (and not cached).
pub const GROUNDED: f32 = 0.6;

/// Words too common to show support.
const STOPWORDS: &[&str] = &[
    "the", "and", "for", "are", "was", "were", "with", "that", "this", "from", "your", "you",
    "can", "will", "have", "has", "not", "but", "its", "our", "their", "they", "them", "any",
    "all", "per", "into", "than", "then", "there", "which", "what", "when", "where", "who", "how",
    "does", "did", "also", "only", "been", "being", "should", "would", "could",
];

/// One sentence of an answer and the passages that support it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceSupport {
    pub text: String,
    pub support: f32,
    pub citations: Vec<Citation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grounding {
    pub groundedness: f32,
    pub sentences: Vec<SentenceSupport>,
}

fn content_words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| {
            !w.is_empty()
                && (w.chars().count() >= 3 || w.chars().all(|c| c.is_ascii_digit()))
                && !STOPWORDS.contains(&w.as_str())
        })
        .collect()
}

/// Sentences of `text`, with citation markers like `[1]` removed.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        current.push(*c);
        let ends =
            matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if ends {
            out.push(std::mem::take(&mut current));
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| strip_markers(&s).trim().to_owned())
        .filter(|s| !content_words(s).is_empty())
        .collect()
}

fn strip_markers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open..].find(']') {
            Some(close)
                if rest[open + 1..open + close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                rest = &rest[open + close + 1..];
            }
            _ => {
                out.push('[');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How well `answer` is supported by `hits`.
pub fn assess(answer: &str, hits: &[Hit]) -> Grounding {
    let passages: Vec<HashSet<String>> = hits.iter().map(|h| content_words(&h.text)).collect();
    let mut weighted = 0.0f32;
    let mut total = 0usize;
    let mut out = Vec::new();
    for text in sentences(answer) {
        let words = content_words(&text);
        let shares: Vec<f32> = passages
            .iter()
            .map(|p| words.iter().filter(|w| p.contains(*w)).count() as f32 / words.len() as f32)
            .collect();
        let support = shares.iter().copied().fold(0.0f32, f32::max);
        weighted += support * words.len() as f32;
        total += words.len();
        let citations = hits
            .iter()
            .zip(&shares)
            .filter(|(_, s)| **s >= SENTENCE_SUPPORT)
            .map(|(h, _)| Citation {
                document_id: h.document_id.clone(),
                chunk: h.chunk,
                score: h.score,
            })
            .collect();
        out.push(SentenceSupport {
            text,
            support,
            citations,
        });
    }
    Grounding {
        groundedness: if total == 0 {
            0.0
        } else {
            weighted / total as f32
        },
        sentences: out,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn hit(id: &str, text: &str) -> Hit {
        Hit {
            document_id: id.into(),
            chunk: 0,
            text: text.into(),
            score: 0.8,
            metadata: Value::Null,
        }
    }

    #[test]
    fn supported_sentences_are_grounded_and_cited() {
        let hits = [
            hit(
                "shipping",
                "Orders ship from our warehouse in Lyon within two days.",
            ),
            hit("refunds", "Refunds are paid within five business days."),
        ];
        let g = assess(
            "Orders ship from the warehouse in Lyon [1]. Refunds are paid within five business days [2].",
            &hits,
        );
        assert!(g.groundedness > 0.9, "{g:?}");
        assert_eq!(g.sentences.len(), 2);
        assert_eq!(g.sentences[0].citations[0].document_id, "shipping");
        assert_eq!(g.sentences[1].citations[0].document_id, "refunds");
        assert!(!g.sentences[0].text.contains("[1]"));
    }

    #[test]
    fn invented_content_scores_low() {
        let hits = [hit("shipping", "Orders ship from our warehouse in Lyon.")];
        let g = assess(
            "Orders ship from Lyon. Premium members receive complimentary helicopter delivery anywhere.",
            &hits,
        );
        assert!(g.groundedness < GROUNDED, "{g:?}");
        assert!(g.sentences[1].citations.is_empty());
        assert!(assess("", &hits).groundedness == 0.0);
    }
}
