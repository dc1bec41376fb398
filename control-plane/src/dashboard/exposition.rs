//! Reading the Prometheus text exposition the cells serve on `/metrics`:
//! only what the dashboard needs, named and summed here.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of an exposition; lines that are not samples (comments,
/// blank lines, a line it cannot read) are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `key="value",…}` → the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// What the dashboard reads of one cell's counters, all cumulative since the
/// cell started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellCounters {
    /// Tenant requests served, and their latency histogram: cumulative
    /// count at each upper bound (seconds), summed over routes.
    pub requests: f64,
    pub latency_buckets: Vec<(f64, f64)>,
    /// Answers to questions, and those the cache gave, by tier.
    pub answers: f64,
    pub exact_hits: f64,
    pub semantic_hits: f64,
    pub groundedness_sum: f64,
    pub groundedness_count: f64,
    pub low_groundedness: f64,
    /// USD spent, by tenant.
    pub cost: BTreeMap<String, f64>,
}

impl CellCounters {
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut c = CellCounters::default();
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in samples {
            match s.name.as_str() {
                "cellnet_request_seconds_count" => c.requests += s.value,
                "cellnet_request_seconds_bucket" => {
                    let Some(le) = s.label("le").and_then(parse_bound) else {
                        continue;
                    };
                    // Ordered by bound; f64 bits order like the numbers for
                    // the non-negative bounds a latency histogram has.
                    buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
                }
                "cellnet_answers_total" => c.answers += s.value,
                "cellnet_cache_hits_total" => match s.label("tier") {
                    Some("exact") => c.exact_hits += s.value,
                    Some("semantic") => c.semantic_hits += s.value,
                    _ => {}
                },
                "cellnet_answer_groundedness_sum" => c.groundedness_sum += s.value,
                "cellnet_answer_groundedness_count" => c.groundedness_count += s.value,
                "cellnet_answer_flags_total" if s.label("flag") == Some("low_groundedness") => {
                    c.low_groundedness += s.value;
                }
                "cellnet_tenant_cost_usd_total" => {
                    if let Some(tenant) = s.label("tenant") {
                        *c.cost.entry(tenant.to_owned()).or_default() += s.value;
                    }
                }
                _ => {}
            }
        }
        c.latency_buckets = buckets.into_values().collect();
        c
    }
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        v => v.parse().ok().filter(|b: &f64| *b >= 0.0),
    }
}

/// The increase of a counter from `before` to `now`; a counter that went
/// down was reset (the cell restarted), and all of `now` is new.
pub fn increase(before: f64, now: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// The `q` quantile of a histogram given as cumulative counts at upper
/// bounds, interpolated within its bucket as Prometheus does; `None`
/// without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Beyond the last finite bound: that bound is all we know.
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let share = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP cellnet_answers Answers
# TYPE cellnet_answers counter
cellnet_answers_total{tenant="acme",cell="cell-a"} 7
cellnet_answers_total{tenant="glo\"bex",cell="cell-a"} 3
cellnet_cache_hits_total{tenant="acme",cell="cell-a",tier="exact"} 2
cellnet_cache_hits_total{tenant="acme",cell="cell-a",tier="semantic"} 1
cellnet_answer_groundedness_sum{tenant="acme",cell="cell-a"} 4.5
cellnet_answer_groundedness_count{tenant="acme",cell="cell-a"} 5
cellnet_answer_flags_total{tenant="acme",cell="cell-a",flag="low_groundedness"} 1
cellnet_answer_flags_total{tenant="acme",cell="cell-a",flag="stale"} 4
cellnet_tenant_cost_usd_total{tenant="acme",cell="cell-a"} 0.25
cellnet_request_seconds_bucket{le="0.01",route="/v1/query"} 4
cellnet_request_seconds_bucket{le="0.1",route="/v1/query"} 9
cellnet_request_seconds_bucket{le="+Inf",route="/v1/query"} 10
cellnet_request_seconds_bucket{le="0.01",route="/v1/embeddings"} 1
cellnet_request_seconds_bucket{le="0.1",route="/v1/embeddings"} 1
cellnet_request_seconds_bucket{le="+Inf",route="/v1/embeddings"} 1
cellnet_request_seconds_count{route="/v1/query"} 10
cellnet_request_seconds_count{route="/v1/embeddings"} 1
garbage line
"#;

    #[test]
    fn reads_samples_with_escaped_labels() {
        let samples = parse(EXPOSITION);
        assert_eq!(samples.len(), 17);
        assert_eq!(samples[1].label("tenant"), Some("glo\"bex"));
        assert_eq!(samples[1].value, 3.0);
        assert_eq!(samples[11].value, 10.0);
        assert_eq!(parse_line("up 1 1700000000000").map(|s| s.value), Some(1.0));
    }

    #[test]
    fn sums_what_the_dashboard_shows() {
        let c = CellCounters::from_samples(&parse(EXPOSITION));
        assert_eq!(c.answers, 10.0);
        assert_eq!((c.exact_hits, c.semantic_hits), (2.0, 1.0));
        assert_eq!((c.groundedness_sum, c.groundedness_count), (4.5, 5.0));
        assert_eq!(c.low_groundedness, 1.0);
        assert_eq!(c.cost.get("acme"), Some(&0.25));
        assert_eq!(c.requests, 11.0);
        assert_eq!(
            c.latency_buckets,
            vec![(0.01, 5.0), (0.1, 10.0), (f64::INFINITY, 11.0)]
        );
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let buckets = [
            (0.01, 50.0),
            (0.1, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &buckets), Some(0.01));
        // Rank 99 is nine tenths into the (0.1, 1] bucket.
        let p99 = quantile(0.99, &buckets).unwrap();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }

    #[test]
    fn a_counter_that_went_down_was_reset() {
        assert_eq!(increase(5.0, 8.0), 3.0);
        assert_eq!(increase(5.0, 2.0), 2.0);
    }
}
