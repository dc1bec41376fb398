//! Terraform as an operator runs it: the real `terraform` binary, with the
//! cellnet provider installed from a filesystem mirror built for the test,
//! in a working directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;

use crate::process::binary;

/// The provider's address and version, as configurations require it.
pub const SOURCE: &str = "registry.terraform.io/cellnet/cellnet";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether `terraform` can run here; the reason it cannot otherwise.
pub fn available() -> Result<(), String> {
    match Command::new("terraform").arg("version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "terraform version failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("terraform cannot run ({e})")),
    }
}

/// A working directory with a CLI config whose provider installation takes
/// cellnet/cellnet from a mirror holding the workspace's build of it, and
/// every other provider from nowhere (there is no registry here).
pub struct Workdir {
    pub dir: tempfile::TempDir,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
}

fn platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!("{}_{arch}", std::env::consts::OS)
}

impl Workdir {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mirror = dir.path().join("mirror");
        let package = mirror.join(SOURCE).join(VERSION).join(platform());
        std::fs::create_dir_all(&package)?;
        std::os::unix::fs::symlink(
            binary("terraform-provider-cellnet")?,
            package.join(format!("terraform-provider-cellnet_v{VERSION}")),
        )?;
        let cli_config = dir.path().join("terraformrc");
        std::fs::write(
            &cli_config,
            format!(
                r#"provider_installation {{
  filesystem_mirror {{
    path    = "{}"
    include = ["{SOURCE}"]
  }}
  direct {{
    exclude = ["{SOURCE}"]
  }}
}}
"#,
                mirror.display()
            ),
        )?;
        std::fs::create_dir_all(dir.path().join("config"))?;
        Ok(Self {
            dir,
            cli_config,
            env: Vec::new(),
        })
    }

    /// The configuration's directory.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Writes `main.tf` (replacing the one before).
    pub fn write(&self, main_tf: &str) -> anyhow::Result<()> {
        std::fs::write(self.config().join("main.tf"), main_tf)?;
        Ok(())
    }

    /// Runs `terraform <args>` in `dir` (the configuration when `None`).
    pub fn run_in(&self, dir: Option<&Path>, args: &[&str]) -> anyhow::Result<Output> {
        let dir = dir.map_or_else(|| self.config(), Path::to_path_buf);
        let mut cmd = Command::new("terraform");
        cmd.args(args)
            .current_dir(&dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env("NO_COLOR", "1")
            .env_remove("TF_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output()
            .with_context(|| format!("running terraform {}", args.join(" ")))
    }

    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.run_in(None, args)
    }

    /// Runs it, and fails with its output unless it exits with `code`.
    pub fn expect(&self, code: i32, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        let text = describe(&out);
        anyhow::ensure!(
            out.status.code() == Some(code),
            "terraform {} exited {:?}, not {code}:\n{text}",
            args.join(" "),
            out.status.code()
        );
        Ok(text)
    }
}

impl Workdir {
    /// Runs it, fails unless it succeeds, and returns its stdout.
    pub fn stdout(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        anyhow::ensure!(
            out.status.success(),
            "terraform {} failed:\n{}",
            args.join(" "),
            describe(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Workdir {
    /// Copies `terraform/<path>` of the repository (and the modules beside
    /// it) into the working directory, so that `init` leaves the tree
    /// alone; returns the copy of `path`.
    pub fn copy_of(&self, path: &str) -> anyhow::Result<PathBuf> {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform");
        let into = self.dir.path().join("terraform");
        copy_dir(&tree, &into)?;
        Ok(into.join(path))
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        // A local init's leftovers are not part of the module.
        if name == ".terraform" || name == ".terraform.lock.hcl" || name == "terraform.tfstate" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// stdout and stderr of a run, for messages.
pub fn describe(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
