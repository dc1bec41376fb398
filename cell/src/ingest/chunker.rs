//! Splits a document into chunks the embedder can take whole: sentence
//! boundaries where possible, at most `max_tokens` tokens as the model counts
//! them, and one sentence of overlap between neighbours so that a fact split
//! across a boundary is still retrievable. Every chunk is a contiguous slice
//! of the original text, so nothing is rewritten, lost or reordered.

use std::ops::Range;

/// Chunking limits.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// At most this many tokens per chunk (the model's limit is 256).
    pub max_tokens: usize,
    /// Sentences repeated at the start of the next chunk.
    pub overlap_sentences: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            // Below the model's 256 so that [CLS]/[SEP] still fit.
            max_tokens: 254,
            overlap_sentences: 1,
        }
    }
}

/// A chunk: its byte range in the document and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub range: Range<usize>,
    pub text: String,
}

/// Byte ranges of sentences: a sentence ends after `.`, `!`, `?` (or a
/// newline pair) followed by whitespace. Ranges cover the text without gaps
/// except whitespace between sentences.
fn sentence_ranges(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if start.is_none() {
            if c.is_whitespace() {
                continue;
            }
            start = Some(i);
        }
        let next = chars.peek().map(|&(_, n)| n);
        let ends = match c {
            '.' | '!' | '?' | '。' | '！' | '？' => next.is_none_or(char::is_whitespace),
            '\n' => next == Some('\n'),
            _ => false,
        };
        if ends && let Some(s) = start.take() {
            out.push(s..i + c.len_utf8());
        }
    }
    if let Some(s) = start {
        let end = text.trim_end().len();
        if end > s {
            out.push(s..end);
        }
    }
    out
}

