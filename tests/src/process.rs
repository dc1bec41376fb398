//! Child processes for tests.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A port that was free a moment ago. The OS may reuse it, so start the
/// server right away.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where cargo put the workspace's binaries: next to this test's `deps/` dir.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no parent directory")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the binaries first (cargo build --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed (SIGKILL) on drop.
pub struct Guard {
    child: Option<Child>,
}

impl Guard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.child.as_ref().context("the process is gone")?.id())
    }

    /// Sends SIGTERM, asking for a graceful shutdown; returns at once.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the process is gone")?;
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        Ok(())
    }

    /// How the process ended, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the process has ended (or was never there).
    pub fn has_exited(&mut self) -> bool {
        self.child.is_none() || self.exited().is_some()
    }

    /// Waits for the process to exit and returns how it did.
    pub fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("the process is gone")?;
        Ok(child.wait()?)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `ready` until it holds or `timeout` passes. For readiness of
/// external servers only: each poll is a real check, not a guess.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    bail!("{what} not ready after {timeout:?}")
}

fn http_get_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200")
}

/// A real etcd, single member, on free ports with a temp data dir.
pub struct Etcd {
    pub guard: Guard,
    pub client_url: String,
    peer_port: u16,
    client_port: u16,
    pub data: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        // A free port can be taken by another process before etcd binds it;
        // etcd then exits at once, and new ports are tried.
        let mut attempt = 1;
        loop {
            let (client_port, peer_port) = (free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{client_port}");
            match spawn_etcd(data.path(), &client_url, client_port, peer_port) {
                Ok(guard) => {
                    return Ok(Self {
                        guard,
                        client_url,
                        peer_port,
                        client_port,
                        data,
                    });
                }
                Err(e) if attempt < 3 && e.to_string().contains(ETCD_EXITED) => {
                    let _ = std::fs::remove_dir_all(data.path().join("member"));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops etcd as a crash would.
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.guard.kill();
        self.guard = spawn_etcd(
            self.data.path(),
            &self.client_url,
            self.client_port,
            self.peer_port,
        )?;
        Ok(())
    }
}

const ETCD_EXITED: &str = "etcd exited before it was ready";

fn spawn_etcd(
    data: &Path,
    client_url: &str,
    client_port: u16,
    peer_port: u16,
) -> anyhow::Result<Guard> {
    {
        let log = data.join("etcd.log");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(data.join("member"))
            .args(["--listen-client-urls", client_url])
            .args(["--advertise-client-urls", client_url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start etcd (is etcd-server installed?)")?;
        let mut guard = Guard::new(child);
        let addr = format!("127.0.0.1:{client_port}");
        let mut exited = None;
        wait_for("etcd", Duration::from_secs(30), || {
            exited = guard.exited();
            exited.is_some() || http_get_ok(&addr, "/health")
        })?;
        if let Some(status) = exited {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let last: Vec<&str> = said.lines().rev().take(3).collect();
            bail!("{ETCD_EXITED} ({status}): {}", last.join(" | "));
        }
        Ok(guard)
    }
}

/// A real redis-server on a free port, persisting nothing.
pub struct Redis {
    pub guard: Guard,
    pub url: String,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn spawn_redis(port: u16, dir: &Path, extra: &[&str]) -> anyhow::Result<Guard> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server (is redis-server installed?)")?;
    let guard = Guard::new(child);
    let addr = format!("127.0.0.1:{port}");
    wait_for("redis", Duration::from_secs(20), || ping(&addr))?;
    Ok(guard)
}

impl Redis {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let guard = spawn_redis(port, dir.path(), &[])?;
        Ok(Self {
            guard,
            url: format!("redis://127.0.0.1:{port}"),
            port,
            dir,
        })
    }

    /// Stops Redis as a crash would (it persists nothing, so it comes back empty).
    pub fn kill(&mut self) {
        self.guard.kill();
    }

    /// Starts Redis again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.guard.kill();
        self.guard = spawn_redis(self.port, self.dir.path(), &[])?;
        Ok(())
    }
}

/// A three-node Redis Cluster (no replicas) on free ports. Ports stay at or
/// below 55535 because each node's cluster bus listens on port + 10000.
pub struct RedisCluster {
    pub nodes: Vec<Guard>,
    pub urls: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

fn cluster_port() -> anyhow::Result<u16> {
    // Ephemeral ports are mostly above 55535, so pick from a lower range,
    // spread by process id and time so parallel test runs rarely collide.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..2000u32 {
        let port = 20000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 30000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port pair for a cluster node")
}

impl RedisCluster {
    pub fn start() -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        let mut dirs = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir()?;
            let port = cluster_port()?;
            let conf = dir.path().join("nodes.conf").to_string_lossy().into_owned();
            nodes.push(spawn_redis(
                port,
                dir.path(),
                &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
            )?);
            urls.push(format!("redis://127.0.0.1:{port}"));
            ports.push(port);
            dirs.push(dir);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("cannot run redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        for port in &ports {
            let port = port.to_string();
            wait_for("redis cluster", Duration::from_secs(30), || {
                Command::new("redis-cli")
                    .args(["-p", &port, "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            })?;
        }
        Ok(Self {
            nodes,
            urls,
            _dirs: dirs,
        })
    }
}

fn ping(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// One of the project's binaries, started with a config file; ready once it
/// prints `READY <service> <url>` on stdout.
pub struct Service {
    pub guard: Guard,
    /// Base URL the service announced.
    pub url: String,
    pub log: PathBuf,
}

impl Service {
    pub fn start(
        binary_name: &str,
        config: &Path,
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = log_dir.join(format!(
            "{}-{}.log",
            binary_name,
            config.file_stem().and_then(|s| s.to_str()).unwrap_or("x")
        ));
        let stderr = std::fs::File::create(&log)?;
        let mut command = Command::new(binary(binary_name)?);
        command
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {binary_name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let guard = Guard::new(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("READY ")
                    && let Some(tx) = tx.take()
                {
                    let url = rest
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(Self { guard, url, log }),
            Err(_) => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{binary_name} did not become ready; its log:\n{tail}")
            }
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}
