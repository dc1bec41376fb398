//! The Terraform code in `terraform/`: every file is formatted as
//! `terraform fmt` writes it; modules whose providers can be had offline
//! validate and pass their `terraform test` files. Where the `terraform`
//! binary is missing, or a module needs a registry provider, the test says
//! it was skipped and why.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a failed test"
)]

use std::path::Path;
use std::process::Command;

#[test]
fn every_terraform_file_is_formatted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform");
    let out = match Command::new("terraform")
        .args(["fmt", "-check", "-recursive", "-diff"])
        .arg(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: terraform cannot run ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "terraform fmt would change:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_local_example_validates_and_passes_its_terraform_tests() {
    if let Err(why) = e2e::terraform::available() {
        println!("skipped: {why}");
        return;
    }
    let tf = e2e::terraform::Workdir::new().unwrap();
    let dir = tf.copy_of("examples/local").unwrap();
    let out = tf.run_in(Some(&dir), &["init", "-no-color"]).unwrap();
    assert!(out.status.success(), "{}", e2e::terraform::describe(&out));
    let out = tf.run_in(Some(&dir), &["validate", "-no-color"]).unwrap();
    assert!(out.status.success(), "{}", e2e::terraform::describe(&out));
    let out = tf.run_in(Some(&dir), &["test", "-no-color"]).unwrap();
    let text = e2e::terraform::describe(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("7 passed, 0 failed"), "{text}");
}

/// modules/cell needs hashicorp/kubernetes even with its providers mocked;
/// where it cannot be installed the test says so.
#[test]
fn the_cell_module_passes_its_terraform_tests_where_its_providers_can_be_had() {
    if let Err(why) = e2e::terraform::available() {
        println!("skipped: {why}");
        return;
    }
    let tf = e2e::terraform::Workdir::new().unwrap();
    let dir = tf.copy_of("modules/cell").unwrap();
    let out = tf.run_in(Some(&dir), &["init", "-no-color"]).unwrap();
    let text = e2e::terraform::describe(&out);
    if !out.status.success() {
        assert!(
            text.contains("hashicorp/kubernetes"),
            "init failed for another reason than the kubernetes provider:\n{text}"
        );
        println!("skipped: hashicorp/kubernetes cannot be installed here (no registry):\n{text}");
        return;
    }
    let out = tf.run_in(Some(&dir), &["test", "-no-color"]).unwrap();
    let text = e2e::terraform::describe(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("10 passed, 0 failed"), "{text}");
}
