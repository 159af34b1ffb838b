//! The `bench` program: which workloads to run, how big, and where the report goes.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::charts;
use crate::processes::Programs;
use crate::suite::{self, Measured, Scale, Workload};

const EXAMPLES: &str = "\
Examples:
  cargo run --release -p bench -- all          # every workload, 3 runs each; writes docs/bench/
  cargo run --release -p bench -- w2d md       # the durable ones: the broker with --data-dir
  cargo run --release -p bench -- w2c1 w2c3    # two brokers over NATS JetStream (nats-server on PATH)
  cargo run --release -p bench -- w2 --runs 5  # W2 only, median of 5
  cargo run -p bench -- all --smoke            # a few hundred jobs each, to check the runner";

/// What to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Every workload, in order.
    All,
    /// W1 faithful: buffer 10, 1 publisher, 2 factories with prefetch 1, 20,000 jobs.
    W1,
    /// W2 concurrent: buffer 1,000, 32 publishers, 4 factories with prefetch 16, 200,000 jobs.
    W2,
    /// W3 latency: 5,000 jobs/s for 10 s, 4 factories with prefetch 16.
    W3,
    /// M memory: 1,000,000 jobs queued in one topic, no factory.
    M,
    /// S scaling: W2 with 1, 2, 4 and 8 factories.
    S,
    /// W2 durable: W2 with the broker's jobs on disk (`--data-dir`, fsync always).
    W2d,
    /// M durable: M with the broker's jobs on disk.
    Md,
    /// W2 cluster, one node: W2 through two brokers over one NATS JetStream server.
    W2c1,
    /// W2 cluster, three nodes: W2 through two brokers over three NATS servers, replicas 3,
    /// against JetStream used directly on the same cluster.
    W2c3,
}

/// pairbroker's benchmark runner: starts the real broker, factory and miner programs (built
/// with this runner's profile) as separate processes on loopback, and prints one line per
/// workload: the median of its runs, the broker's peak memory and each program's CPU time.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", version, after_help = EXAMPLES)]
pub struct Cli {
    /// The workloads to run.
    #[arg(value_enum, required = true)]
    pub targets: Vec<Target>,
    /// A few hundred jobs per workload and one run each: checks that the runner works.
    #[arg(long)]
    pub smoke: bool,
    /// Runs per workload; the median is reported [default: 3, or 1 with --smoke].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: Option<u32>,
    /// Where the report (latest.md) and the charts go [default: docs/bench, or
    /// target/bench-smoke with --smoke].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the broker, factory and miner found in this folder instead of building them: to
    /// compare two builds (e.g. a copy of target/release from another commit).
    #[arg(long)]
    pub programs: Option<PathBuf>,
}

impl Cli {
    fn scale(&self) -> Scale {
        let scale = if self.smoke {
            Scale::SMOKE
        } else {
            Scale::FULL
        };
        Scale {
            runs: self.runs.unwrap_or(scale.runs),
            ..scale
        }
    }

    fn workloads(&self) -> Vec<Workload> {
        if self.targets.contains(&Target::All) {
            return Workload::ALL.to_vec();
        }
        Workload::ALL
            .into_iter()
            .filter(|workload| {
                self.targets.iter().any(|target| match target {
                    Target::All => true,
                    Target::W1 => *workload == Workload::W1,
                    Target::W2 => *workload == Workload::W2,
                    Target::W3 => *workload == Workload::W3,
                    Target::M => *workload == Workload::M,
                    Target::S => *workload == Workload::S,
                    Target::W2d => *workload == Workload::W2Durable,
                    Target::Md => *workload == Workload::MDurable,
                    Target::W2c1 => *workload == Workload::W2ClusterOne,
                    Target::W2c3 => *workload == Workload::W2ClusterThree,
                })
            })
            .collect()
    }
}

