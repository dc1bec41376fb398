//! Metadata filters on retrieval: conditions on the `metadata` object a
//! document was ingested with, all of which must hold for a chunk to count.
//!
//! The JSON form, in `POST /v1/query`'s `filter`:
//! `{"lang": "en", "year": {"gte": 2020}, "team": ["ops", "support"], "draft": false}`
//! - a string, integer or boolean matches that value;
//! - an array of strings or of integers matches any of them;
//! - an object with `gt`, `gte`, `lt`, `lte` (numbers) is a range.

use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{Condition, FieldCondition, JsonPath, Match, Range};
use serde_json::Value;

/// Most conditions in one filter.
const MAX_CONDITIONS: usize = 16;
/// Longest metadata key accepted in a filter.
const MAX_KEY_BYTES: usize = 64;

/// What one metadata key must hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Text(String),
    Integer(i64),
    Bool(bool),
    AnyText(Vec<String>),
    AnyInteger(Vec<i64>),
    Range {
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
}

/// Conditions on document metadata; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataFilter {
    conditions: Vec<(String, Expected)>,
}

impl MetadataFilter {
    /// Reads a filter from its JSON form; the error names the offending key.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("filter must be a JSON object of metadata key to value".into());
        };
        if map.len() > MAX_CONDITIONS {
            return Err(format!(
                "filter has {} conditions; at most {MAX_CONDITIONS}",
                map.len()
            ));
        }
        let mut conditions = Vec::with_capacity(map.len());
        for (key, expected) in map {
            let valid_key = !key.is_empty()
                && key.len() <= MAX_KEY_BYTES
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_key {
                return Err(format!(
                    "filter key {key:?} must be 1 to {MAX_KEY_BYTES} letters, digits, '_' or '-'"
                ));
            }
            let fail = |what: &str| format!("filter.{key}: {what}");
            let expected = match expected {
                Value::String(s) => Expected::Text(s.clone()),
                Value::Bool(b) => Expected::Bool(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Expected::Integer(i),
                    None => {
                        return Err(fail(
                            "only integers can be matched exactly; use a range for other numbers",
                        ));
                    }
                },
                Value::Array(items) if items.is_empty() => {
                    return Err(fail("an array must list at least one value"));
                }
                Value::Array(items) => {
                    if let Some(texts) = items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                    {
                        Expected::AnyText(texts)
                    } else if let Some(ints) =
                        items.iter().map(Value::as_i64).collect::<Option<Vec<_>>>()
                    {
                        Expected::AnyInteger(ints)
                    } else {
                        return Err(fail("an array must hold only strings or only integers"));
                    }
                }
                Value::Object(bounds) => {
                    let mut range = (None, None, None, None);
                    for (op, bound) in bounds {
                        let Some(b) = bound.as_f64() else {
                            return Err(fail(&format!("{op} must be a number")));
                        };
                        match op.as_str() {
                            "gt" => range.0 = Some(b),
                            "gte" => range.1 = Some(b),
                            "lt" => range.2 = Some(b),
                            "lte" => range.3 = Some(b),
                            other => {
                                return Err(fail(&format!(
                                    "unknown range bound {other:?}; use gt, gte, lt, lte"
                                )));
                            }
                        }
                    }
                    if bounds.is_empty() {
                        return Err(fail("a range needs at least one of gt, gte, lt, lte"));
                    }
                    Expected::Range {
                        gt: range.0,
                        gte: range.1,
                        lt: range.2,
                        lte: range.3,
                    }
                }
                Value::Null => return Err(fail("null cannot be matched")),
            };
            conditions.push((key.clone(), expected));
        }
        Ok(Self { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The conditions as (metadata key, expectation), for other backends.
    pub fn entries(&self) -> &[(String, Expected)] {
        &self.conditions
    }

    /// The filter as engine conditions on `<payload_field>.<key>`.
    pub(super) fn conditions(&self, payload_field: &str) -> Vec<Condition> {
        self.conditions
            .iter()
            .filter_map(|(key, expected)| {
                // Keys are checked to be plain identifiers, so the path parses.
                let path: JsonPath = format!("{payload_field}.{key}").parse().ok()?;
                let float = |v: Option<f64>| v.map(OrderedFloat);
                let condition = match expected {
                    Expected::Text(s) => FieldCondition::new_match(path, Match::from(s.clone())),
                    Expected::Integer(i) => FieldCondition::new_match(path, Match::from(*i)),
                    Expected::Bool(b) => FieldCondition::new_match(path, Match::from(*b)),
                    Expected::AnyText(v) => FieldCondition::new_match(path, Match::from(v.clone())),
                    Expected::AnyInteger(v) => {
                        FieldCondition::new_match(path, Match::from(v.clone()))
                    }
                    Expected::Range { gt, gte, lt, lte } => FieldCondition::new_range(
                        path,
                        Range {
                            gt: float(*gt),
                            gte: float(*gte),
                            lt: float(*lt),
                            lte: float(*lte),
                        },
                    ),
                };
                Some(Condition::Field(condition))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_form() {
        let f = MetadataFilter::parse(&json!({
            "lang": "en", "year": {"gte": 2020, "lt": 2025}, "team": ["ops", "support"],
            "tier": [1, 2], "draft": false, "n": 3
        }))
        .unwrap();
        assert_eq!(f.conditions("metadata").len(), 6);
        assert!(MetadataFilter::parse(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_match_naming_the_key() {
        let cases = [
            (json!([1]), "must be a JSON object"),
            (json!({"a.b": 1}), "filter key \"a.b\""),
            (json!({"x": 1.5}), "filter.x: only integers"),
            (json!({"x": []}), "filter.x: an array must list"),
            (json!({"x": [1, "a"]}), "filter.x: an array must hold"),
            (json!({"x": {"near": 1}}), "filter.x: unknown range bound"),
            (json!({"x": {"gt": "a"}}), "filter.x: gt must be a number"),
            (json!({"x": {}}), "filter.x: a range needs"),
            (json!({"x": null}), "filter.x: null"),
        ];
        for (value, expected) in cases {
            let err = MetadataFilter::parse(&value).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }
}
