//! The verification guard: cosine similarity alone serves wrong answers for
//! questions that differ in a negation, a named entity, a number or date, or
//! a scope ("for all users" / "for admins"), because such questions embed
//! almost identically. Before a vector-tier candidate is served, the guard
//! compares the cached question with the new one on exactly those features
//! and rejects the candidate when they differ.
//!
//! Method (deterministic, no second model):
//! 1. numbers: digits, number words, ordinals, amounts and versions, as a multiset;
//! 2. dates and times: weekdays, months, quarters, relative days, times of day;
//! 3. negation: negators and exclusion words ("not", "n't", "no", "never",
//!    "without", "except", "excluding", "no longer" …);
//! 4. scope: words that say to whom or how far a question applies (roles,
//!    audiences, extents, periods, regions, minimum/maximum, first/last);
//! 5. entities: capitalised words past the first, acronyms, words mixing
//!    letters and digits or case (macOS, S3), and quoted text;
//! 6. any other content word present in one question and not the other,
//!    after light stemming and a small table of equivalent words: a
//!    substituted content word usually changes the question.
//!
//! A candidate passes only if all six agree. The guard errs toward a miss:
//! a miss costs one LLM call, a wrong hit costs a wrong answer.

use std::collections::BTreeSet;

mod lexicon;

use lexicon::{
    AMBIGUOUS_DATE, ANTONYMS, DATE_ALIASES, DATE_WORDS, EQUIVALENT, FILLER, NEGATIVE_PREFIXES,
    NEGATORS, NUMBER_WORDS, SCOPE_ALIASES, SCOPE_WORDS, STOPWORDS,
};

/// Why the guard rejected a candidate (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    Number,
    Date,
    Negation,
    Scope,
    Entity,
    Content,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Number => "number",
            Rejection::Date => "date",
            Rejection::Negation => "negation",
            Rejection::Scope => "scope",
            Rejection::Entity => "entity",
            Rejection::Content => "content",
        }
    }
}

/// A crude English stem: enough that "refunds", "refunded" and "refunding" meet.
fn stem(word: &str) -> String {
    let mut w = word.to_owned();
    for suffix in [
        "ations", "ation", "ments", "ment", "ings", "ing", "edly", "ed", "ies", "es", "s", "ly",
    ] {
        if w.len() >= suffix.len() + 3
            && let Some(base) = w.strip_suffix(suffix)
        {
            w = match suffix {
                "ies" => format!("{base}y"),
                _ => base.to_owned(),
            };
            break;
        }
    }
    // "include"/"includ(ed)", "stop"/"stopp(ed)".
    if w.len() > 4 && w.ends_with('e') {
        w.pop();
    }
    let b = w.as_bytes();
    if b.len() >= 4 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiouslz".contains(&b[b.len() - 1]) {
        w.pop();
    }
    w
}

