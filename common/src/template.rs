//! Cell templates (`cell-templates/*.yaml`): the sizes a cell comes in. A
//! template holds the vector index parameters, the cache budget, concurrency
//! limits, embedding batch and worker threads a cell runs with, the resources
//! it needs (for Kubernetes), and what one such cell holds and serves (for
//! `cellctl plan`). A cell config names a template and overrides fields of it.
//!
//! The shipped templates are compiled in, so a cell binary runs anywhere; a
//! template given as a path (`./my-template.yaml`) is read from disk.

use std::path::Path;

use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors, parse_yaml};

/// The templates in `cell-templates/`, by name.
pub const SHIPPED: [(&str, &str); 3] = [
    ("small", include_str!("../../cell-templates/small.yaml")),
    (
        "standard",
        include_str!("../../cell-templates/standard.yaml"),
    ),
    ("large", include_str!("../../cell-templates/large.yaml")),
];

/// The template a cell config that names none gets.
pub const DEFAULT: &str = "standard";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellTemplate {
    pub description: String,
    pub vector: VectorParams,
    pub cache: CacheParams,
    pub limits: LimitParams,
    pub embedding: EmbeddingParams,
    pub workers: usize,
    pub resources: Resources,
    pub capacity: Capacity,
}

/// The vector shard's index settings (the fields of the cell's `vector:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorParams {
    pub hnsw_m: usize,
    pub hnsw_ef_construct: usize,
    pub hnsw_ef: usize,
    pub scalar_quantization: bool,
    pub vectors_on_disk: bool,
    pub indexing_threshold_kb: usize,
    pub optimize_after_points: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheParams {
    pub memory_budget_bytes: usize,
    pub max_entries_per_tenant: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitParams {
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingParams {
    /// Questions embedded in one forward pass at most.
    pub max_batch: usize,
    /// Recent question embeddings kept in memory.
    pub lru_capacity: usize,
}

/// What a cell's pod asks Kubernetes for, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpu: String,
    pub memory: String,
    pub disk: String,
}

/// What one cell of a template holds and serves, from the measurements in
/// docs/benchmarks.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Memory the vector shard may take.
    pub vector_memory_bytes: u64,
    /// Resident bytes per vector dimension (vector, index and quantized
    /// copy together).
    pub bytes_per_dimension: f64,
    /// Uncached queries a second (one embedding and one search each).
    pub queries_per_second: f64,
}

impl CellTemplate {
    /// A shipped template by name, or a template file when `name` is a path
    /// (it holds a `/` or ends in `.yaml`).
    pub fn load(name: &str) -> Result<Self, ConfigError> {
        if name.contains('/') || name.ends_with(".yaml") {
            let text =
                std::fs::read_to_string(Path::new(name)).map_err(|source| ConfigError::Read {
                    path: name.to_owned(),
                    source,
                })?;
            return Self::parse(name, &text);
        }
        match SHIPPED.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::parse(&format!("cell-templates/{n}.yaml"), text),
            None => Err(ConfigError::Parse {
                path: "template".to_owned(),
                message: format!(
                    "{name:?} is not a cell template ({}) nor a template file",
                    names().join(", ")
                ),
            }),
        }
    }

    /// Parses and checks one template; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        let t: Self = parse_yaml(text).map_err(|message| ConfigError::Parse {
            path: origin.to_owned(),
            message,
        })?;
        let mut e = ConfigErrors::new();
        t.vector.check(&format!("{origin}: vector"), &mut e);
        let at = |field: &str| format!("{origin}: {field}");
        e.check(
            t.cache.memory_budget_bytes >= 1 << 20,
            at("cache.memory_budget_bytes"),
            "must be at least 1 MiB",
        );
        e.check(
            t.cache.max_entries_per_tenant >= 1,
            at("cache.max_entries_per_tenant"),
            "must be at least 1",
        );
        e.check(
            t.limits.max_concurrent_requests >= 1,
            at("limits.max_concurrent_requests"),
            "must be at least 1",
        );
        e.check(
            (1..=256).contains(&t.embedding.max_batch),
            at("embedding.max_batch"),
            "must be between 1 and 256",
        );
        e.check(
            (1..=crate::workers::MAX_WORKERS).contains(&t.workers),
            at("workers"),
            format!("must be between 1 and {}", crate::workers::MAX_WORKERS),
        );
        for (field, value) in [
            ("resources.cpu", &t.resources.cpu),
            ("resources.memory", &t.resources.memory),
            ("resources.disk", &t.resources.disk),
        ] {
            e.check(
                parse_quantity(value).is_some_and(|q| q > 0.0),
                at(field),
                format!("{value:?} is not a positive Kubernetes quantity (like 2, 500m, 8Gi)"),
            );
        }
        e.check(
            t.capacity.vector_memory_bytes >= 1 << 20,
            at("capacity.vector_memory_bytes"),
            "must be at least 1 MiB",
        );
        e.check(
            t.capacity.bytes_per_dimension.is_finite() && t.capacity.bytes_per_dimension > 0.0,
            at("capacity.bytes_per_dimension"),
            "must be greater than zero",
        );
        e.check(
            t.capacity.queries_per_second.is_finite() && t.capacity.queries_per_second > 0.0,
            at("capacity.queries_per_second"),
            "must be greater than zero",
        );
        e.finish(t)
    }
}

