//! The dashboard's short memory of the cells' metrics. Every interval the
//! control plane reads each live cell's `/metrics` and keeps what the
//! counters grew by since the reading before, for the last fifteen minutes:
//! enough for rates, a p99 and a chart, without a metrics database. Cost is
//! summed per tenant for the current UTC day, as this control plane has seen
//! it (from its start, if that was today; the audit log is the durable
//! record).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::exposition::{self, CellCounters, increase};
use crate::watch::ClusterWatch;

/// How far back the dashboard remembers.
pub const WINDOW_MS: u64 = 15 * 60 * 1000;
/// Rates and the p99 "now" are over the last minute.
pub const RECENT_MS: u64 = 60 * 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// What all cells' counters grew by between two readings.
#[derive(Debug, Clone, Default)]
struct Tick {
    at_ms: u64,
    secs: f64,
    requests: f64,
    requests_by_cell: BTreeMap<String, f64>,
    latency: Vec<(f64, f64)>,
    answers: f64,
    exact_hits: f64,
    semantic_hits: f64,
    groundedness_sum: f64,
    groundedness_count: f64,
    low_groundedness: f64,
}

/// The last reading of one cell's metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ScrapeState {
    /// When its metrics were last read, if ever.
    pub ok_at_ms: Option<u64>,
    /// Why the last reading failed, if it did.
    pub error: Option<String>,
}

/// One reading of one live cell.
pub struct Reading {
    pub cell: String,
    /// When the cell's process started (its lease record says).
    pub started_at_ms: u64,
    pub counters: Result<CellCounters, String>,
}

#[derive(Debug, Default)]
pub struct History {
    last: HashMap<String, CellCounters>,
    last_at_ms: Option<u64>,
    ticks: VecDeque<Tick>,
    scrapes: BTreeMap<String, ScrapeState>,
    day: u64,
    cost_today: BTreeMap<String, f64>,
    cost_since_ms: u64,
}

/// One point of the chart: per-second rates over one interval.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub requests_per_second: f64,
    pub cache_hits_per_second: f64,
}

/// What the dashboard shows of traffic and answers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Traffic {
    /// Over the last minute.
    pub requests_per_second: f64,
    pub p99_seconds: Option<f64>,
    pub requests_per_second_by_cell: BTreeMap<String, f64>,
    /// Over the last fifteen minutes: shares of answers to questions.
    pub answers: f64,
    pub exact_hit_rate: Option<f64>,
    pub semantic_hit_rate: Option<f64>,
    pub mean_groundedness: Option<f64>,
    pub low_groundedness_share: Option<f64>,
    /// USD per tenant since `cost_since_ms` (midnight UTC, or when this
    /// control plane started counting today).
    pub cost_today: BTreeMap<String, f64>,
    pub cost_since_ms: u64,
    pub series: Vec<Point>,
    pub scrapes: BTreeMap<String, ScrapeState>,
}

