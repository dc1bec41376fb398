//! The intent detector on the labeled set in `tests/data/intents.jsonl`:
//! reports accuracy overall and per class, and fails below the bars.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::collections::BTreeMap;

use cell::pipeline::intent::detect;

#[test]
fn intent_accuracy_on_the_labeled_set() {
    let data = include_str!("data/intents.jsonl");
    let mut per_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for line in data.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let want = v["intent"].as_str().unwrap().to_owned();
        let got = detect(text).as_str();
        let entry = per_class.entry(want.clone()).or_default();
        entry.1 += 1;
        if got == want {
            entry.0 += 1;
        } else {
            wrong.push(format!("{text:?}: {got}, labeled {want}"));
        }
    }
    let (right, total) = per_class
        .values()
        .fold((0, 0), |(r, t), (cr, ct)| (r + cr, t + ct));
    println!(
        "intent accuracy: {right}/{total} = {:.1} %",
        100.0 * right as f64 / total as f64
    );
    for (class, (r, t)) in &per_class {
        println!("  {class:<17} {r}/{t}");
    }
    for w in &wrong {
        println!("  wrong: {w}");
    }
    assert!(right as f64 / total as f64 >= 0.9, "accuracy below 90 %");
    let (r, t) = per_class["prompt_injection"];
    assert!(r as f64 / t as f64 >= 0.95, "injection recall below 95 %");
    // No real question may be turned away.
    let (r, t) = per_class["question"];
    assert!(r as f64 / t as f64 >= 0.95, "questions misread: {wrong:?}");
}
