//! The `bench` program: which workloads to run, how big, and where the report goes.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::charts;
use crate::processes::Programs;
use crate::suite::{self, Measured, Scale, Workload};
use crate::workloads::Language;

const EXAMPLES: &str = "\
Examples:
  cargo run --release -p bench -- all          # every workload, 3 runs each; writes docs/bench/
  cargo run --release -p bench -- w2d md       # the durable ones: the broker with --data-dir
  cargo run --release -p bench -- w2c1 w2c3    # two brokers over NATS JetStream (nats-server on PATH)
  cargo run --release -p bench -- w2 --runs 5  # W2 only, median of 5
  cargo run --release -p bench -- w2 w2tls     # W2 in plain TCP and in TLS
  cargo run --release -p bench -- w1 w2 w1go w2go  # W1 and W2, ours beside the Go lab's (go on PATH)
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
    /// W1 with the Go lab's miner and factories (tests/go, built with the `go` on PATH).
    W1go,
    /// W2 with the Go lab's miner and factories (tests/go, built with the `go` on PATH).
    W2go,
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
    /// W2 over TLS: W2 with every connection in TLS, certificates from `broker tls-init`.
    W2tls,
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
                    Target::W1go => *workload == Workload::W1Go,
                    Target::W2go => *workload == Workload::W2Go,
                    Target::W3 => *workload == Workload::W3,
                    Target::M => *workload == Workload::M,
                    Target::S => *workload == Workload::S,
                    Target::W2d => *workload == Workload::W2Durable,
                    Target::Md => *workload == Workload::MDurable,
                    Target::W2tls => *workload == Workload::W2Tls,
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
    let workloads = cli.workloads();
    // Built first: a machine without Go learns it before a long cargo build.
    let go = if workloads.iter().any(|w| w.language() == Language::Go) {
        Some(crate::go::build(&crate::processes::target_dir()?)?)
    } else {
        None
    };
    let mut programs = match &cli.programs {
        Some(dir) => Programs::prebuilt(dir, &logs)?,
        None => Programs::build(&logs)?,
    };
    if let Some(go) = &go {
        programs = programs.with_go(&go.dir);
    }
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
    if let Some(go) = &go {
        println!("Go lab's programs: tests/go built with {}", go.version);
    }
    let mut measured = Vec::new();
    for workload in workloads {
        measured.extend(suite::measure(&programs, workload, scale).await?);
    }
    for (ours, go) in suite::go_beside_ours(&measured) {
        println!("{}", suite::beside_line(ours, go));
    }
    write_charts(&out, &measured)?;
    let invocation = Invocation {
        machine: &machine,
        command: &command(programs.release()),
        scale,
        release: programs.release(),
        go_version: go.as_ref().map(|go| go.version.as_str()),
    };
    let report = report(&invocation, &measured);
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

/// The target for a workload, as docs/benchmarks.md's table gives it.
fn target(workload: Workload) -> &'static str {
    match workload {
        Workload::W1 => "≥ 15,000 jobs/s",
        Workload::W2 => "≥ 300,000 jobs/s",
        Workload::W1Go | Workload::W2Go => "",
        Workload::W3 => "p50 ≤ 100 µs, p99 ≤ 250 µs",
        Workload::M => "≤ 40 MiB",
        Workload::S => "",
        Workload::W2Durable => "≥ 100,000 jobs/s, publish ack p99 ≤ 2,000 µs",
        Workload::MDurable => "≤ 100 bytes a job on disk, recovery < 3 s",
        Workload::W2Tls => "",
        Workload::W2ClusterOne => "",
        Workload::W2ClusterThree => "≥ 60% of JetStream used directly",
    }
}

/// What the report says of how its figures were made.
struct Invocation<'a> {
    machine: &'a str,
    command: &'a str,
    scale: Scale,
    release: bool,
    /// The Go that built the Go lab's programs, when they ran.
    go_version: Option<&'a str>,
}

/// The command that ran this report, as it would be typed.
fn command(release: bool) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run{} -p bench -- {}",
        if release { " --release" } else { "" },
        args.join(" ")
    )
}

/// The report as Markdown: the machine, then a row per flow, then the Go lab's programs
/// beside ours when both ran.
fn report(invocation: &Invocation, measured: &[Measured]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "# Latest benchmark figures\n");
    let _ = writeln!(text, "- machine: {}", invocation.machine);
    let _ = writeln!(
        text,
        "- build: {}; medians of {} run(s) per row",
        if invocation.release {
            "release"
        } else {
            "debug (not comparable)"
        },
        invocation.scale.runs
    );
    let _ = writeln!(text, "- command: `{}`\n", invocation.command);
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
    let beside = suite::go_beside_ours(measured);
    if !beside.is_empty() {
        go_section(&mut text, invocation.go_version.unwrap_or("go"), &beside);
    }
    text
}

/// The section that sets the Go lab's miner and factories beside ours, shape by shape.
fn go_section(text: &mut String, go_version: &str, beside: &[(&Measured, &Measured)]) {
    let _ = writeln!(
        text,
        "\n## The Go lab's miner and factories through our broker\n"
    );
    let _ = writeln!(
        text,
        "W1go and W2go are W1 and W2 with the Go lab's own programs (`tests/go`, built with \
         {go_version}, the same for every run) in place of ours, over Go's net/rpc: the miner with \
         `-concurrency` publishers and `-interval 0`, each factory with `-no-pipeline -no-divide` \
         and `-subscribe-times` as its prefetch; the runner creates the topic first with the \
         shape's buffer. Broker CPU per job is the broker's CPU time from the miner's start until \
         the last job was completed, over the jobs.\n"
    );
    let _ = writeln!(
        text,
        "| shape | jobs/s, ours | jobs/s, Go lab's | Go / ours | broker CPU per job, ours | broker CPU per job, Go lab's |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|---|");
    for (ours, go) in beside {
        let _ = writeln!(
            text,
            "| {} / {} | {} | {} | {:.0}% | {:.1} µs | {:.1} µs |",
            ours.workload.name(),
            go.workload.name(),
            suite::thousands(ours.jobs_per_s()),
            suite::thousands(go.jobs_per_s()),
            100.0 * go.jobs_per_s() / ours.jobs_per_s().max(1e-9),
            ours.broker_cpu_per_job_us(),
            go.broker_cpu_per_job_us(),
        );
    }
}
