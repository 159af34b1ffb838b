//! The benchmark suite: the workloads of docs/bench, each run several times, reported by its median.

use std::fmt::Write as _;
use std::time::Duration;

use crate::processes::Programs;
use crate::workloads::{self, Flow, Language, RunFigures, Store};

/// How big the runs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Jobs in W1.
    pub faithful_jobs: u64,
    /// Jobs in W2 and in each point of S.
    pub concurrent_jobs: u64,
    /// W3's publish rate, jobs per second.
    pub latency_rate: u32,
    /// How long W3 publishes.
    pub latency_seconds: u32,
    /// Jobs queued in M.
    pub memory_jobs: u64,
    /// Runs of each workload; the median is reported.
    pub runs: u32,
    /// How long to wait, before each run, for the machine to be idle.
    pub idle_wait: Duration,
}

impl Scale {
    /// The figures docs/benchmarks.md reports: the full sizes, three runs each.
    pub const FULL: Scale = Scale {
        faithful_jobs: 20_000,
        concurrent_jobs: 200_000,
        latency_rate: 5_000,
        latency_seconds: 10,
        memory_jobs: 1_000_000,
        runs: 3,
        idle_wait: Duration::from_secs(30),
    };

    /// A few hundred jobs per workload, once: to keep the runner working, not to measure.
    pub const SMOKE: Scale = Scale {
        faithful_jobs: 200,
        concurrent_jobs: 500,
        latency_rate: 500,
        latency_seconds: 1,
        memory_jobs: 2_000,
        runs: 1,
        idle_wait: Duration::from_secs(1),
    };
}

/// A workload of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// W1: buffer 10, one publisher, two factories with prefetch 1.
    W1,
    /// W2: buffer 1,000, 32 publishers, four factories with prefetch 16.
    W2,
    /// W1 with the Go lab's miner and factories, over Go's net/rpc.
    W1Go,
    /// W2 with the Go lab's miner and factories, over Go's net/rpc.
    W2Go,
    /// W3: 5,000 jobs/s for 10 s, four factories with prefetch 16: latency.
    W3,
    /// M: 1,000,000 jobs queued, no factory: the broker's memory.
    M,
    /// S: W2 with 1, 2, 4 and 8 factories.
    S,
    /// W2 with the broker's jobs on disk (`--data-dir`, fsync always).
    W2Durable,
    /// W2 with every connection in TLS (`--tls-dir` on every program).
    W2Tls,
    /// M with the broker's jobs on disk: memory, and bytes a job on disk.
    MDurable,
    /// W2 through two brokers over a one-node NATS JetStream (`--store nats://…`).
    W2ClusterOne,
    /// W2 through two brokers over a three-node NATS JetStream cluster, three replicas, and
    /// W2 with JetStream used directly on the same cluster just before each run.
    W2ClusterThree,
}

/// The factory counts of the S curve.
pub const SCALING_FACTORIES: [u32; 4] = [1, 2, 4, 8];

