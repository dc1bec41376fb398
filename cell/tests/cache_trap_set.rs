//! The semantic cache's lookup logic (embedder, default threshold, guard) on
//! the labeled pairs in `tests/data/cache_pairs.jsonl`: true paraphrases and
//! traps that differ by a negation, an entity, a number or date, or a scope.
//! Prints the full report; fails if more than 1 % of traps would be served
//! or fewer than half of the paraphrases would hit.

use std::path::Path;

use cell::cache::eval::{evaluate, read_pairs};
use cell::config::{DEFAULT_CACHE_THRESHOLD, default_model_dir};
use cell::embed::MiniLm;

#[test]
fn trap_set_at_default_settings() -> anyhow::Result<()> {
    let embedder = MiniLm::load(&default_model_dir())?;
    let pairs =
        read_pairs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cache_pairs.jsonl"))?;
    assert!(
        pairs.len() >= 400,
        "the trap set shrank to {} pairs",
        pairs.len()
    );
    let report = evaluate(&embedder, &pairs, DEFAULT_CACHE_THRESHOLD)?;
    println!("{}", report.render());
    let o = report.overall;
    assert!(o.traps >= 250 && o.same >= 150);
    assert!(
        o.trap_hit_rate() <= 0.01,
        "{} of {} traps served as hits",
        o.wrong_hits,
        o.traps
    );
    assert!(
        o.recall() >= 0.5,
        "only {} of {} paraphrases hit",
        o.true_hits,
        o.same
    );
    for category in ["negation", "entity", "number_date", "scope"] {
        assert!(
            report
                .by_category
                .get(category)
                .is_some_and(|c| c.traps >= 50),
            "category {category} has too few traps"
        );
    }
    Ok(())
}