impl VectorParams {
    /// Records what is wrong with these settings, each under `prefix.field`.
    pub fn check(&self, prefix: &str, e: &mut ConfigErrors) {
        e.check(
            (4..=128).contains(&self.hnsw_m),
            format!("{prefix}.hnsw_m"),
            "must be between 4 and 128",
        );
        e.check(
            self.hnsw_ef_construct >= self.hnsw_m,
            format!("{prefix}.hnsw_ef_construct"),
            "must be at least hnsw_m",
        );
        e.check(
            self.hnsw_ef >= 1,
            format!("{prefix}.hnsw_ef"),
            "must be at least 1",
        );
        e.check(
            self.optimize_after_points >= 1,
            format!("{prefix}.optimize_after_points"),
            "must be at least 1",
        );
    }
}

/// The names of the shipped templates.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// A Kubernetes quantity (`2`, `500m`, `8Gi`, `1.5G`) as a number of units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(s, f)| text.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((text, 1.0));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    number.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_loads() {
        for name in names() {
            let t = CellTemplate::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!t.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn larger_templates_hold_and_serve_more() {
        let [small, standard, large] =
            ["small", "standard", "large"].map(|n| CellTemplate::load(n).unwrap());
        let vectors = |t: &CellTemplate| {
            t.capacity.vector_memory_bytes as f64 / (t.capacity.bytes_per_dimension * 384.0)
        };
        assert!(vectors(&small) < vectors(&standard) && vectors(&standard) < vectors(&large));
        assert!(small.workers < standard.workers && standard.workers < large.workers);
        assert!(large.vector.scalar_quantization && !standard.vector.scalar_quantization);
    }

    #[test]
    fn unknown_names_and_fields_are_named() {
        let err = CellTemplate::load("huge").unwrap_err().to_string();
        assert!(
            err.contains("\"huge\" is not a cell template (small, standard, large"),
            "{err}"
        );

        let typo = SHIPPED[1].1.replace("hnsw_ef:", "hnsw_eff:");
        let err = CellTemplate::parse("t.yaml", &typo)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.yaml") && err.contains("vector.hnsw_eff"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named_with_their_path() {
        let bad = SHIPPED[0]
            .1
            .replace("hnsw_m: 16", "hnsw_m: 2")
            .replace("memory: 2Gi", "memory: lots")
            .replace("max_batch: 16", "max_batch: 0");
        let err = CellTemplate::parse("bad.yaml", &bad)
            .unwrap_err()
            .to_string();
        for expected in [
            "bad.yaml: vector.hnsw_m must be between 4 and 128",
            "bad.yaml: resources.memory \"lots\" is not a positive Kubernetes quantity",
            "bad.yaml: embedding.max_batch must be between 1 and 256",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from: {err}");
        }
        let wrong_type = SHIPPED[0].1.replace("workers: 1", "workers: one");
        let err = CellTemplate::parse("w.yaml", &wrong_type)
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers: invalid type"), "{err}");
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("8Gi"), Some(8.0 * 1073741824.0));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("Gi"), None);
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity("8 Gi"), None);
    }
}
