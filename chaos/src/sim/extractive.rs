//! The simulator's "model": an extractive answerer. It reads the numbered
//! passages and the question out of the prompt, as a real model would, and
//! answers with the passage sentences that best overlap the question, citing
//! them as `[n]`. Answers are therefore grounded in real text, and a prompt
//! whose passages do not touch the question gets "I don't know".
//! A prompt that adds an answer between `<answer>` and `</answer>` lines asks
//! for a judge's verdict instead: `SUPPORTED` when every sentence of the
//! answer follows from the passages, else `UNSUPPORTED`.
//! A region whose faults say `confabulate` answers every prompt with
//! [`CONFABULATION`] instead, citing a passage it does not follow from.

use std::collections::HashSet;

/// What the simulator says when nothing in the context answers the question.
pub const NO_ANSWER: &str = "I don't know: the provided documents do not answer this question.";

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "were", "be", "been", "to", "of", "in", "on", "for",
    "and", "or", "with", "what", "which", "who", "how", "why", "when", "where", "do", "does",
    "did", "can", "could", "i", "you", "it", "this", "that", "these", "those", "as", "at", "by",
    "from", "me", "my", "your", "about", "tell", "there", "their", "its", "has", "have", "not",
];

/// A passage as numbered in the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub number: usize,
    pub text: String,
}