/// Splits a range too long for one chunk at whitespace (or, for text with
/// none, at character boundaries) into pieces of at most `max_tokens`.
fn split_long(
    text: &str,
    range: Range<usize>,
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Range<usize>> {
    let mut pieces = Vec::new();
    let mut start = range.start;
    while start < range.end {
        // Grow the piece by whole words while it fits.
        let mut end = start;
        let mut cursor = start;
        for (off, c) in text[start..range.end].char_indices() {
            let at = start + off + c.len_utf8();
            if c.is_whitespace() || at == range.end {
                if count(text[start..at].trim_end()) <= max_tokens {
                    end = at;
                } else {
                    break;
                }
            }
            cursor = at;
        }
        if end == start {
            // One "word" exceeds the limit: cut it by characters.
            end = start;
            for (off, c) in text[start..cursor.max(start)].char_indices() {
                let at = start + off + c.len_utf8();
                if count(&text[start..at]) > max_tokens && end > start {
                    break;
                }
                end = at;
            }
            if end == start {
                end = range.end;
            }
        }
        let trimmed_end = start + text[start..end].trim_end().len();
        if trimmed_end > start {
            pieces.push(start..trimmed_end);
        }
        start = end;
        while start < range.end {
            let Some(c) = text[start..].chars().next() else {
                break;
            };
            if !c.is_whitespace() {
                break;
            }
            start += c.len_utf8();
        }
    }
    pieces
}

/// Chunks `text`. `count` counts tokens as the embedding model does.
pub fn chunk(text: &str, limits: ChunkLimits, count: &dyn Fn(&str) -> usize) -> Vec<Chunk> {
    let max = limits.max_tokens.max(1);
    let mut units: Vec<Range<usize>> = Vec::new();
    for r in sentence_ranges(text) {
        if count(&text[r.clone()]) <= max {
            units.push(r);
        } else {
            units.extend(split_long(text, r, max, count));
        }
    }
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < units.len() {
        let mut last = first;
        while last + 1 < units.len() {
            let candidate = units[first].start..units[last + 1].end;
            // Counting the joined text keeps the bound exact across joins.
            if count(&text[candidate]) > max {
                break;
            }
            last += 1;
        }
        let range = units[first].start..units[last].end;
        chunks.push(Chunk {
            text: text[range.clone()].to_owned(),
            range,
        });
        if last + 1 >= units.len() {
            break;
        }
        let overlap = limits.overlap_sentences.min(last - first);
        first = last + 1 - overlap;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    fn limits(max: usize) -> ChunkLimits {
        ChunkLimits {
            max_tokens: max,
            overlap_sentences: 1,
        }
    }

    #[test]
    fn short_text_is_one_chunk() {
        let c = chunk("One. Two three.", limits(10), &words);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "One. Two three.");
    }

    #[test]
    fn packs_with_overlap() {
        let text = "A b c. D e f. G h i. J k l.";
        let c = chunk(text, limits(6), &words);
        let texts: Vec<_> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["A b c. D e f.", "D e f. G h i.", "G h i. J k l."]);
    }

    #[test]
    fn long_sentence_is_split_at_words() {
        let text = "one two three four five six seven";
        let c = chunk(text, limits(3), &words);
        assert!(c.iter().all(|c| words(&c.text) <= 3), "{c:?}");
        let rejoined: Vec<&str> = c.iter().flat_map(|c| c.text.split_whitespace()).collect();
        assert_eq!(rejoined.join(" "), text);
    }

    #[test]
    fn unicode_is_safe() {
        let text = "Ünïcödé façade. 東京は大きい。 Ça va? Oui!";
        let c = chunk(text, limits(2), &words);
        for ch in &c {
            assert_eq!(&text[ch.range.clone()], ch.text);
        }
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk("   \n ", limits(5), &words).is_empty());
    }

    /// Random documents: words (ASCII, accented, CJK, emoji), sentence ends,
    /// and runs of spaces, tabs and newlines.
    fn random_text(rng: &mut rand::rngs::StdRng) -> String {
        use rand::Rng;
        const WORDS: &[&str] = &[
            "refund",
            "policy",
            "días",
            "naïve",
            "東京",
            "🚚",
            "x",
            "délivery",
            "ünïcödé",
            "ok",
            "a-b",
            "3.5",
            "e.g",
            "tl;dr",
        ];
        const ENDS: &[&str] = &[".", "!", "?", "", "", ""];
        const GAPS: &[&str] = &[" ", " ", " ", "  ", "\n", "\n\n", "\t", " \u{3000}"];
        let mut text = String::new();
        for _ in 0..rng.random_range(0..120) {
            text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            text.push_str(ENDS[rng.random_range(0..ENDS.len())]);
            text.push_str(GAPS[rng.random_range(0..GAPS.len())]);
        }
        text
    }

    #[test]
    fn property_chunks_are_slices_that_cover_the_text_within_bounds() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for case in 0..500 {
            let text = random_text(&mut rng);
            let max = 1 + case % 12;
            let chunks = chunk(&text, limits(max), &words);
            // Deterministic.
            assert_eq!(chunks, chunk(&text, limits(max), &words));
            let mut depth = vec![0u8; text.len()];
            let mut previous_start = None;
            for c in &chunks {
                // A contiguous slice on character boundaries, within the bound.
                assert_eq!(c.text, text[c.range.clone()], "case {case}");
                assert!(words(&c.text) <= max, "case {case}: {c:?}");
                assert!(!c.text.trim().is_empty(), "case {case}: empty chunk");
                // In document order, always moving forward.
                assert!(
                    previous_start.is_none_or(|p| c.range.start > p),
                    "case {case}"
                );
                previous_start = Some(c.range.start);
                for d in &mut depth[c.range.clone()] {
                    *d += 1;
                }
            }
            // Nothing lost: every non-space character is in some chunk.
            for (i, ch) in text.char_indices() {
                if !ch.is_whitespace() {
                    assert!(depth[i] >= 1, "case {case}: {ch:?} at {i} lost in {text:?}");
                }
                // Nothing repeated beyond the one-sentence overlap.
                assert!(
                    depth[i] <= 2,
                    "case {case}: byte {i} in {} chunks",
                    depth[i]
                );
            }
        }
    }
}
