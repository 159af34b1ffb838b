//! The `lab` program: the whole lab end to end in one terminal.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use broker::{print_results, Settings};
use clap::Parser;
use factory::pipeline::PipelineReport;
use lab_console::Console;
use tokio_util::sync::CancellationToken;
use transport::{ClientTls, ServerTls, TlsFiles};

use crate::{factory_config, miner_config, start_miner, RunningBroker, RunningFactory};

/// How often the lab checks whether the broker's topics have drained, once `--count` jobs
/// have been published.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// The most factories a lab runs. Each is a server and a broker link in this one process, all
/// connecting from 127.0.0.1: 64 stays far inside the broker's per-address connection limit, and
/// is already more than anyone can follow in the interleaved lines.
pub const MAX_FACTORIES: u32 = 64;

const EXAMPLES: &str = "\
Examples:
  cargo run -p lab                                     # broker, two factories, a multiply miner
  cargo run -p lab -- --divide-miner                   # Part 2a
  cargo run -p lab -- --triplets                       # Part 3
  cargo run -p lab -- --interval 10ms --count 100      # a short run that stops by itself
  cargo run -p lab -- --port 0                         # when 8030 is taken
  cargo run -p lab -- --tls-dir tls                    # every connection in TLS (broker tls-init tls)
  cargo run -p lab -- mark --factory './target/debug/factory --port {port} --broker {broker}'
  cargo run -p lab -- new ../my-factory                # a student's starting point";

/// Runs the whole lab in one process: a broker, factories and a miner (Parts 1, 2a, 2b and 3),
/// each line prefixed by the component that printed it. Ctrl-C stops it. `lab mark` marks a
/// factory program part by part; `lab new` writes a student's starting point.
#[derive(Debug, Clone, Parser)]
#[command(name = "lab", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Something other than running the lab.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to run the lab.
    #[command(flatten)]
    pub lab: LabArgs,
    /// How logs are written to standard error.
    ///
    /// `text`, one readable line per event; `json`, one object per event, for log collectors.
    /// `RUST_LOG` chooses which events.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = lab_console::LogFormat::Text, global = true, help_heading = "Output")]
    pub log_format: lab_console::LogFormat,
}

/// What the lab program can do besides running the lab.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Mark a factory program part by part: start it against a broker of our own, send it
    /// chosen jobs and judge what the broker sees. Exits 0 only when every check passes.
    Mark(crate::mark::MarkArgs),
    /// Write a student's starting point: a Cargo project whose factory holds the lab's TODOs.
    New(crate::new::NewArgs),
}

/// Options of the lab run.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// The broker's port on 127.0.0.1; 0 takes a free one.
    ///
    /// The factories and miners of the lab find the broker on whichever port it got.
    #[arg(long, value_name = "PORT", default_value_t = broker::cli::DEFAULT_PORT, help_heading = "Broker")]
    pub port: u16,
    /// How many factories to start, on free ports.
    ///
    /// From 1 to 64: with none, no job is ever done.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=MAX_FACTORIES as i64), help_heading = "Factories")]
    pub factories: u32,
    /// Publish Triplets instead of Pairs (Part 3).
    ///
    /// Three random integers a job instead of two.
    #[arg(long, help_heading = "Miners")]
    pub triplets: bool,
    /// Also run a miner that publishes to `divide` (Part 2a).
    ///
    /// Without it, one miner publishes to `multiply`, and only the factories' pipeline
    /// publishes to `divide`.
    #[arg(long, help_heading = "Miners")]
    pub divide_miner: bool,
    /// Turn the factories' pipeline off (Parts 1 and 2a).
    ///
    /// Without it, each factory turns every two Multiply results (three with Triplets) into a
    /// Divide job.
    #[arg(long, help_heading = "Factories")]
    pub no_pipeline: bool,
    /// The pause between two jobs of a miner.
    ///
    /// A duration with its unit, e.g. `1s`, `10ms`.
    #[arg(long, value_name = "DURATION", default_value_t = miner::cli::DEFAULT_INTERVAL.into(), help_heading = "Miners")]
    pub interval: humantime::Duration,
    /// Stop once each miner has published this many jobs and every job is done.
    ///
    /// Without it, the lab runs until Ctrl-C.
    #[arg(long, value_name = "N", help_heading = "Miners")]
    pub count: Option<u64>,
    /// Seed the miners' random jobs.
    ///
    /// With the same seed, each miner publishes the same random jobs every time.
    #[arg(long, value_name = "N", help_heading = "Miners")]
    pub seed: Option<u64>,
    /// Run every connection of the lab in TLS, with the files of `broker tls-init DIR`.
    ///
    /// The broker and the factories serve with DIR/cert.pem and DIR/key.pem; the miners, the
    /// factories and the broker dial trusting DIR/ca.pem.
    #[arg(long, value_name = "DIR", help_heading = "Security")]
    pub tls_dir: Option<std::path::PathBuf>,
}