/// Pulls `[n] text` passages and the `Question:` line out of a prompt.
pub fn parse_prompt(prompt: &str) -> (Vec<Passage>, String) {
    let mut passages: Vec<Passage> = Vec::new();
    let mut question = String::new();
    let mut in_question = false;
    for line in prompt.lines() {
        let trimmed = line.trim();
        if let Some(q) = trimmed.strip_prefix("Question:") {
            question = q.trim().to_owned();
            in_question = true;
            continue;
        }
        if in_question {
            if !trimmed.is_empty() {
                question.push(' ');
                question.push_str(trimmed);
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some((num, text)) = rest.split_once(']')
            && let Ok(number) = num.parse::<usize>()
        {
            passages.push(Passage {
                number,
                text: text.trim().to_owned(),
            });
        } else if let Some(last) = passages.last_mut()
            && !trimmed.is_empty()
            && !trimmed.starts_with('<')
        {
            last.text.push(' ');
            last.text.push_str(trimmed);
        }
    }
    (passages, question)
}

/// A crude stem, enough to meet "refund" with "refunds" or "requested".
fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    for suffix in ["ing", "ed", "es", "s"] {
        if w.len() > suffix.len() + 3
            && let Some(base) = w.strip_suffix(suffix)
        {
            return base.to_owned();
        }
    }
    w
}

fn terms(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .filter(|w| !STOPWORDS.contains(&w.to_lowercase().as_str()))
        .map(stem)
        .collect()
}

/// Sentences this short are headings, not answers.
const MIN_ANSWER_WORDS: usize = 4;

fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let end_of_sentence = matches!(b, b'.' | b'!' | b'?')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if end_of_sentence {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

/// Answers `question` from `passages`: up to two best-overlapping sentences, cited.
pub fn answer(passages: &[Passage], question: &str) -> String {
    let wanted = terms(question);
    let mut scored: Vec<(usize, usize, &str)> = Vec::new();
    for p in passages {
        for s in sentences(&p.text) {
            if s.split_whitespace().count() < MIN_ANSWER_WORDS {
                continue;
            }
            let overlap = terms(s).intersection(&wanted).count();
            if overlap > 0 {
                scored.push((overlap, p.number, s));
            }
        }
    }
    // Deterministic: the best overlap first, then prompt order.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let best: Vec<String> = scored
        .iter()
        .take(2)
        .map(|(_, n, s)| {
            let s = s.trim_end_matches(['.', '!', '?']);
            format!("{s} [{n}].")
        })
        .collect();
    if best.is_empty() {
        NO_ANSWER.to_owned()
    } else {
        best.join(" ")
    }
}

/// The lines around the answer a judge's prompt asks about.
pub const ANSWER_OPEN: &str = "<answer>";
pub const ANSWER_CLOSE: &str = "</answer>";
/// A judge's verdicts: the whole of its reply.
pub const SUPPORTED: &str = "SUPPORTED";
pub const UNSUPPORTED: &str = "UNSUPPORTED";

/// Share of a sentence's terms that must appear in the passages for the
/// sentence to count as following from them.
const SUPPORTED_SHARE: f64 = 0.5;

/// `text` without its `[n]` citation marks.
fn without_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if after[..close].chars().all(|c| c.is_ascii_digit()) => {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `judged` follows from `passages`: each of its sentences, citation
/// marks aside, shares at least half of its terms and every number with the
/// passages.
pub fn verdict(passages: &[Passage], judged: &str) -> &'static str {
    let known: HashSet<String> = passages.iter().flat_map(|p| terms(&p.text)).collect();
    let mut any = false;
    for sentence in sentences(judged) {
        let words = terms(&without_citations(sentence));
        if words.is_empty() {
            continue;
        }
        any = true;
        // A number the passages never give is a claim they do not support.
        let is_number = |t: &String| t.chars().all(|c| c.is_ascii_digit());
        if words.iter().any(|t| is_number(t) && !known.contains(t)) {
            return UNSUPPORTED;
        }
        let found = words.iter().filter(|t| known.contains(*t)).count();
        if (found as f64) < SUPPORTED_SHARE * words.len() as f64 {
            return UNSUPPORTED;
        }
    }
    if any { SUPPORTED } else { UNSUPPORTED }
}

/// Rough token count for `usage`: words and punctuation, as a tokenizer would split.
pub fn count_tokens(text: &str) -> u32 {
    text.split_whitespace()
        .map(|w| 1 + w.chars().filter(|c| c.is_ascii_punctuation()).count() as u32)
        .sum()
}

/// What a confabulating region says to every prompt: a claim no passage
/// makes, with a citation that looks like support.
pub const CONFABULATION: &str =
    "Our records show that the answer is 42 units, confirmed by the board in 1987 [1].";

/// A simulated model's reply to a prompt: the extractive answer to the
/// last user message (or a judge's verdict, or a confabulation), cut to
/// `max_tokens` words, with token counts over every message of the prompt.
pub struct Reply {
    pub content: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

pub fn reply(
    prompt_messages: &[String],
    user: &str,
    max_tokens: Option<u32>,
    confabulate: bool,
) -> Reply {
    let judge = user.split_once(&format!("\n{ANSWER_OPEN}\n"));
    let mut content = match judge {
        _ if confabulate => CONFABULATION.to_owned(),
        // A judge's prompt: passages, then the answer to be judged on lines
        // of its own (a passage's text can hold the marker, not a line).
        Some((context, judged)) => {
            let (passages, _) = parse_prompt(context);
            let judged = judged.split_once(ANSWER_CLOSE).map_or(judged, |(a, _)| a);
            verdict(&passages, judged).to_owned()
        }
        None => {
            let (passages, question) = parse_prompt(user);
            answer(&passages, &question)
        }
    };
    if let Some(max) = max_tokens {
        let words: Vec<&str> = content.split_whitespace().collect();
        if words.len() > max as usize {
            content = words[..max as usize].join(" ");
        }
    }
    Reply {
        prompt_tokens: prompt_messages.iter().map(|t| count_tokens(t)).sum(),
        completion_tokens: count_tokens(&content),
        content,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "Use the passages.\n<context>\n[1] Refunds are issued within 14 days. Shipping is free.\n[2] The office is in Paris.\n</context>\nQuestion: How long do refunds take?";

    #[test]
    fn parses_passages_and_question() {
        let (passages, question) = parse_prompt(PROMPT);
        assert_eq!(passages.len(), 2);
        assert_eq!(passages[1].text, "The office is in Paris.");
        assert_eq!(question, "How long do refunds take?");
    }

    #[test]
    fn answers_with_cited_sentence() {
        let (passages, question) = parse_prompt(PROMPT);
        assert_eq!(
            answer(&passages, &question),
            "Refunds are issued within 14 days [1]."
        );
    }

    #[test]
    fn matches_word_forms_and_skips_headings() {
        let passages = vec![Passage {
            number: 1,
            text: "Refund policy. Refunds can be requested within 90 days.".into(),
        }];
        assert_eq!(
            answer(&passages, "How long do I have to request a refund?"),
            "Refunds can be requested within 90 days [1]."
        );
    }

    #[test]
    fn judges_whether_an_answer_follows_from_the_passages() {
        let judge = |judged: &str| {
            let prompt = format!("{PROMPT}\n{ANSWER_OPEN}\n{judged}\n{ANSWER_CLOSE}\nVerdict?");
            reply(std::slice::from_ref(&prompt), &prompt, None, false).content
        };
        assert_eq!(judge("Refunds are issued within 14 days [1]."), SUPPORTED);
        assert_eq!(
            judge("Refunds are issued within 14 days [1]. Delivery by drone costs extra."),
            UNSUPPORTED
        );
        assert_eq!(judge("Refunds are issued within 30 days [1]."), UNSUPPORTED);
        assert_eq!(judge("The moon orbits slowly."), UNSUPPORTED);
        assert_eq!(judge(""), UNSUPPORTED);
        // The confabulation is what a judge calls unsupported.
        assert_eq!(judge(CONFABULATION), UNSUPPORTED);
    }

    #[test]
    fn a_confabulating_region_ignores_the_passages() {
        let confabulated = reply(std::slice::from_ref(&PROMPT.to_owned()), PROMPT, None, true);
        assert_eq!(confabulated.content, CONFABULATION);
        assert_eq!(confabulated.completion_tokens, count_tokens(CONFABULATION));
    }

    #[test]
    fn says_it_does_not_know() {
        let (passages, _) = parse_prompt(PROMPT);
        assert_eq!(answer(&passages, "What colour is the sky?"), NO_ANSWER);
    }
}