fn add_buckets(into: &mut Vec<(f64, f64)>, from: &[(f64, f64)]) {
    if into.is_empty() {
        into.extend_from_slice(from);
        return;
    }
    for (bound, count) in from {
        match into.iter_mut().find(|(b, _)| b == bound) {
            Some(slot) => slot.1 += count,
            None => {
                into.push((*bound, *count));
                into.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

impl History {
    /// Records one round of readings taken at `at_ms`.
    pub fn record(&mut self, at_ms: u64, readings: Vec<Reading>) {
        let day = at_ms / DAY_MS;
        if self.last_at_ms.is_none() {
            self.day = day;
            self.cost_since_ms = at_ms;
        } else if day != self.day {
            self.day = day;
            self.cost_today.clear();
            self.cost_since_ms = day * DAY_MS;
        }
        let midnight = day * DAY_MS;
        let mut tick = Tick {
            at_ms,
            secs: self
                .last_at_ms
                .map_or(0.0, |t| at_ms.saturating_sub(t) as f64 / 1000.0),
            ..Tick::default()
        };
        for reading in readings {
            let counters = match reading.counters {
                Ok(c) => c,
                Err(error) => {
                    let state = self.scrapes.entry(reading.cell).or_insert(ScrapeState {
                        ok_at_ms: None,
                        error: None,
                    });
                    state.error = Some(error);
                    continue;
                }
            };
            self.scrapes.insert(
                reading.cell.clone(),
                ScrapeState {
                    ok_at_ms: Some(at_ms),
                    error: None,
                },
            );
            match self.last.get(&reading.cell) {
                Some(before) => {
                    let requests = increase(before.requests, counters.requests);
                    tick.requests += requests;
                    *tick
                        .requests_by_cell
                        .entry(reading.cell.clone())
                        .or_default() += requests;
                    let grew: Vec<(f64, f64)> = counters
                        .latency_buckets
                        .iter()
                        .map(|(bound, now)| {
                            let was = before
                                .latency_buckets
                                .iter()
                                .find(|(b, _)| b == bound)
                                .map_or(0.0, |(_, c)| *c);
                            (*bound, increase(was, *now))
                        })
                        .collect();
                    add_buckets(&mut tick.latency, &grew);
                    tick.answers += increase(before.answers, counters.answers);
                    tick.exact_hits += increase(before.exact_hits, counters.exact_hits);
                    tick.semantic_hits += increase(before.semantic_hits, counters.semantic_hits);
                    tick.groundedness_sum +=
                        increase(before.groundedness_sum, counters.groundedness_sum);
                    tick.groundedness_count +=
                        increase(before.groundedness_count, counters.groundedness_count);
                    tick.low_groundedness +=
                        increase(before.low_groundedness, counters.low_groundedness);
                    for (tenant, now) in &counters.cost {
                        let was = before.cost.get(tenant).copied().unwrap_or(0.0);
                        *self.cost_today.entry(tenant.clone()).or_default() += increase(was, *now);
                    }
                }
                // First seen: what it counted before is today's only if the
                // cell started today.
                None if reading.started_at_ms >= midnight => {
                    for (tenant, now) in &counters.cost {
                        *self.cost_today.entry(tenant.clone()).or_default() += now;
                    }
                }
                None => {}
            }
            self.last.insert(reading.cell, counters);
        }
        if self.last_at_ms.is_some() {
            self.ticks.push_back(tick);
        }
        self.last_at_ms = Some(at_ms);
        while self
            .ticks
            .front()
            .is_some_and(|t| t.at_ms + WINDOW_MS < at_ms)
        {
            self.ticks.pop_front();
        }
    }

    /// Forgets cells that are gone from the cluster.
    pub fn retain_cells(&mut self, live: impl Fn(&str) -> bool) {
        self.last.retain(|cell, _| live(cell));
        self.scrapes.retain(|cell, _| live(cell));
    }

    pub fn traffic(&self, now_ms: u64) -> Traffic {
        let recent: Vec<&Tick> = self
            .ticks
            .iter()
            .filter(|t| t.at_ms + RECENT_MS >= now_ms)
            .collect();
        let recent_secs: f64 = recent.iter().map(|t| t.secs).sum();
        let per_second = |n: f64| {
            if recent_secs > 0.0 {
                n / recent_secs
            } else {
                0.0
            }
        };
        let mut latency = Vec::new();
        let mut by_cell: BTreeMap<String, f64> = BTreeMap::new();
        for t in &recent {
            add_buckets(&mut latency, &t.latency);
            for (cell, n) in &t.requests_by_cell {
                *by_cell.entry(cell.clone()).or_default() += n;
            }
        }
        let sum = |f: fn(&Tick) -> f64| self.ticks.iter().map(f).sum::<f64>();
        let answers = sum(|t| t.answers);
        let share = |n: f64| (answers > 0.0).then(|| n / answers);
        let grounded = sum(|t| t.groundedness_count);
        Traffic {
            requests_per_second: per_second(recent.iter().map(|t| t.requests).sum()),
            p99_seconds: exposition::quantile(0.99, &latency),
            requests_per_second_by_cell: by_cell
                .into_iter()
                .map(|(cell, n)| (cell, per_second(n)))
                .collect(),
            answers,
            exact_hit_rate: share(sum(|t| t.exact_hits)),
            semantic_hit_rate: share(sum(|t| t.semantic_hits)),
            mean_groundedness: (grounded > 0.0).then(|| sum(|t| t.groundedness_sum) / grounded),
            low_groundedness_share: share(sum(|t| t.low_groundedness)),
            cost_today: self.cost_today.clone(),
            cost_since_ms: self.cost_since_ms,
            series: self
                .ticks
                .iter()
                .filter(|t| t.secs > 0.0)
                .map(|t| Point {
                    at_ms: t.at_ms,
                    requests_per_second: t.requests / t.secs,
                    cache_hits_per_second: (t.exact_hits + t.semantic_hits) / t.secs,
                })
                .collect(),
            scrapes: self.scrapes.clone(),
        }
    }
}

/// Reads every live cell's metrics each `interval`, for ever.
pub async fn scrape(cluster: ClusterWatch, history: Arc<Mutex<History>>, interval: Duration) {
    let http = match reqwest::Client::builder()
        .timeout(interval.clamp(Duration::from_millis(200), Duration::from_secs(2)))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "dashboard: cannot build an HTTP client; no metrics shown");
            return std::future::pending().await;
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let view = cluster.snapshot();
        let mut reads = tokio::task::JoinSet::new();
        for (id, cell) in &view.cells {
            let Some(alive) = &cell.alive else { continue };
            let (http, cell, alive) = (http.clone(), id.clone(), alive.clone());
            reads.spawn(async move {
                let url = format!("{}/metrics", alive.endpoint.trim_end_matches('/'));
                let counters = match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(text) => Ok(CellCounters::from_samples(&exposition::parse(&text))),
                        Err(e) => Err(format!("cannot read {url}: {e}")),
                    },
                    Ok(r) => Err(format!("{url} answered {}", r.status())),
                    Err(e) => Err(format!("cannot reach {url}: {e}")),
                };
                Reading {
                    cell,
                    started_at_ms: alive.started_at_ms,
                    counters,
                }
            });
        }
        let readings = reads.join_all().await;
        if let Ok(mut h) = history.lock() {
            h.record(crate::model::now_ms(), readings);
            h.retain_cells(|cell| view.cells.contains_key(cell));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(requests: f64, answers: f64, exact: f64, cost: f64) -> CellCounters {
        CellCounters {
            requests,
            latency_buckets: vec![(0.1, requests), (f64::INFINITY, requests)],
            answers,
            exact_hits: exact,
            cost: [("acme".to_owned(), cost)].into(),
            ..CellCounters::default()
        }
    }

    fn reading(cell: &str, c: Result<CellCounters, String>) -> Reading {
        Reading {
            cell: cell.into(),
            started_at_ms: 0,
            counters: c,
        }
    }

    const T0: u64 = 10 * DAY_MS + 3_600_000;

    #[test]
    fn rates_come_from_what_counters_grew_by() {
        let mut h = History::default();
        h.record(T0, vec![reading("a", Ok(counters(100.0, 50.0, 10.0, 1.0)))]);
        h.record(
            T0 + 2000,
            vec![reading("a", Ok(counters(110.0, 60.0, 15.0, 1.5)))],
        );
        let t = h.traffic(T0 + 2000);
        assert_eq!(t.requests_per_second, 5.0);
        assert_eq!(t.requests_per_second_by_cell["a"], 5.0);
        assert_eq!(t.exact_hit_rate, Some(0.5));
        assert_eq!(t.series.len(), 1);
        assert_eq!(t.series[0].cache_hits_per_second, 2.5);
        // The cell started before today: only today's growth is counted.
        assert_eq!(t.cost_today["acme"], 0.5);
        assert!(t.p99_seconds.is_some_and(|p| p <= 0.1));
    }

    #[test]
    fn a_restarted_cell_and_a_failed_reading() {
        let mut h = History::default();
        h.record(T0, vec![reading("a", Ok(counters(100.0, 0.0, 0.0, 1.0)))]);
        h.record(T0 + 1000, vec![reading("a", Err("refused".into()))]);
        assert_eq!(
            h.traffic(T0 + 1000).scrapes["a"].error.as_deref(),
            Some("refused")
        );
        assert_eq!(h.traffic(T0 + 1000).scrapes["a"].ok_at_ms, Some(T0));
        // Back with counters from zero: all of them are new.
        h.record(
            T0 + 2000,
            vec![reading("a", Ok(counters(4.0, 0.0, 0.0, 0.25)))],
        );
        let t = h.traffic(T0 + 2000);
        assert_eq!(t.requests_per_second, 2.0);
        assert_eq!(t.cost_today["acme"], 0.25);
        assert!(t.scrapes["a"].error.is_none());
    }

    #[test]
    fn cost_starts_again_at_midnight_and_old_ticks_leave_the_window() {
        let mut h = History::default();
        let late = 11 * DAY_MS - 1000;
        h.record(late, vec![reading("a", Ok(counters(0.0, 0.0, 0.0, 1.0)))]);
        h.record(
            late + 500,
            vec![reading("a", Ok(counters(1.0, 0.0, 0.0, 2.0)))],
        );
        assert_eq!(h.traffic(late + 500).cost_today["acme"], 1.0);
        h.record(
            late + 2000,
            vec![reading("a", Ok(counters(2.0, 0.0, 0.0, 2.5)))],
        );
        let t = h.traffic(late + 2000);
        assert_eq!(t.cost_today["acme"], 0.5);
        assert_eq!(t.cost_since_ms, 11 * DAY_MS);
        let later = late + 2000 + WINDOW_MS + 1;
        h.record(later, vec![reading("a", Ok(counters(2.0, 0.0, 0.0, 2.5)))]);
        // Only the reading just taken is left in the window.
        let at: Vec<u64> = h.traffic(later).series.iter().map(|p| p.at_ms).collect();
        assert_eq!(at, vec![later]);
    }

    #[test]
    fn a_cell_started_today_counts_its_cost_from_its_start() {
        let mut h = History::default();
        h.record(
            T0,
            vec![Reading {
                cell: "a".into(),
                started_at_ms: T0 - 1000,
                counters: Ok(counters(0.0, 0.0, 0.0, 0.75)),
            }],
        );
        assert_eq!(h.traffic(T0).cost_today["acme"], 0.75);
    }
}
