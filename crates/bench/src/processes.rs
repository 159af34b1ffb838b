//! The programs under test, built and started as separate processes, and a broker reached once
//! it listens.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stubs::BrokerClient;
use transport::{AccessToken, ClientTls};

use crate::machine::{self, Usage};

/// The `broker`, `factory` and `miner` programs, built with the runner's own profile, and the
/// Go lab's `miner` and `factory` when a workload needs them.
#[derive(Clone, Debug)]
pub struct Programs {
    dir: PathBuf,
    logs: PathBuf,
    go: Option<PathBuf>,
}

/// Cargo's target directory: the runner runs from `<target>/<profile>/`.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let runner = std::env::current_exe().context("cannot find the runner's own path")?;
    runner
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the runner does not run from <target>/<profile>/")
}

impl Programs {
    /// Builds the three programs with the profile this runner was built with (`--release` for
    /// real figures) and finds them beside the runner. Their standard error goes to `logs`.
    pub fn build(logs: &Path) -> anyhow::Result<Self> {
        let runner = std::env::current_exe().context("cannot find the runner's own path")?;
        let dir = runner
            .parent()
            .context("the runner has no directory")?
            .to_path_buf();
        let release = !cfg!(debug_assertions);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args([
            "build", "--quiet", "-p", "broker", "-p", "factory", "-p", "miner",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build
            .status()
            .context("cannot run cargo to build the programs")?;
        if !status.success() {
            bail!("building broker, factory and miner failed ({status})");
        }
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        Ok(Self {
            dir,
            logs: logs.to_path_buf(),
            go: None,
        })
    }

    /// The programs already built in `dir`, e.g. another commit's, to compare two builds.
    pub fn prebuilt(dir: &Path, logs: &Path) -> anyhow::Result<Self> {
        for program in ["broker", "factory", "miner"] {
            if !dir.join(program).is_file() {
                bail!("{} has no '{program}' program", dir.display());
            }
        }
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            logs: logs.to_path_buf(),
            go: None,
        })
    }

    /// Whether the programs are release builds, the only ones whose figures mean anything.
    pub fn release(&self) -> bool {
        !cfg!(debug_assertions)
    }

    /// The same programs, and the Go lab's built in `dir` (see [`crate::go::build`]).
    pub fn with_go(self, dir: &Path) -> Self {
        Self {
            go: Some(dir.to_path_buf()),
            ..self
        }
    }

    /// Starts `program` with `args`; its standard output is dropped and its standard error
    /// kept in the log folder under `label`.
    pub fn start(&self, program: &str, label: &str, args: &[String]) -> anyhow::Result<Process> {
        Self::spawn(&self.dir.join(program), &self.logs, label, args)
    }

    /// Starts the Go lab's `program` (`miner` or `factory`) as [`Programs::start`] starts ours.
    pub fn start_go(&self, program: &str, label: &str, args: &[String]) -> anyhow::Result<Process> {
        let dir = self
            .go
            .as_deref()
            .context("the Go lab's programs were not built for this run")?;
        Self::spawn(&dir.join(program), &self.logs, label, args)
    }

    fn spawn(path: &Path, logs: &Path, label: &str, args: &[String]) -> anyhow::Result<Process> {
        let log_path = logs.join(format!("{label}.log"));
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        Ok(Process {
            label: label.to_owned(),
            child,
            log_path,
            last_usage: Usage::default(),
        })
    }
}

/// A running program, killed when dropped.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    log_path: PathBuf,
    last_usage: Usage,
}

impl Process {
    /// The name it was started under.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its CPU time and memory now, or the last figures read while it ran.
    pub fn usage(&mut self) -> Usage {
        if let Some(usage) = machine::usage(self.child.id()) {
            // A process that has exited but is not yet reaped keeps its CPU time but no memory.
            self.last_usage = Usage {
                cpu_s: usage.cpu_s.max(self.last_usage.cpu_s),
                rss_bytes: usage.rss_bytes,
                peak_rss_bytes: usage.peak_rss_bytes.max(self.last_usage.peak_rss_bytes),
            };
        }
        self.last_usage
    }

    /// Fails with the end of its log if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); the end of its log:\n{}",
                self.label,
                self.log_tail()
            ),
            Err(error) => bail!("cannot check on {}: {error}", self.label),
        }
    }

    /// Whether it exited successfully, without waiting.
    pub fn exited_successfully(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(status)) if status.success())
    }

    /// Kills the process (SIGKILL, as a crash would end it) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit on its own; whether it did.
    pub async fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The last lines of its standard error.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An address on loopback with a free port, for a program to listen on.
pub fn loopback() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        listener.local_addr()?.port(),
    )))
}

/// How long a broker just started may take to listen.
const LISTEN_LIMIT: Duration = Duration::from_secs(30);

/// A client of the broker at `address` once it listens, dialling in TLS with `tls`; while it
/// does not, `alive` says whether the programs that should be running still are.
pub async fn connect(
    address: SocketAddr,
    tls: Option<&ClientTls>,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<BrokerClient> {
    let deadline = Instant::now() + LISTEN_LIMIT;
    loop {
        let token = AccessToken::none();
        match transport::connect_broker(&address.to_string(), Duration::from_secs(1), &token, tls)
            .await
        {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                bail!("the broker did not start listening: {error}")
            }
            Err(_) => {
                alive()?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