/// The concurrent flow with `factories` factories, in memory, that most workloads vary.
fn concurrent(scale: Scale, factories: u32) -> Flow {
    Flow {
        buffer: 1_000,
        publishers: 32,
        factories,
        prefetch: 16,
        jobs: scale.concurrent_jobs,
        rate: None,
        store: Store::Memory,
        language: Language::Rust,
        tls: false,
    }
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Workload; 12] = [
        Workload::W1,
        Workload::W2,
        Workload::W1Go,
        Workload::W2Go,
        Workload::W3,
        Workload::M,
        Workload::S,
        Workload::W2Durable,
        Workload::W2Tls,
        Workload::MDurable,
        Workload::W2ClusterOne,
        Workload::W2ClusterThree,
    ];

    /// The flows of one run of this workload (S has one per factory count).
    pub fn flows(self, scale: Scale) -> Vec<Flow> {
        let concurrent = |factories| concurrent(scale, factories);
        let in_go = |flows: Vec<Flow>| {
            flows
                .into_iter()
                .map(|flow| Flow {
                    language: Language::Go,
                    ..flow
                })
                .collect()
        };
        let in_nats = |nodes, direct| Flow {
            store: Store::Nats { nodes, direct },
            ..concurrent(4)
        };
        match self {
            Workload::W1 => vec![Flow {
                buffer: 10,
                publishers: 1,
                factories: 2,
                prefetch: 1,
                jobs: scale.faithful_jobs,
                ..concurrent(2)
            }],
            Workload::W2 => vec![concurrent(4)],
            Workload::W1Go => in_go(Workload::W1.flows(scale)),
            Workload::W2Go => in_go(Workload::W2.flows(scale)),
            Workload::W3 => vec![Flow {
                // Enough publishers that a slow round trip never holds the schedule back.
                publishers: 16,
                jobs: u64::from(scale.latency_rate) * u64::from(scale.latency_seconds),
                rate: Some(scale.latency_rate),
                ..concurrent(4)
            }],
            Workload::M => vec![Flow {
                buffer: scale.memory_jobs.min(u64::from(u32::MAX)) as u32,
                prefetch: 1,
                jobs: scale.memory_jobs,
                ..concurrent(0)
            }],
            Workload::S => SCALING_FACTORIES.into_iter().map(concurrent).collect(),
            Workload::W2Durable => vec![Flow {
                store: Store::Disk,
                ..concurrent(4)
            }],
            Workload::W2Tls => vec![Flow {
                tls: true,
                ..concurrent(4)
            }],
            Workload::MDurable => {
                let mut flows = Workload::M.flows(scale);
                flows[0].store = Store::Disk;
                flows
            }
            Workload::W2ClusterOne => vec![in_nats(1, false)],
            Workload::W2ClusterThree => vec![in_nats(3, true)],
        }
    }

    /// Whose miner and factories it runs.
    pub fn language(self) -> Language {
        match self {
            Workload::W1Go | Workload::W2Go => Language::Go,
            _ => Language::Rust,
        }
    }

    /// For a workload of the Go lab's programs, the same shape with ours.
    pub fn ours(self) -> Option<Workload> {
        match self {
            Workload::W1Go => Some(Workload::W1),
            Workload::W2Go => Some(Workload::W2),
            _ => None,
        }
    }

    /// The workload's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W1Go => "W1go",
            Workload::W2Go => "W2go",
            Workload::W3 => "W3",
            Workload::M => "M",
            Workload::S => "S",
            Workload::W2Durable => "W2d",
            Workload::W2Tls => "W2tls",
            Workload::MDurable => "Md",
            Workload::W2ClusterOne => "W2c1",
            Workload::W2ClusterThree => "W2c3",
        }
    }
}

