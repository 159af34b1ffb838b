//! The Go lab's own miner and factory (`tests/go`), built with the system's Go, and their
//! command lines for a flow: W1go and W2go run them against our broker.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::workloads::{Flow, TOPIC};

/// What a machine without Go is told: the Go workloads fail without it, they never skip.
pub const NEEDS_GO: &str = "install Go: apt-get install golang-go";

/// The Go lab's programs, built once per `bench` invocation so that every run of a workload
/// uses the same binaries.
#[derive(Clone, Debug)]
pub struct GoPrograms {
    /// The folder holding `miner` and `factory`.
    pub dir: PathBuf,
    /// The Go that built them, e.g. `go1.19.8`, for the report.
    pub version: String,
}

/// Builds `tests/go`'s miner and factory into `<target>/bench-go/`, in the environment the
/// system tests build them in ([`nats_harness::go::command`]): nothing downloaded, nothing
/// written to `$HOME`.
pub fn build(target: &Path) -> anyhow::Result<GoPrograms> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/go");
    // Checked first: a missing working directory is also reported as NotFound.
    if !source.is_dir() {
        bail!("the Go lab's sources are missing: {}", source.display());
    }
    let version = go(&source, target, ["env", "GOVERSION"])?;
    let dir = target.join("bench-go");
    for name in ["miner", "factory"] {
        let output = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let mut args = vec!["build".to_owned(), "-o".to_owned()];
        args.push(output.display().to_string());
        args.push(format!("./{name}"));
        go(&source, target, args).with_context(|| format!("go build ./{name} failed"))?;
    }
    Ok(GoPrograms {
        dir,
        version: version.trim().to_owned(),
    })
}

/// Runs `go args` in `source`; its standard output, or its standard error as the failure.
fn go<I, A>(source: &Path, target: &Path, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = A>,
    A: AsRef<std::ffi::OsStr>,
{
    let output = nats_harness::go::command(source, target, args)
        .with_context(|| format!("cannot create Go's caches in {}", target.display()))?
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("W1go and W2go run the Go lab's programs, and `go` is not on PATH: {NEEDS_GO}")
        }
        Err(error) => return Err(error).context("cannot run go"),
    };
    if !output.status.success() {
        bail!(
            "{} in {}:\n{}",
            output.status,
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The Go factory's arguments: only Multiply, no pipeline publishing Divide jobs back, and as
/// many subscriptions as the flow's prefetch, since each is one call in flight.
pub fn factory_args(flow: Flow, broker: &str) -> Vec<String> {
    [
        "-ip",
        "127.0.0.1:0",
        "-broker",
        broker,
        "-no-pipeline",
        "-no-divide",
        "-subscribe-times",
        &flow.prefetch.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The Go miner's arguments: the flow's publishers as goroutines on one client, as fast as
/// the broker takes the jobs. It has no rate: a flow with one is refused.
pub fn miner_args(flow: Flow, broker: &str) -> anyhow::Result<Vec<String>> {
    if flow.rate.is_some() {
        bail!("the Go miner publishes as fast as it can; it has no rate");
    }
    Ok([
        "-broker",
        broker,
        "-topic",
        TOPIC,
        "-concurrency",
        &flow.publishers.to_string(),
        "-count",
        &flow.jobs.to_string(),
        "-interval",
        "0",
        "-quiet",
    ]
    .map(str::to_owned)
    .to_vec())
}
