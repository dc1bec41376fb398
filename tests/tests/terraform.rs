//! The Terraform code in `terraform/`: every file is formatted as
//! `terraform fmt` writes it. Where the `terraform` binary is missing the
//! test says it was skipped.

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