/// What the lab did, and where its divide jobs came from.
///
/// Once a `--count` run has drained, every job published is done, so `divided` (plus the
/// divide jobs failed) is the divide miner's jobs plus each pipeline's groups; a run stopped by
/// Ctrl-C may leave some in `unfinished`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabSummary {
    /// Multiply jobs completed.
    pub multiplied: u64,
    /// Divide jobs completed.
    pub divided: u64,
    /// Jobs failed with a job error.
    pub failed: u64,
    /// Jobs still queued or in flight when the lab stopped.
    pub unfinished: u64,
    /// The jobs the divide miner published; `None` without one.
    pub divide_miner: Option<u64>,
    /// Each factory's pipeline, in the order the factories started; empty with `--no-pipeline`.
    pub pipelines: Vec<FactoryPipeline>,
}

/// What one factory's pipeline did in a lab run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactoryPipeline {
    /// The factory's name in the lab's lines (`factory1`).
    pub factory: String,
    /// Its pipeline's report; `None` if the pipeline could not finish in time.
    pub report: Option<PipelineReport>,
}

impl LabSummary {
    /// The divide jobs the pipelines published.
    pub fn pipelines_published(&self) -> u64 {
        self.pipelines
            .iter()
            .filter_map(|pipeline| pipeline.report.as_ref())
            .map(PipelineReport::published)
            .sum()
    }
}

/// `20 multiply and 29 divide jobs completed, 0 failed; divide = 20 from the divide miner + 9
/// from the pipelines (each factory pairs its own results: factory1 had 11, paired 10, 1 left
/// unpaired; factory2 had 9, paired 8, 1 left unpaired)`.
impl fmt::Display for LabSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} multiply and {} divide jobs completed, {} failed",
            self.multiplied, self.divided, self.failed
        )?;
        if self.unfinished > 0 {
            write!(f, ", {} unfinished", self.unfinished)?;
        }
        let mut sources = Vec::new();
        if let Some(published) = self.divide_miner {
            sources.push(format!("{published} from the divide miner"));
        }
        if !self.pipelines.is_empty() {
            sources.push(format!("{} from the pipelines", self.pipelines_published()));
        }
        if sources.is_empty() {
            return Ok(());
        }
        write!(f, "; divide = {}", sources.join(" + "))?;
        if self.pipelines.is_empty() {
            return Ok(());
        }
        let triplets = self
            .pipelines
            .iter()
            .filter_map(|pipeline| pipeline.report.as_ref())
            .any(|report| report.triplet_results > 0);
        let grouping = if triplets {
            "groups its own results"
        } else {
            "pairs its own results"
        };
        let factories: Vec<String> = self
            .pipelines
            .iter()
            .map(|pipeline| describe(pipeline, triplets))
            .collect();
        write!(f, " (each factory {grouping}: {})", factories.join("; "))
    }
}

/// `factory1 had 11, paired 10, 1 left unpaired`, or in a lab of Triplets `factory1 had 11,
/// grouped 9 in threes, 2 left over`.
fn describe(pipeline: &FactoryPipeline, triplets_lab: bool) -> String {
    let name = &pipeline.factory;
    let Some(report) = &pipeline.report else {
        return format!("{name}'s pipeline did not report in time");
    };
    let pairs = || {
        let left = report.leftovers.pairs.len();
        let paired = 2 * report.pairs_published;
        format!(
            "had {}, paired {paired}, {left} left unpaired",
            report.pair_results
        )
    };
    let triplets = || {
        let left = report.leftovers.triplets.len();
        let grouped = 3 * report.triplets_published;
        format!(
            "had {}, grouped {grouped} in threes, {left} left over",
            report.triplet_results
        )
    };
    match (report.pair_results, report.triplet_results) {
        (0, _) if triplets_lab => format!("{name} {}", triplets()),
        (_, 0) => format!("{name} {}", pairs()),
        _ => format!("{name}: Pairs {}, Triplets {}", pairs(), triplets()),
    }
}

