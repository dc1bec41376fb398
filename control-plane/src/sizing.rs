//! Capacity planning (`cellctl plan`): how many cells of a template a
//! deployment needs, and what its vectors, cache and LLM tokens cost a day.
//! The per-cell figures come from the template's `capacity` section, which
//! docs/benchmarks.md derives from measurements.

use std::fmt;

use common::template::CellTemplate;

const SECONDS_PER_DAY: f64 = 86_400.0;
/// Bytes an answer takes in Redis with its metadata, on average.
pub const ANSWER_BYTES: f64 = 2048.0;

/// What the deployment has to serve.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub users: u64,
    pub docs: u64,
    pub chunks_per_doc: u64,
    pub dims: u64,
    pub queries_per_user_per_day: f64,
    /// Copies of each tenant's data (the placement's R).
    pub replicas: u64,
    /// The busiest hour's rate over the day's average.
    pub peak_factor: f64,
    /// Share of queries the semantic cache answers.
    pub cache_hit_ratio: f64,
    /// Tokens of an LLM call: prompt (question and passages) and answer.
    pub prompt_tokens: f64,
    pub completion_tokens: f64,
    /// USD per million tokens, when known.
    pub prices: Option<(f64, f64)>,
}

/// The deployment that serves a `Demand`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub template: String,
    pub vectors: u64,
    /// Bytes of vector shard across all cells, replicas included.
    pub vector_memory_bytes: f64,
    pub cells_for_vectors: u64,
    pub queries_per_day: f64,
    /// Uncached queries a second in the busiest hour.
    pub peak_uncached_qps: f64,
    pub cells_for_queries: u64,
    /// Entries the cache holds: a day of misses (the default TTL).
    pub cache_entries: f64,
    /// In-process vector tier (all cells) plus Redis (vectors and answers).
    pub cache_memory_bytes: f64,
    pub cells_for_cache: u64,
    pub cells: u64,
    pub input_tokens_per_day: f64,
    pub output_tokens_per_day: f64,
    pub cost_per_day: Option<f64>,
}

/// Why a demand cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SizingError {
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("{0} must be a number in [0, 1)")]
    Ratio(&'static str),
    #[error("{0} must be a finite number, not negative")]
    Negative(&'static str),
}

impl Demand {
    fn check(&self) -> Result<(), SizingError> {
        for (name, value) in [
            ("--users", self.users),
            ("--dims", self.dims),
            ("--replicas", self.replicas),
        ] {
            if value == 0 {
                return Err(SizingError::Zero(name));
            }
        }
        if !(0.0..1.0).contains(&self.cache_hit_ratio) {
            return Err(SizingError::Ratio("--cache-hit-ratio"));
        }
        let (input, output) = self.prices.unwrap_or((0.0, 0.0));
        for (name, value) in [
            ("--queries-per-user-per-day", self.queries_per_user_per_day),
            ("--prompt-tokens", self.prompt_tokens),
            ("--completion-tokens", self.completion_tokens),
            ("the input price", input),
            ("the output price", output),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(SizingError::Negative(name));
            }
        }
        if !self.peak_factor.is_finite() || self.peak_factor < 1.0 {
            return Err(SizingError::Zero("--peak-factor"));
        }
        Ok(())
    }
}

/// Cells of `template` for `demand`: enough for the vectors, the peak of
/// uncached queries and the cache's in-process tier, and never fewer than
/// the replicas.
pub fn plan(name: &str, template: &CellTemplate, demand: &Demand) -> Result<Plan, SizingError> {
    demand.check()?;
    let capacity = &template.capacity;
    let dims = demand.dims as f64;
    let vectors = demand.docs * demand.chunks_per_doc;
    let vector_memory_bytes =
        vectors as f64 * demand.replicas as f64 * dims * capacity.bytes_per_dimension;
    let cells_for_vectors = cells(vector_memory_bytes / capacity.vector_memory_bytes as f64);

    let queries_per_day = demand.users as f64 * demand.queries_per_user_per_day;
    let misses_per_day = queries_per_day * (1.0 - demand.cache_hit_ratio);
    let peak_uncached_qps = misses_per_day / SECONDS_PER_DAY * demand.peak_factor;
    let cells_for_queries = cells(peak_uncached_qps / capacity.queries_per_second);

    let cache_entries = misses_per_day;
    let vector_bytes = dims * 4.0;
    let in_process = cache_entries * vector_bytes;
    let cache_memory_bytes = in_process + cache_entries * (vector_bytes + ANSWER_BYTES);
    let cells_for_cache = cells(in_process / template.cache.memory_budget_bytes as f64);

    let input_tokens_per_day = misses_per_day * demand.prompt_tokens;
    let output_tokens_per_day = misses_per_day * demand.completion_tokens;
    let cost_per_day = demand.prices.map(|(input, output)| {
        (input_tokens_per_day * input + output_tokens_per_day * output) / 1e6
    });
    Ok(Plan {
        template: name.to_owned(),
        vectors,
        vector_memory_bytes,
        cells_for_vectors,
        queries_per_day,
        peak_uncached_qps,
        cells_for_queries,
        cache_entries,
        cache_memory_bytes,
        cells_for_cache,
        cells: cells_for_vectors
            .max(cells_for_queries)
            .max(cells_for_cache)
            .max(demand.replicas),
        input_tokens_per_day,
        output_tokens_per_day,
        cost_per_day,
    })
}