/// The canonical member of a group of words that mean the same here.
fn canonical<'a>(word: &'a str, groups: &[(&'a str, &[&str])]) -> &'a str {
    groups
        .iter()
        .find(|(_, members)| members.contains(&word))
        .map(|(c, _)| *c)
        .unwrap_or(word)
}

#[derive(Debug, Default, PartialEq)]
struct Features {
    numbers: Vec<String>,
    dates: BTreeSet<String>,
    negations: BTreeSet<String>,
    scope: BTreeSet<String>,
    entities: BTreeSet<String>,
    content: BTreeSet<String>,
    /// "off", and "out" against "in": "turn notifications off", "check out".
    particles: BTreeSet<String>,
    /// Every word in order: the stem for content words, `None` for others.
    sequence: Vec<Option<String>>,
}

/// Splits into words, keeping contractions' "n't" visible as a negator.
fn words(text: &str) -> Vec<String> {
    let expanded = text
        .replace("n't", " not")
        .replace("n’t", " not")
        .replace("’", "'");
    expanded
        .split(|c: char| {
            !(c.is_alphanumeric()
                || c == '.'
                || c == '%'
                || c == '$'
                || c == '€'
                || c == '£'
                || c == '-'
                || c == ':'
                || c == ','
                || c == '\'')
        })
        .map(|w| w.trim_matches(|c: char| matches!(c, '.' | '-' | '\'' | ':' | ',')))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn is_number_token(w: &str) -> bool {
    w.chars().any(|c| c.is_ascii_digit())
}

/// Canonical form of a numeric token: digits kept with their unit marks,
/// thousands separators dropped ("1,000" and "1000" meet).
fn canonical_number(w: &str) -> String {
    w.to_lowercase()
        .replace(',', "")
        .trim_start_matches('$')
        .to_owned()
}

fn features(text: &str) -> Features {
    let mut f = Features::default();
    let raw = words(text);
    // Quoted strings are entities as written.
    for part in text.split('"').skip(1).step_by(2) {
        if !part.trim().is_empty() {
            f.entities.insert(part.trim().to_lowercase());
        }
    }
    let mut first_alpha_seen = false;
    for (i, w) in raw.iter().enumerate() {
        let lower = w.to_lowercase();
        let lower = lower.trim_end_matches("'s").to_owned();
        if is_number_token(&lower) {
            f.numbers.push(canonical_number(&lower));
            // "2024" is also a date, "9am" a time: the number check covers both.
            continue;
        }
        if let Some((_, n)) = NUMBER_WORDS.iter().find(|(word, _)| *word == lower) {
            f.numbers.push((*n).to_owned());
            continue;
        }
        let is_capitalised = w.chars().next().is_some_and(char::is_uppercase);
        if lower == "am" || lower == "pm" {
            // A time only after a number ("9 am"); else the verb "am".
            if i > 0 && is_number_token(&raw[i - 1]) {
                f.dates.insert(lower.clone());
            }
            first_alpha_seen = true;
            continue;
        }
        if DATE_WORDS.contains(&lower.as_str()) {
            let ambiguous = AMBIGUOUS_DATE.contains(&lower.as_str());
            let first_word = !first_alpha_seen;
            if !ambiguous || (is_capitalised && !first_word) {
                f.dates.insert(canonical(&lower, DATE_ALIASES).to_owned());
                first_alpha_seen = true;
                continue;
            }
        }
        if NEGATORS.contains(&lower.as_str()) {
            // "no longer" counts once, as "no".
            if lower == "longer" && i > 0 && raw[i - 1].eq_ignore_ascii_case("no") {
                first_alpha_seen = true;
                continue;
            }
            if lower != "longer" {
                f.negations.insert(lower.clone());
                first_alpha_seen = true;
                continue;
            }
        }
        if lower == "off" || lower == "out" || lower == "in" {
            f.particles.insert(lower.clone());
            first_alpha_seen = true;
            continue;
        }
        if SCOPE_WORDS.contains(&lower.as_str()) {
            f.scope.insert(canonical(&lower, SCOPE_ALIASES).to_owned());
            first_alpha_seen = true;
            continue;
        }
        let mixed = w.chars().skip(1).any(char::is_uppercase) && w.chars().any(char::is_lowercase);
        let acronym = w.len() >= 2 && w.chars().all(|c| c.is_uppercase() || c.is_ascii_digit());
        let entity = acronym || mixed || (is_capitalised && first_alpha_seen && lower != "i");
        first_alpha_seen = true;
        if entity {
            f.entities.insert(lower.clone());
            f.sequence.push(None);
            continue;
        }
        if STOPWORDS.contains(&lower.as_str()) || FILLER.contains(&lower.as_str()) {
            f.sequence.push(None);
            continue;
        }
        let stemmed = stem(&lower);
        f.content.insert(stemmed.clone());
        f.sequence.push(Some(stemmed));
    }
    f
}

/// Whether `with` adds a word right before a content word it shares with
/// `without`: a modifier that narrows the question ("email password").
fn adds_modifier(with: &Features, without: &Features) -> bool {
    with.sequence
        .windows(2)
        .any(|pair| match (&pair[0], &pair[1]) {
            (Some(added), Some(shared)) => {
                !without.content.contains(added)
                    && without.content.contains(shared)
                    && !without.content.iter().any(|w| equivalent(w, added))
            }
            _ => false,
        })
}

fn equivalent(a: &str, b: &str) -> bool {
    let (sa, sb) = (stem(a), stem(b));
    sa == sb
        || EQUIVALENT.iter().any(|(x, y)| {
            let (x, y) = (stem(x), stem(y));
            (x == sa && y == sb) || (x == sb && y == sa)
        })
}

/// Whether two (stemmed) words are each other's negation or antonym.
fn opposite(a: &str, b: &str) -> bool {
    let negated = |x: &str, y: &str| {
        NEGATIVE_PREFIXES.iter().any(|p| {
            x.strip_prefix(p)
                .is_some_and(|rest| rest.trim_start_matches('-') == y)
        })
    };
    negated(a, b)
        || negated(b, a)
        || ANTONYMS.iter().any(|(x, y)| {
            let (x, y) = (stem(x), stem(y));
            (x == a && y == b) || (x == b && y == a)
        })
}

/// `Ok(())` when `asked` may be answered with the answer cached for `cached`.
pub fn verify(cached: &str, asked: &str) -> Result<(), Rejection> {
    let a = features(cached);
    let b = features(asked);
    let mut na = a.numbers.clone();
    let mut nb = b.numbers.clone();
    na.sort();
    nb.sort();
    if na != nb {
        return Err(Rejection::Number);
    }
    if a.dates != b.dates {
        return Err(Rejection::Date);
    }
    if a.negations != b.negations {
        return Err(Rejection::Negation);
    }
    if a.scope != b.scope {
        return Err(Rejection::Scope);
    }
    // Entities may be written in lower case on one side ("windows").
    let a_all: BTreeSet<&String> = a.entities.iter().chain(a.content.iter()).collect();
    let b_all: BTreeSet<&String> = b.entities.iter().chain(b.content.iter()).collect();
    let missing_entity = a
        .entities
        .iter()
        .any(|e| !b_all.contains(e) && !b_all.contains(&stem(e)))
        || b.entities
            .iter()
            .any(|e| !a_all.contains(e) && !a_all.contains(&stem(e)));
    if missing_entity {
        return Err(Rejection::Entity);
    }
    let only_a: Vec<&String> = a
        .content
        .iter()
        .filter(|w| !b.content.contains(*w) && !b.entities.contains(*w))
        .collect();
    let only_b: Vec<&String> = b
        .content
        .iter()
        .filter(|w| !a.content.contains(*w) && !a.entities.contains(*w))
        .collect();
    // A word against its negative form or antonym: "valid"/"invalid",
    // "billable"/"non-billable", "open"/"closed", "mandatory"/"optional".
    if only_a.iter().any(|x| only_b.iter().any(|y| opposite(x, y))) {
        return Err(Rejection::Negation);
    }
    // "off" must match; "out" only against "in" (log in / log out), since
    // "reach out" or "print out" change nothing.
    let has = |f: &Features, p: &str| f.particles.contains(p);
    let turned_off = has(&a, "off") != has(&b, "off");
    let in_out = (has(&a, "out") && !has(&b, "out") && has(&b, "in"))
        || (has(&b, "out") && !has(&a, "out") && has(&a, "in"));
    if turned_off || in_out {
        return Err(Rejection::Negation);
    }
    // A substitution (a content word on each side with no equivalent on the
    // other) usually asks about something else: "per item" / "per order".
    // Words present on one side only are allowed: paraphrases add words
    // ("the steps for", "as a CSV file") far more often than traps do, and
    // the traps that add one are caught above by the specific checks.
    let covered = |word: &String, others: &[&String]| others.iter().any(|o| equivalent(word, o));
    let uncovered_a = only_a.iter().filter(|w| !covered(w, &only_b)).count();
    let uncovered_b = only_b.iter().filter(|w| !covered(w, &only_a)).count();
    if uncovered_a > 0 && uncovered_b > 0 {
        return Err(Rejection::Content);
    }
    if adds_modifier(&a, &b) || adds_modifier(&b, &a) {
        return Err(Rejection::Scope);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            ("How do I reset my password?", "how do i reset my password"),
            (
                "What is the price of the Pro plan?",
                "What's the cost of the Pro plan?",
            ),
            (
                "Can I cancel my subscription?",
                "Is it possible to cancel my subscription?",
            ),
            (
                "How long does delivery take?",
                "How long does shipping take?",
            ),
        ] {
            assert_eq!(verify(a, b), Ok(()), "{a} / {b}");
        }
    }

    #[test]
    fn traps_are_rejected() {
        for (a, b, why) in [
            (
                "Can I cancel after 14 days?",
                "Can I cancel after 30 days?",
                Rejection::Number,
            ),
            (
                "Can I cancel after fourteen days?",
                "Can I cancel after 30 days?",
                Rejection::Number,
            ),
            (
                "Is the office open on Saturday?",
                "Is the office open on Sunday?",
                Rejection::Date,
            ),
            (
                "Which plans include SSO?",
                "Which plans don't include SSO?",
                Rejection::Negation,
            ),
            (
                "Can admins export data?",
                "Can all users export data?",
                Rejection::Scope,
            ),
            (
                "How do I install the agent on Windows?",
                "How do I install the agent on macOS?",
                Rejection::Entity,
            ),
            (
                "How do I reset my password?",
                "How do I reset my email password?",
                Rejection::Scope,
            ),
            (
                "Is the Pro plan price per item?",
                "Is the Pro plan price per order?",
                Rejection::Content,
            ),
            (
                "Which ports are open?",
                "Which ports are closed?",
                Rejection::Negation,
            ),
            (
                "Is the key valid after rotation?",
                "Is the key invalid after rotation?",
                Rejection::Negation,
            ),
            (
                "How do I turn notifications on?",
                "How do I turn notifications off?",
                Rejection::Negation,
            ),
            ("How do I log in?", "How do I log out?", Rejection::Negation),
        ] {
            assert_eq!(verify(a, b), Err(why), "{a} / {b}");
        }
    }

    #[test]
    fn number_words_meet_digits() {
        assert_eq!(
            verify("Do you ship in three days?", "Do you ship in 3 days?"),
            Ok(())
        );
        assert_eq!(
            verify("Is $1,000 the limit?", "Is $1000 the limit?"),
            Ok(())
        );
    }
}
