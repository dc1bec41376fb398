//! Offline evaluation of the cache's lookup logic over labeled question
//! pairs (`cellctl cache eval PAIRS.jsonl`): precision, recall, the wrong
//! hits, each per category, and a threshold sweep.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use super::judge::{Judgement, judge};
use crate::embed::Embedder;

/// One labeled pair: `a` was answered and cached, `b` is asked now.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub same_answer: bool,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// same_answer pairs served as hits.
    pub true_hits: usize,
    /// same_answer pairs.
    pub same: usize,
    /// different-answer pairs served as hits.
    pub wrong_hits: usize,
    /// different-answer pairs (traps).
    pub traps: usize,
}

impl Counts {
    fn add(&mut self, same_answer: bool, hit: bool) {
        if same_answer {
            self.same += 1;
            self.true_hits += usize::from(hit);
        } else {
            self.traps += 1;
            self.wrong_hits += usize::from(hit);
        }
    }

    /// Hits that were right.
    pub fn precision(&self) -> f64 {
        let hits = self.true_hits + self.wrong_hits;
        if hits == 0 {
            1.0
        } else {
            self.true_hits as f64 / hits as f64
        }
    }

    /// Same-answer pairs that hit.
    pub fn recall(&self) -> f64 {
        if self.same == 0 {
            0.0
        } else {
            self.true_hits as f64 / self.same as f64
        }
    }

    /// Traps served as hits.
    pub fn trap_hit_rate(&self) -> f64 {
        if self.traps == 0 {
            0.0
        } else {
            self.wrong_hits as f64 / self.traps as f64
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub threshold: f32,
    pub overall: Counts,
    pub by_category: BTreeMap<String, Counts>,
    /// (category, a, b, similarity) of every trap served as a hit.
    pub wrong_hits: Vec<(String, String, String, f32)>,
    /// (category, a, b, similarity, why) of every same-answer pair missed.
    pub missed: Vec<(String, String, String, f32, &'static str)>,
    /// Guard rejections by reason.
    pub rejections: BTreeMap<&'static str, usize>,
    /// (threshold, counts) without and with the guard.
    pub sweep: Vec<(f32, Counts, Counts)>,
}

pub fn read_pairs(path: &Path) -> anyhow::Result<Vec<Pair>> {
    let text = std::fs::read_to_string(path)?;
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        pairs.push(pair);
    }
    Ok(pairs)
}

/// Runs the lookup logic over `pairs` at `threshold` and sweeps thresholds.
pub fn evaluate(embedder: &dyn Embedder, pairs: &[Pair], threshold: f32) -> anyhow::Result<Report> {
    let mut texts: Vec<&str> = Vec::with_capacity(pairs.len() * 2);
    for p in pairs {
        texts.push(&p.a);
        texts.push(&p.b);
    }
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(64) {
        vectors.extend(embedder.embed_batch(batch)?);
    }
    let judged: Vec<(Judgement, &Pair, usize)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                judge(&p.a, &vectors[2 * i], &p.b, &vectors[2 * i + 1], threshold),
                p,
                i,
            )
        })
        .collect();

    let mut report = Report {
        threshold,
        overall: Counts::default(),
        by_category: BTreeMap::new(),
        wrong_hits: Vec::new(),
        missed: Vec::new(),
        rejections: BTreeMap::new(),
        sweep: Vec::new(),
    };
    for (j, p, _) in &judged {
        let category = p
            .category
            .clone()
            .unwrap_or_else(|| "uncategorised".to_owned());
        report.overall.add(p.same_answer, j.is_hit());
        report
            .by_category
            .entry(category.clone())
            .or_default()
            .add(p.same_answer, j.is_hit());
        if j.is_hit() && !p.same_answer {
            report
                .wrong_hits
                .push((category.clone(), p.a.clone(), p.b.clone(), j.similarity()));
        }
        if let Judgement::Rejected { reason, .. } = j {
            *report.rejections.entry(reason.as_str()).or_default() += 1;
        }
        if p.same_answer && !j.is_hit() {
            let why = match j {
                Judgement::Rejected { reason, .. } => reason.as_str(),
                _ => "below threshold",
            };
            report
                .missed
                .push((category, p.a.clone(), p.b.clone(), j.similarity(), why));
        }
    }
    for step in 0..=10 {
        let t = 0.80 + 0.02 * step as f32;
        let mut cosine_only = Counts::default();
        let mut guarded = Counts::default();
        for (_, p, i) in &judged {
            let j = judge(&p.a, &vectors[2 * i], &p.b, &vectors[2 * i + 1], t);
            guarded.add(p.same_answer, j.is_hit());
            cosine_only.add(p.same_answer, j.similarity() >= t);
        }
        report.sweep.push((t, cosine_only, guarded));
    }
    Ok(report)
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let o = &self.overall;
        let _ = writeln!(s, "threshold {:.2} with guard", self.threshold);
        let _ = writeln!(
            s,
            "  precision {:.3}  recall {:.3}  traps served {}/{} ({:.2}%)  paraphrases hit {}/{}",
            o.precision(),
            o.recall(),
            o.wrong_hits,
            o.traps,
            100.0 * o.trap_hit_rate(),
            o.true_hits,
            o.same
        );
        let _ = writeln!(s, "\nper category:");
        for (c, n) in &self.by_category {
            if n.same > 0 {
                let _ = writeln!(
                    s,
                    "  {c:<16} same-answer pairs hit {}/{} (recall {:.3})",
                    n.true_hits,
                    n.same,
                    n.recall()
                );
            }
            if n.traps > 0 {
                let _ = writeln!(
                    s,
                    "  {c:<16} traps served {}/{} ({:.2}%)",
                    n.wrong_hits,
                    n.traps,
                    100.0 * n.trap_hit_rate()
                );
            }
        }
        let _ = writeln!(s, "\nguard rejections by reason:");
        for (r, n) in &self.rejections {
            let _ = writeln!(s, "  {r:<10} {n}");
        }
        let _ = writeln!(s, "\nwrong hits ({}):", self.wrong_hits.len());
        for (c, a, b, sim) in &self.wrong_hits {
            let _ = writeln!(s, "  [{c}] {sim:.3}  {a:?} -> {b:?}");
        }
        let _ = writeln!(s, "\nsame-answer pairs missed ({}):", self.missed.len());
        for (c, a, b, sim, why) in &self.missed {
            let _ = writeln!(s, "  [{c}] {sim:.3} {why}  {a:?} -> {b:?}");
        }
        let _ = writeln!(s, "\nthreshold sweep (cosine only | with guard):");
        let _ = writeln!(
            s,
            "  thresh  recall  traps-served  precision | recall  traps-served  precision"
        );
        for (t, c, g) in &self.sweep {
            let _ = writeln!(
                s,
                "  {t:.2}    {:.3}   {:>5.2}%        {:.3}     | {:.3}   {:>5.2}%        {:.3}",
                c.recall(),
                100.0 * c.trap_hit_rate(),
                c.precision(),
                g.recall(),
                100.0 * g.trap_hit_rate(),
                g.precision()
            );
        }
        s
    }
}