/// Whole cells for a load of `needed` cells' worth.
fn cells(needed: f64) -> u64 {
    // A hair under a whole number is that number, not one more cell.
    (needed - 1e-9).ceil().max(1.0) as u64
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let binding = [
            (self.cells_for_vectors, "vector memory"),
            (self.cells_for_queries, "peak queries"),
            (self.cells_for_cache, "cache memory"),
        ]
        .into_iter()
        .filter(|(n, _)| *n == self.cells)
        .map(|(_, why)| why)
        .collect::<Vec<_>>();
        let why = if binding.is_empty() {
            "the replicas".to_owned()
        } else {
            binding.join(", ")
        };
        writeln!(
            f,
            "cells needed      {} × {} (set by {why})",
            self.cells, self.template
        )?;
        writeln!(
            f,
            "  for vectors     {:>6}   {} vectors, {} with replicas",
            self.cells_for_vectors,
            self.vectors,
            gib(self.vector_memory_bytes)
        )?;
        writeln!(
            f,
            "  for queries     {:>6}   {:.0} queries/day, {:.1} uncached/s at peak",
            self.cells_for_queries, self.queries_per_day, self.peak_uncached_qps
        )?;
        writeln!(
            f,
            "  for the cache   {:>6}   {:.0} entries, {} (in-process tier and Redis)",
            self.cells_for_cache,
            self.cache_entries,
            gib(self.cache_memory_bytes)
        )?;
        writeln!(
            f,
            "LLM tokens/day    {:.0} in, {:.0} out",
            self.input_tokens_per_day, self.output_tokens_per_day
        )?;
        match self.cost_per_day {
            Some(cost) => writeln!(f, "LLM cost/day      ${cost:.2}"),
            None => writeln!(
                f,
                "LLM cost/day      unknown: give --input-price and --output-price, or --prices-from a cell config"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(template: &str) -> Plan {
        // The seed's case: 100k daily users, 10M documents, 5 queries a user a day.
        let demand = Demand {
            users: 100_000,
            docs: 10_000_000,
            chunks_per_doc: 10,
            dims: 384,
            queries_per_user_per_day: 5.0,
            replicas: 2,
            peak_factor: 3.0,
            cache_hit_ratio: 0.2,
            prompt_tokens: 1500.0,
            completion_tokens: 250.0,
            prices: Some((0.15, 0.60)),
        };
        plan(template, &CellTemplate::load(template).unwrap(), &demand).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-9
    }

    #[test]
    fn the_seed_case_on_large_cells() {
        let p = seed("large");
        // 10M docs × 10 chunks = 100M vectors; × 2 replicas × 384 dims × 2.9 B.
        assert_eq!(p.vectors, 100_000_000);
        assert!(close(p.vector_memory_bytes, 222_720_000_000.0));
        // 222.72e9 / 10 GiB (10,737,418,240) = 20.74 → 21 cells.
        assert_eq!(p.cells_for_vectors, 21);
        // 500k queries/day, 80 % uncached: 400k / 86,400 × 3 = 13.89/s; 400/s a cell.
        assert!(close(p.queries_per_day, 500_000.0));
        assert!(close(p.peak_uncached_qps, 400_000.0 / 86_400.0 * 3.0));
        assert_eq!(p.cells_for_queries, 1);
        // 400k entries × 1,536 B = 614.4 MB in process, under 1.5 GiB; Redis
        // adds 400k × (1,536 + 2,048).
        assert!(close(p.cache_entries, 400_000.0));
        assert!(close(
            p.cache_memory_bytes,
            400_000.0 * (1536.0 + 1536.0 + 2048.0)
        ));
        assert_eq!(p.cells_for_cache, 1);
        assert_eq!(p.cells, 21);
        // 400k × 1,500 = 600M in, 400k × 250 = 100M out: 600 × 0.15 + 100 × 0.60.
        assert!(close(p.input_tokens_per_day, 600_000_000.0));
        assert!(close(p.output_tokens_per_day, 100_000_000.0));
        assert!(close(p.cost_per_day.unwrap(), 150.0));
        let text = p.to_string();
        assert!(text.contains("21 × large (set by vector memory)"), "{text}");
        assert!(text.contains("$150.00"), "{text}");
    }

    #[test]
    fn the_seed_case_on_standard_cells() {
        let p = seed("standard");
        // 200M vectors × 384 × 8.9 B = 683.52e9 B over 4 GiB = 159.15 → 160.
        assert!(close(p.vector_memory_bytes, 683_520_000_000.0));
        assert_eq!(p.cells_for_vectors, 160);
        assert_eq!(p.cells, 160);
    }

    #[test]
    fn a_small_deployment_still_gets_one_cell_per_replica() {
        let demand = Demand {
            users: 1_000,
            docs: 10_000,
            chunks_per_doc: 5,
            dims: 384,
            queries_per_user_per_day: 10.0,
            replicas: 2,
            peak_factor: 3.0,
            cache_hit_ratio: 0.0,
            prompt_tokens: 1000.0,
            completion_tokens: 200.0,
            prices: None,
        };
        let p = plan("small", &CellTemplate::load("small").unwrap(), &demand).unwrap();
        // 100k stored vectors × 384 × 8.9 B = 341.76 MB, under 1 GiB.
        assert!(close(p.vector_memory_bytes, 341_760_000.0));
        assert_eq!(
            (p.cells_for_vectors, p.cells_for_queries, p.cells_for_cache),
            (1, 1, 1)
        );
        assert_eq!(p.cells, 2);
        // 10,000 misses a day × 1,000 and × 200 tokens, no price given.
        assert!(close(p.input_tokens_per_day, 10_000_000.0));
        assert!(close(p.output_tokens_per_day, 2_000_000.0));
        assert_eq!(p.cost_per_day, None);
        assert!(p.to_string().contains("set by the replicas"), "{p}");
    }

    #[test]
    fn busy_tenants_are_bound_by_queries_or_by_the_cache() {
        let demand = Demand {
            users: 1_000_000,
            docs: 1_000,
            chunks_per_doc: 5,
            dims: 384,
            queries_per_user_per_day: 50.0,
            replicas: 2,
            peak_factor: 3.0,
            cache_hit_ratio: 0.2,
            prompt_tokens: 1500.0,
            completion_tokens: 250.0,
            prices: None,
        };
        let standard = CellTemplate::load("standard").unwrap();
        let p = plan("standard", &standard, &demand).unwrap();
        // 50M queries, 40M misses: 40M / 86,400 × 3 = 1,388.9/s over 300/s = 4.63 → 5.
        assert_eq!(p.cells_for_queries, 5);
        // 40M entries × 1,536 B = 61.44e9 B over 768 MiB (805,306,368) = 76.3 → 77.
        assert_eq!(p.cells_for_cache, 77);
        assert_eq!(p.cells, 77);
        // With nine in ten answered by the cache: 5M misses × 1,536 B = 7.68e9 B
        // → 9.5 → 10 cache cells; 173.6/s → 1 query cell.
        let cached = Demand {
            cache_hit_ratio: 0.9,
            ..demand
        };
        let p = plan("standard", &standard, &cached).unwrap();
        assert_eq!(
            (p.cells_for_queries, p.cells_for_cache, p.cells),
            (1, 10, 10)
        );
    }

    #[test]
    fn nonsense_demand_is_refused_with_the_flag_named() {
        let template = CellTemplate::load("standard").unwrap();
        let mut demand = Demand {
            users: 1,
            docs: 1,
            chunks_per_doc: 1,
            dims: 384,
            queries_per_user_per_day: 1.0,
            replicas: 2,
            peak_factor: 3.0,
            cache_hit_ratio: 1.0,
            prompt_tokens: 1.0,
            completion_tokens: 1.0,
            prices: None,
        };
        assert_eq!(
            plan("standard", &template, &demand)
                .unwrap_err()
                .to_string(),
            "--cache-hit-ratio must be a number in [0, 1)"
        );
        demand.cache_hit_ratio = 0.5;
        demand.dims = 0;
        assert_eq!(
            plan("standard", &template, &demand)
                .unwrap_err()
                .to_string(),
            "--dims must be at least 1"
        );
    }
}