/// A flow's runs and their medians.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The workload.
    pub workload: Workload,
    /// The flow.
    pub flow: Flow,
    /// Every run, in order.
    pub runs: Vec<RunFigures>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Measured {
    fn median_of(&self, figure: impl Fn(&RunFigures) -> f64) -> f64 {
        median(self.runs.iter().map(figure).collect())
    }

    /// Median jobs per second.
    pub fn jobs_per_s(&self) -> f64 {
        self.median_of(RunFigures::jobs_per_s)
    }

    /// Median microseconds of broker CPU time per job, while the jobs flowed.
    pub fn broker_cpu_per_job_us(&self) -> f64 {
        self.median_of(RunFigures::broker_cpu_per_job_us)
    }

    /// Median p50 and p99 latency, in microseconds.
    pub fn latency_us(&self) -> (f64, f64) {
        (
            self.median_of(|run| run.p50_us as f64),
            self.median_of(|run| run.p99_us as f64),
        )
    }

    /// Median of the broker's resident memory at the end, and of its peak, in MiB.
    pub fn broker_rss_mib(&self) -> (f64, f64) {
        (
            self.median_of(|run| mib(run.broker.rss_bytes)),
            self.median_of(|run| mib(run.broker.peak_rss_bytes)),
        )
    }

    /// The headline figure: what the workload is judged by.
    pub fn headline(&self) -> String {
        match self.workload {
            Workload::W3 => {
                let (p50, p99) = self.latency_us();
                format!("p50 {p50:.0} µs, p99 {p99:.0} µs")
            }
            Workload::M => format!("broker RSS {:.1} MiB", self.broker_rss_mib().0),
            Workload::MDurable => format!(
                "broker RSS {:.1} MiB, {:.0} bytes a job on disk, recovery {:.0} ms, queued at {} jobs/s",
                self.broker_rss_mib().0,
                self.median_of(|run| run.data_bytes as f64 / run.jobs.max(1) as f64),
                self.median_of(|run| run
                    .recovery
                    .map_or(0.0, |recovery| recovery.as_secs_f64() * 1e3)),
                thousands(self.jobs_per_s())
            ),
            Workload::W2Durable | Workload::W2ClusterOne => format!(
                "{} jobs/s, publish ack p99 {:.0} µs",
                thousands(self.jobs_per_s()),
                self.median_of(|run| run.ack_us.1 as f64)
            ),
            Workload::W2ClusterThree => {
                let direct = self.median_of(|run| run.direct_jobs_per_s.unwrap_or(0.0));
                format!(
                    "{} jobs/s ({:.0}% of JetStream used directly: {} jobs/s), publish ack p99 {:.0} µs",
                    thousands(self.jobs_per_s()),
                    100.0 * self.jobs_per_s() / direct.max(1e-9),
                    thousands(direct),
                    self.median_of(|run| run.ack_us.1 as f64)
                )
            }
            Workload::W1
            | Workload::W2
            | Workload::W1Go
            | Workload::W2Go
            | Workload::W2Tls => format!(
                "{} jobs/s, broker CPU {:.1} µs/job",
                thousands(self.jobs_per_s()),
                self.broker_cpu_per_job_us()
            ),
            _ => format!("{} jobs/s", thousands(self.jobs_per_s())),
        }
    }

    /// One run's figure, as the headline gives it.
    pub fn run_figure(&self, run: &RunFigures) -> String {
        match self.workload {
            Workload::W3 => format!("{}/{}", run.p50_us, run.p99_us),
            Workload::M => format!("{:.1} MiB", mib(run.broker.rss_bytes)),
            Workload::MDurable => format!(
                "{:.1} MiB, {:.0} B/job, {} ms",
                mib(run.broker.rss_bytes),
                run.data_bytes as f64 / run.jobs.max(1) as f64,
                run.recovery.map_or(0, |recovery| recovery.as_millis())
            ),
            Workload::W2Durable | Workload::W2ClusterOne => {
                format!("{} ({} µs)", thousands(run.jobs_per_s()), run.ack_us.1)
            }
            Workload::W2ClusterThree => format!(
                "{} vs {} direct",
                thousands(run.jobs_per_s()),
                thousands(run.direct_jobs_per_s.unwrap_or(0.0))
            ),
            Workload::W1 | Workload::W2 | Workload::W1Go | Workload::W2Go | Workload::W2Tls => {
                format!(
                    "{} ({:.1} µs/job)",
                    thousands(run.jobs_per_s()),
                    run.broker_cpu_per_job_us()
                )
            }
            _ => thousands(run.jobs_per_s()),
        }
    }

    /// One line: the flow, the headline, every run's figure, memory and CPU seconds.
    pub fn line(&self) -> String {
        let flow = self.flow;
        let runs: Vec<String> = self.runs.iter().map(|run| self.run_figure(run)).collect();
        let (_, peak) = self.broker_rss_mib();
        let mut line = format!(
            "{:<3} {:>8} jobs, buffer {:>7}, {:>2} publishers, {} factories x prefetch {:<2} | {} | runs {} | broker peak RSS {:.1} MiB | CPU s: broker {:.2}, factories {:.2}, miner {:.2}",
            self.workload.name(),
            flow.jobs,
            flow.buffer,
            flow.publishers,
            flow.factories,
            flow.prefetch,
            self.headline(),
            runs.join(" / "),
            peak,
            self.median_of(|run| run.broker.cpu_s),
            self.median_of(|run| run.factories_cpu_s),
            self.median_of(|run| run.miner_cpu_s),
        );
        let busiest = self
            .runs
            .iter()
            .map(|run| run.busy_before)
            .fold(0.0, f64::max);
        if busiest >= 0.10 {
            let _ = write!(line, " | machine {:.0}% busy before a run", busiest * 100.0);
        }
        line
    }
}

