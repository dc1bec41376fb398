//! Answer-quality metrics, per tenant and cell: is the answer accurate, not
//! only was it served. Shares are ratios of counters, so that any window can
//! be asked for: the share of low-groundedness answers over five minutes is
//! `rate(cellnet_answer_flags_total{flag="low_groundedness"}[5m]) /
//! rate(cellnet_answers_total[5m])`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pipeline::QueryResponse;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub tenant: String,
    pub cell: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerFlagLabels {
    pub tenant: String,
    pub cell: String,
    /// One of [`AnswerFlag::as_str`].
    pub flag: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheHitLabels {
    pub tenant: String,
    pub cell: String,
    /// exact | semantic
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QualityCheckLabels {
    pub tenant: String,
    pub cell: String,
    /// One of `pipeline::quality_check::Verdict::as_str`.
    pub verdict: &'static str,
}

/// Which tier of the semantic cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTier {
    /// The hash of the normalised question matched.
    Exact,
    /// A cached question was close enough in the vector tier.
    Semantic,
}

impl CacheTier {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTier::Exact => "exact",
            CacheTier::Semantic => "semantic",
        }
    }
}

/// What can be wrong with an answer that was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFlag {
    /// Groundedness below the threshold.
    LowGroundedness,
    /// The answer says it does not know.
    DontKnow,
    /// No provider answered: an extract of the best passage.
    Degraded,
    /// No provider answered: an older cached answer.
    Stale,
}

impl AnswerFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerFlag::LowGroundedness => "low_groundedness",
            AnswerFlag::DontKnow => "dont_know",
            AnswerFlag::Degraded => "degraded",
            AnswerFlag::Stale => "stale",
        }
    }

    /// The flags an answer carries (any number, in a fixed order).
    pub fn of(answer: &QueryResponse) -> Vec<AnswerFlag> {
        let mut flags = Vec::new();
        if answer.low_groundedness {
            flags.push(AnswerFlag::LowGroundedness);
        }
        if says_dont_know(&answer.answer) {
            flags.push(AnswerFlag::DontKnow);
        }
        if answer.fallback.as_deref() == Some("degraded") {
            flags.push(AnswerFlag::Degraded);
        }
        if answer.cache == "stale" {
            flags.push(AnswerFlag::Stale);
        }
        flags
    }
}

/// Whether an answer opens by saying it does not know: the cell's own
/// no-answer text, or a model following the prompt's instruction to say so.
pub fn says_dont_know(answer: &str) -> bool {
    let opening: String = answer
        .trim_start()
        .chars()
        .take(48)
        .map(|c| {
            if c == '’' {
                '\''
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    [
        "i don't know",
        "i do not know",
        "i'm not sure",
        "the passages do not",
        "the passages don't",
    ]
    .iter()
    .any(|p| opening.starts_with(p))
}

pub struct QualityMetrics {
    pub answers: Family<AnswerLabels, Counter>,
    pub flags: Family<AnswerFlagLabels, Counter>,
    pub groundedness: Family<AnswerLabels, Histogram>,
    pub cache_hits: Family<CacheHitLabels, Counter>,
    pub hit_similarity: Family<AnswerLabels, Histogram>,
    pub quality_checks: Family<QualityCheckLabels, Counter>,
}

impl QualityMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            answers: Family::default(),
            flags: Family::default(),
            groundedness: Family::new_with_constructor(|| {
                Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
            }),
            cache_hits: Family::default(),
            hit_similarity: Family::new_with_constructor(|| {
                Histogram::new([0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0])
            }),
            quality_checks: Family::default(),
        };
        registry.register(
            "cellnet_answers",
            "Answers to questions served, per tenant and cell",
            m.answers.clone(),
        );
        registry.register(
            "cellnet_answer_flags",
            "Answers served that were low-groundedness, said they did not know, were degraded or stale",
            m.flags.clone(),
        );
        registry.register(
            "cellnet_answer_groundedness",
            "Groundedness of each answer served that had passages to be checked against",
            m.groundedness.clone(),
        );
        registry.register(
            "cellnet_cache_hits",
            "Answers served from the semantic cache, by tier",
            m.cache_hits.clone(),
        );
        registry.register(
            "cellnet_cache_hit_similarity",
            "Similarity of the cached question at each vector-tier hit",
            m.hit_similarity.clone(),
        );
        registry.register(
            "cellnet_quality_checks",
            "Fresh answers sampled for a second model to judge against their cited passages, by verdict \
             (supported, unsupported, unclear, failed, skipped)",
            m.quality_checks.clone(),
        );
        m
    }

    /// Counts one sampled answer's quality check.
    pub fn quality_checked(&self, tenant: &str, cell: &str, verdict: &'static str) {
        self.quality_checks
            .get_or_create(&QualityCheckLabels {
                tenant: tenant.to_owned(),
                cell: cell.to_owned(),
                verdict,
            })
            .inc();
    }

    /// Counts one answer to a question (fixed replies to small talk and the
    /// like are not answers to be judged).
    pub fn answered(&self, tenant: &str, cell: &str, answer: &QueryResponse) {
        if answer.intent != "question" {
            return;
        }
        let labels = AnswerLabels {
            tenant: tenant.to_owned(),
            cell: cell.to_owned(),
        };
        self.answers.get_or_create(&labels).inc();
        if let Some(g) = answer.groundedness {
            self.groundedness
                .get_or_create(&labels)
                .observe(f64::from(g));
        }
        for flag in AnswerFlag::of(answer) {
            self.flags
                .get_or_create(&AnswerFlagLabels {
                    tenant: labels.tenant.clone(),
                    cell: labels.cell.clone(),
                    flag: flag.as_str(),
                })
                .inc();
        }
    }

    /// Counts a cache hit, with its similarity on the vector tier.
    pub fn cache_hit(&self, tenant: &str, cell: &str, tier: CacheTier, similarity: f32) {
        self.cache_hits
            .get_or_create(&CacheHitLabels {
                tenant: tenant.to_owned(),
                cell: cell.to_owned(),
                tier: tier.as_str(),
            })
            .inc();
        if tier == CacheTier::Semantic {
            self.hit_similarity
                .get_or_create(&AnswerLabels {
                    tenant: tenant.to_owned(),
                    cell: cell.to_owned(),
                })
                .observe(f64::from(similarity));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dont_know_is_read_from_the_opening() {
        assert!(says_dont_know(crate::pipeline::NO_ANSWER));
        assert!(says_dont_know("  I DON’T KNOW, the passages say nothing."));
        assert!(says_dont_know("I do not know which warehouse."));
        assert!(!says_dont_know("Orders ship from Lyon. I don't know more."));
        assert!(!says_dont_know(""));
    }
}
