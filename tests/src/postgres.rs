//! A real PostgreSQL 16 with pgvector for tests: `initdb` into a temp dir and
//! `postgres` on a free port of 127.0.0.1 (its socket in the temp dir too),
//! stopped (fast shutdown) on drop. The binaries are the ones
//! `scripts/fetch-postgres.sh` installs; the machine's own PostgreSQL on 5432
//! is never touched. PostgreSQL refuses to run as root, so under root the
//! server runs as `nobody`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{Guard, free_port, wait_for};

pub struct Postgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    guard: Guard,
    // Removed after the server has stopped (fields drop in order).
    dir: tempfile::TempDir,
}

/// Where `scripts/fetch-postgres.sh` put the binaries: `CELLNET_PG_DIR`, else
/// its default for this user.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let root = match std::env::var_os("CELLNET_PG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None if is_root() => PathBuf::from("/usr/local/lib/cellnet/postgresql"),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/cellnet/postgresql"),
    };
    let bin = root.join("pgserver/pginstall/bin");
    if !bin.join("postgres").exists() {
        bail!(
            "no PostgreSQL with pgvector in {}: run scripts/setup.sh (scripts/fetch-postgres.sh)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Whether this process runs as root: `/proc/self` belongs to its user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `nobody`.
fn nobody() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "nobody"]).output()?;
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

impl Postgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        std::fs::create_dir(&data)?;
        std::fs::create_dir(&sockets)?;
        let run_as = if is_root() { Some(nobody()?) } else { None };
        if let Some((uid, gid)) = run_as {
            // The server's user must reach its directories.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
            for d in [&data, &sockets] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
            }
        }
        let as_server_user = |command: &mut Command| {
            if let Some((uid, gid)) = run_as {
                command.uid(uid).gid(gid);
            }
        };

        let log = dir.path().join("initdb.log");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        as_server_user(&mut initdb);
        if !initdb.status().context("running initdb")?.success() {
            bail!(
                "initdb failed: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }

        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", sockets.display()))
            // A test server: nothing it holds must survive a power cut.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        as_server_user(&mut server);
        let mut guard = Guard::new(server.spawn().context("starting postgres")?);
        let ready = |bin: &Path| {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        };
        let mut exited = false;
        let waited = wait_for("postgres", Duration::from_secs(30), || {
            exited = guard.has_exited();
            exited || ready(&bin)
        });
        if exited || waited.is_err() {
            bail!(
                "postgres did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            bin,
            guard,
            dir,
        })
    }

    /// Runs SQL with `psql` (stopping at the first error) and returns what
    /// it printed: unaligned, tuples only, `|` between columns.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8(out.stdout)?.trim_end().to_owned())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    /// A fast shutdown (SIGINT), so that the server releases its shared
    /// memory; killed if it has not stopped within ten seconds.
    fn drop(&mut self) {
        if let Ok(pid) = self.guard.pid() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
            let _ = wait_for("postgres to stop", Duration::from_secs(10), || {
                self.guard.has_exited()
            });
        }
    }
}