/// Why the lab could not run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The broker's port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port} ({cause}): is a broker already running? Stop it, or use --port 0", cause = .error.kind())]
    BrokerPort {
        /// The port asked for.
        port: u16,
        /// What the socket said.
        error: std::io::Error,
    },
    /// A factory's port could not be bound.
    #[error("cannot listen for a factory: {0}")]
    Listen(#[from] std::io::Error),
    /// A factory stopped with an error.
    #[error("a factory failed: {0}")]
    Factory(#[from] factory::FactoryError),
    /// A miner stopped with an error.
    #[error("a miner failed: {0}")]
    Miner(#[from] miner::MinerError),
    /// The TLS files cannot be used.
    #[error("{0}")]
    Tls(#[from] transport::TlsError),
}

/// Runs the lab until `shutdown` is cancelled or, with `--count`, until the work is done.
pub async fn run(cli: LabArgs, shutdown: CancellationToken) -> Result<LabSummary, LabError> {
    let (server_tls, client_tls) = match cli.tls_dir.as_deref().map(TlsFiles::in_dir) {
        Some(files) => (files.server()?, files.client()?),
        None => (None, None),
    };
    let mut settings = Settings {
        factory_tls: client_tls.clone(),
        ..Settings::default()
    };
    settings.admission.tls = server_tls.clone();
    let broker = RunningBroker::start(
        cli.port,
        settings,
        print_results(Console::prefixed("broker")),
    )
    .await
    .map_err(|error| LabError::BrokerPort {
        port: cli.port,
        error,
    })?;
    tracing::info!("the broker listens on {}", broker.address);
    let factories = start_factories(&cli, broker.address, &server_tls, &client_tls).await?;
    let (outcome, divide_miner) = run_miners(&cli, broker.address, &client_tls, &shutdown).await;
    if outcome.is_ok() && cli.count.is_some() {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = drained(&broker) => {}
        }
    } else {
        shutdown.cancelled().await;
    }
    let mut pipelines = Vec::new();
    for (name, factory) in factories {
        let report = factory.stop().await?;
        if !cli.no_pipeline {
            pipelines.push(FactoryPipeline {
                factory: name,
                report,
            });
        }
    }
    let multiply = broker
        .topic_counts(stubs::MULTIPLY_TOPIC)
        .await
        .unwrap_or_default();
    let divide = broker
        .topic_counts(stubs::DIVIDE_TOPIC)
        .await
        .unwrap_or_default();
    broker.stop().await;
    outcome?;
    let unfinished = multiply.ready + multiply.in_flight + divide.ready + divide.in_flight;
    Ok(LabSummary {
        multiplied: multiply.completed,
        divided: divide.completed,
        failed: multiply.failed + divide.failed,
        unfinished: unfinished as u64,
        divide_miner,
        pipelines,
    })
}

/// Starts the lab's factories on free ports, each named as its lines are prefixed.
async fn start_factories(
    cli: &LabArgs,
    broker: SocketAddr,
    server_tls: &Option<ServerTls>,
    client_tls: &Option<ClientTls>,
) -> Result<Vec<(String, RunningFactory)>, LabError> {
    let mut factories = Vec::new();
    for number in 1..=cli.factories {
        let name = format!("factory{number}");
        let console = Console::prefixed(&name);
        let mut config = factory_config(broker, !cli.no_pipeline);
        config.tls = server_tls.clone();
        config.link.tls = client_tls.clone();
        let factory = RunningFactory::start(0, config, console).await?;
        tracing::info!("factory {number} serves on {}", factory.address);
        factories.push((name, factory));
    }
    Ok(factories)
}

/// Runs the multiply miner, and the divide miner when asked, until they are done or `shutdown`
/// stops them: the first miner's error, if any, and the jobs the divide miner published.
async fn run_miners(
    cli: &LabArgs,
    broker: SocketAddr,
    client_tls: &Option<ClientTls>,
    shutdown: &CancellationToken,
) -> (Result<(), LabError>, Option<u64>) {
    let miners_stop = shutdown.child_token();
    let mut topics = vec![stubs::MULTIPLY_TOPIC];
    if cli.divide_miner {
        topics.push(stubs::DIVIDE_TOPIC);
    }
    let miners: Vec<_> = topics
        .iter()
        .map(|&topic| {
            let mut config = miner_config(broker, topic);
            config.interval = cli.interval.into();
            config.count = cli.count;
            config.seed = cli.seed;
            config.link.tls = client_tls.clone();
            config.triplets = cli.triplets;
            if cli.triplets {
                config.max = miner::jobs::DEFAULT_MAX_TRIPLET;
            }
            let console = Console::prefixed(&format!("miner-{}", &topic[..3]));
            (topic, start_miner(config, console, miners_stop.clone()))
        })
        .collect();

    let mut outcome = Ok(());
    let mut divide_miner = None;
    for (topic, miner) in miners {
        match miner.await {
            Ok(Ok(report)) => {
                tracing::info!(
                    "the {topic} miner is done: it published {} jobs",
                    report.published
                );
                if topic == stubs::DIVIDE_TOPIC {
                    divide_miner = Some(report.published);
                }
            }
            Ok(Err(error)) => outcome = Err(LabError::Miner(error)),
            Err(error) => tracing::error!("the miner task failed: {error}"),
        }
    }
    (outcome, divide_miner)
}

/// Returns once the lab's topics hold no ready and no in-flight job on two checks in a row: the
/// pipeline publishes a divide job shortly after a multiply job completes.
async fn drained(broker: &RunningBroker) {
    let mut quiet_checks = 0;
    while quiet_checks < 2 {
        tokio::time::sleep(DRAIN_POLL).await;
        let mut busy = false;
        for topic in [stubs::MULTIPLY_TOPIC, stubs::DIVIDE_TOPIC] {
            if let Some(stats) = broker.topic_counts(topic).await {
                busy |= stats.ready + stats.in_flight > 0;
            }
        }
        quiet_checks = if busy { 0 } else { quiet_checks + 1 };
    }
}

#[cfg(test)]
mod tests {
    use factory::pipeline::Leftovers;

    use super::*;

    fn paired(factory: &str, results: u64, left: &[i64]) -> FactoryPipeline {
        FactoryPipeline {
            factory: factory.to_owned(),
            report: Some(PipelineReport {
                pair_results: results,
                pairs_published: (results - left.len() as u64) / 2,
                leftovers: Leftovers {
                    pairs: left.to_vec(),
                    triplets: vec![],
                },
                ..PipelineReport::default()
            }),
        }
    }

    #[test]
    fn the_summary_says_where_the_divide_jobs_came_from_and_what_each_factory_left_unpaired() {
        let summary = LabSummary {
            multiplied: 20,
            divided: 29,
            divide_miner: Some(20),
            pipelines: vec![paired("factory1", 11, &[7]), paired("factory2", 9, &[8])],
            ..LabSummary::default()
        };
        assert_eq!(
            summary.to_string(),
            "20 multiply and 29 divide jobs completed, 0 failed; divide = 20 from the divide \
             miner + 9 from the pipelines (each factory pairs its own results: factory1 had 11, \
             paired 10, 1 left unpaired; factory2 had 9, paired 8, 1 left unpaired)"
        );
    }

    #[test]
    fn the_summary_of_triplets_tells_groups_of_three() {
        let summary = LabSummary {
            multiplied: 10,
            divided: 3,
            pipelines: vec![FactoryPipeline {
                factory: "factory1".to_owned(),
                report: Some(PipelineReport {
                    triplet_results: 10,
                    triplets_published: 3,
                    leftovers: Leftovers {
                        pairs: vec![],
                        triplets: vec![6],
                    },
                    ..PipelineReport::default()
                }),
            }],
            ..LabSummary::default()
        };
        assert_eq!(
            summary.to_string(),
            "10 multiply and 3 divide jobs completed, 0 failed; divide = 3 from the pipelines \
             (each factory groups its own results: factory1 had 10, grouped 9 in threes, 1 left \
             over)"
        );
    }

    #[test]
    fn without_pipelines_the_summary_names_only_the_divide_miner_and_what_was_left_undone() {
        let summary = LabSummary {
            multiplied: 20,
            divided: 18,
            unfinished: 2,
            divide_miner: Some(20),
            ..LabSummary::default()
        };
        assert_eq!(
            summary.to_string(),
            "20 multiply and 18 divide jobs completed, 0 failed, 2 unfinished; divide = 20 from \
             the divide miner"
        );
        let multiply_only = LabSummary {
            multiplied: 5,
            ..LabSummary::default()
        };
        assert_eq!(
            multiply_only.to_string(),
            "5 multiply and 0 divide jobs completed, 0 failed"
        );
    }

    #[test]
    fn a_lab_needs_one_to_sixty_four_factories() {
        for factories in ["1", "64"] {
            assert!(Cli::try_parse_from(["lab", "--factories", factories]).is_ok());
        }
        for factories in ["0", "65"] {
            let error = Cli::try_parse_from(["lab", "--factories", factories])
                .expect_err("out of range")
                .to_string();
            assert!(
                error.contains(&format!("{factories} is not in 1..=64")),
                "{error}"
            );
        }
    }
}