/// Runs the chosen workloads, prints a line for each, and writes the report and charts.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = cli.out.clone().unwrap_or_else(|| {
        PathBuf::from(if cli.smoke {
            "target/bench-smoke"
        } else {
            "docs/bench"
        })
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let logs = std::env::temp_dir().join(format!("pairbroker-bench-{}", std::process::id()));
    let programs = match &cli.programs {
        Some(dir) => Programs::prebuilt(dir, &logs)?,
        None => Programs::build(&logs)?,
    };
    let scale = cli.scale();
    let machine = crate::machine::describe();
    println!("machine: {machine}");
    println!(
        "programs: {} build; program logs in {}",
        if programs.release() {
            "release"
        } else {
            "debug (figures are not comparable)"
        },
        logs.display()
    );
    let mut measured = Vec::new();
    for workload in cli.workloads() {
        measured.extend(suite::measure(&programs, workload, scale).await?);
    }
    write_charts(&out, &measured)?;
    let report = report(&machine, scale, programs.release(), &measured);
    let path = out.join("latest.md");
    std::fs::write(&path, report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

fn write_charts(out: &std::path::Path, measured: &[Measured]) -> anyhow::Result<()> {
    let scaling: Vec<(u32, f64)> = measured
        .iter()
        .filter(|result| result.workload == Workload::S)
        .map(|result| (result.flow.factories, result.jobs_per_s()))
        .collect();
    if !scaling.is_empty() {
        let path = out.join("scaling.svg");
        charts::scaling(&path, &scaling)?;
        println!("chart: {}", path.display());
    }
    if let Some(latency) = measured
        .iter()
        .find(|result| result.workload == Workload::W3)
    {
        // The run with the median p99 stands for the workload.
        let mut runs: Vec<_> = latency.runs.iter().collect();
        runs.sort_by_key(|run| run.p99_us);
        let run = runs[runs.len() / 2];
        let path = out.join("latency.svg");
        let title = format!(
            "W3: {} jobs at {} jobs/s, p50 {} µs, p99 {} µs",
            suite::thousands(latency.flow.jobs as f64),
            suite::thousands(f64::from(latency.flow.rate.unwrap_or(0))),
            run.p50_us,
            run.p99_us
        );
        charts::latency(&path, &title, &run.latency_buckets)?;
        println!("chart: {}", path.display());
    }
    Ok(())
}

/// The target of issue 5 for a workload, as README's table gives it.
fn target(workload: Workload) -> &'static str {
    match workload {
        Workload::W1 => "≥ 15,000 jobs/s",
        Workload::W2 => "≥ 300,000 jobs/s",
        Workload::W3 => "p50 ≤ 100 µs, p99 ≤ 250 µs",
        Workload::M => "≤ 40 MiB",
        Workload::S => "",
        Workload::W2Durable => "≥ 100,000 jobs/s, publish ack p99 ≤ 2,000 µs",
        Workload::MDurable => "≤ 100 bytes a job on disk, recovery < 3 s",
        Workload::W2ClusterOne => "",
        Workload::W2ClusterThree => "≥ 60% of JetStream used directly",
    }
}

/// The report as Markdown: the machine, then a row per flow.
fn report(machine: &str, scale: Scale, release: bool, measured: &[Measured]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Latest benchmark figures\n");
    let _ = writeln!(text, "- machine: {machine}");
    let _ = writeln!(
        text,
        "- build: {}; medians of {} run(s) per row",
        if release {
            "release"
        } else {
            "debug (not comparable)"
        },
        scale.runs
    );
    let _ = writeln!(text, "- command: `cargo run --release -p bench -- all`\n");
    let _ = writeln!(
        text,
        "| workload | shape | median | target | runs | broker peak RSS | CPU s broker / factories / miner |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|---|---|");
    for result in measured {
        let flow = result.flow;
        let runs: Vec<String> = result
            .runs
            .iter()
            .map(|run| result.run_figure(run))
            .collect();
        let cpu = |figure: fn(&crate::workloads::RunFigures) -> f64| {
            let mut values: Vec<f64> = result.runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            values.get(values.len() / 2).copied().unwrap_or(0.0)
        };
        let _ = writeln!(
            text,
            "| {} | {} jobs, buffer {}, {} publishers, {} factories × prefetch {} | {} | {} | {} | {:.1} MiB | {:.2} / {:.2} / {:.2} |",
            result.workload.name(),
            suite::thousands(flow.jobs as f64),
            suite::thousands(f64::from(flow.buffer)),
            flow.publishers,
            flow.factories,
            flow.prefetch,
            result.headline(),
            target(result.workload),
            runs.join(" / "),
            result.broker_rss_mib().1,
            cpu(|run| run.broker.cpu_s),
            cpu(|run| run.factories_cpu_s),
            cpu(|run| run.miner_cpu_s),
        );
    }
    text
}
