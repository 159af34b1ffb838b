//! A program of the soak, its output in files, and the random choice of kills.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::EXIT_LIMIT;
use crate::machine;

/// A program of the soak with its output in files, killed when dropped.
pub(super) struct Program {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Program {
    /// Starts `program` from `dir` with `args`, its output in `out` under `label`.
    pub fn start(
        dir: &Path,
        out: &Path,
        program: &str,
        label: &str,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let stdout = out.join(format!("{label}.out"));
        let stderr = out.join(format!("{label}.log"));
        let create = |path: &Path| {
            File::create(path).with_context(|| format!("cannot create {}", path.display()))
        };
        let child = Command::new(dir.join(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(create(&stdout)?)
            .stderr(create(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    /// Fails with the end of its log if it has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            bail!(
                "{} exited ({status}); the end of its log:\n{}",
                self.label,
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        Ok(())
    }

    pub fn rss_bytes(&self) -> u64 {
        machine::usage(self.child.id()).map_or(0, |usage| usage.rss_bytes)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a successful exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        let deadline = Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.label);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {EXIT_LIMIT:?} of SIGTERM",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything it printed on its standard output.
    pub fn output(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.stdout)
            .with_context(|| format!("cannot read {}", self.stdout.display()))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small random generator (xorshift64*), enough to choose kills reproducibly.
pub(super) struct Random(pub u64);

impl Random {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number from 0 to 1.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