/// Each measured workload of the Go lab's programs with the same shape measured with ours:
/// (ours, the Go lab's).
pub fn go_beside_ours(measured: &[Measured]) -> Vec<(&Measured, &Measured)> {
    measured
        .iter()
        .filter_map(|go| {
            let ours = go.workload.ours()?;
            let ours = measured.iter().find(|result| result.workload == ours)?;
            Some((ours, go))
        })
        .collect()
}

/// One line comparing a shape run with our programs and with the Go lab's.
pub fn beside_line(ours: &Measured, go: &Measured) -> String {
    format!(
        "ours vs the Go lab's, {} vs {}: {} vs {} jobs/s ({:.0}%) | broker CPU {:.1} vs {:.1} µs/job",
        ours.workload.name(),
        go.workload.name(),
        thousands(ours.jobs_per_s()),
        thousands(go.jobs_per_s()),
        100.0 * go.jobs_per_s() / ours.jobs_per_s().max(1e-9),
        ours.broker_cpu_per_job_us(),
        go.broker_cpu_per_job_us(),
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Runs `workload` `scale.runs` times and prints a line per flow as it finishes.
pub async fn measure(
    programs: &Programs,
    workload: Workload,
    scale: Scale,
) -> anyhow::Result<Vec<Measured>> {
    let mut measured = Vec::new();
    for flow in workload.flows(scale) {
        let mut runs = Vec::new();
        for _ in 0..scale.runs {
            let figures =
                workloads::run(programs, flow, workload == Workload::W3, scale.idle_wait).await?;
            runs.push(figures);
            // Let the sockets of the last run close before the next one starts.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let result = Measured {
            workload,
            flow,
            runs,
        };
        println!("{}", result.line());
        measured.push(result);
    }
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
    }

    #[test]
    fn the_full_scale_is_the_readmes() {
        let w3 = Workload::W3.flows(Scale::FULL)[0];
        assert_eq!((w3.jobs, w3.rate), (50_000, Some(5_000)));
        let m = Workload::M.flows(Scale::FULL)[0];
        assert_eq!((m.buffer, m.jobs, m.factories), (1_000_000, 1_000_000, 0));
        let s: Vec<u32> = Workload::S
            .flows(Scale::FULL)
            .iter()
            .map(|flow| flow.factories)
            .collect();
        assert_eq!(s, vec![1, 2, 4, 8]);
    }

    #[test]
    fn the_go_workloads_have_the_shapes_of_w1_and_w2() {
        for (go, ours) in [
            (Workload::W1Go, Workload::W1),
            (Workload::W2Go, Workload::W2),
        ] {
            let go_flow = go.flows(Scale::FULL)[0];
            let our_flow = ours.flows(Scale::FULL)[0];
            assert_eq!(go_flow.language, Language::Go);
            assert_eq!(go.language(), Language::Go);
            assert_eq!(
                Flow {
                    language: Language::Rust,
                    ..go_flow
                },
                our_flow
            );
            assert_eq!(go.ours(), Some(ours));
        }
        assert_eq!(Workload::W1.language(), Language::Rust);
    }

    #[test]
    fn broker_cpu_per_job_is_over_the_jobs_counted() {
        let run = RunFigures {
            jobs: 20_000,
            broker_flow_cpu_s: 0.5,
            ..RunFigures::default()
        };
        assert_eq!(run.broker_cpu_per_job_us(), 25.0);
        assert_eq!(RunFigures::default().broker_cpu_per_job_us(), 0.0);
    }
}
