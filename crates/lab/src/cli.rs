//! The `lab` program: the whole lab end to end in one terminal.

use std::time::Duration;

use broker::{print_results, Settings};
use clap::Parser;
use lab_console::Console;
use tokio_util::sync::CancellationToken;

use crate::{factory_config, miner_config, start_miner, RunningBroker, RunningFactory};

/// How often the lab checks whether the broker's topics have drained, once `--count` jobs
/// have been published.
const DRAIN_POLL: Duration = Duration::from_millis(100);

const EXAMPLES: &str = "\
Examples:
  cargo run -p lab                                     # broker, two factories, a multiply miner
  cargo run -p lab -- --divide-miner                   # Part 2a
  cargo run -p lab -- --triplets                       # Part 3
  cargo run -p lab -- --interval 10ms --count 100      # a short run that stops by itself
  cargo run -p lab -- --port 0                         # when 8030 is taken
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
    #[arg(long, value_enum, default_value_t = lab_console::LogFormat::Text, global = true)]
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
    #[arg(long, default_value_t = broker::cli::DEFAULT_PORT)]
    pub port: u16,
    /// How many factories to start, on free ports.
    #[arg(long, default_value_t = 2)]
    pub factories: u32,
    /// Publish Triplets instead of Pairs (Part 3).
    #[arg(long)]
    pub triplets: bool,
    /// Also run a miner that publishes to `divide` (Part 2a).
    #[arg(long)]
    pub divide_miner: bool,
    /// Turn the factories' pipeline off (Parts 1 and 2a).
    #[arg(long)]
    pub no_pipeline: bool,
    /// The pause between two jobs of a miner.
    #[arg(long, default_value_t = miner::cli::DEFAULT_INTERVAL.into())]
    pub interval: humantime::Duration,
    /// Stop once each miner has published this many jobs and every job is done.
    #[arg(long)]
    pub count: Option<u64>,
    /// Seed the miners' random jobs.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What the lab did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabSummary {
    /// Multiply jobs completed.
    pub multiplied: u64,
    /// Divide jobs completed.
    pub divided: u64,
    /// Jobs failed with a job error.
    pub failed: u64,
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
}

/// Runs the lab until `shutdown` is cancelled or, with `--count`, until the work is done.
pub async fn run(cli: LabArgs, shutdown: CancellationToken) -> Result<LabSummary, LabError> {
    let broker = RunningBroker::start(
        cli.port,
        Settings::default(),
        print_results(Console::prefixed("broker")),
    )
    .await
    .map_err(|error| LabError::BrokerPort {
        port: cli.port,
        error,
    })?;
    tracing::info!(address = %broker.address, "broker listening");
    let mut factories = Vec::new();
    for number in 1..=cli.factories {
        let console = Console::prefixed(&format!("factory{number}"));
        let factory =
            RunningFactory::start(0, factory_config(broker.address, !cli.no_pipeline), console)
                .await?;
        tracing::info!(address = %factory.address, "factory {number} started");
        factories.push(factory);
    }

    let miners_stop = shutdown.child_token();
    let mut topics = vec![stubs::MULTIPLY_TOPIC];
    if cli.divide_miner {
        topics.push(stubs::DIVIDE_TOPIC);
    }
    let miners: Vec<_> = topics
        .iter()
        .map(|topic| {
            let mut config = miner_config(broker.address, topic);
            config.interval = cli.interval.into();
            config.count = cli.count;
            config.seed = cli.seed;
            config.triplets = cli.triplets;
            if cli.triplets {
                config.max = miner::jobs::DEFAULT_MAX_TRIPLET;
            }
            let console = Console::prefixed(&format!("miner-{}", &topic[..3]));
            start_miner(config, console, miners_stop.clone())
        })
        .collect();

    let mut outcome = Ok(());
    for miner in miners {
        match miner.await {
            Ok(Ok(report)) => tracing::info!(published = report.published, "miner done"),
            Ok(Err(error)) => outcome = Err(LabError::Miner(error)),
            Err(error) => tracing::error!(%error, "miner task failed"),
        }
    }
    if outcome.is_ok() && cli.count.is_some() {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = drained(&broker) => {}
        }
    } else {
        shutdown.cancelled().await;
    }
    for factory in factories {
        factory.stop().await?;
    }
    let multiply = broker
        .topic_stats(stubs::MULTIPLY_TOPIC)
        .await
        .unwrap_or_default();
    let divide = broker
        .topic_stats(stubs::DIVIDE_TOPIC)
        .await
        .unwrap_or_default();
    broker.stop().await;
    outcome?;
    Ok(LabSummary {
        multiplied: multiply.completed,
        divided: divide.completed,
        failed: multiply.failed + divide.failed,
    })
}

/// Returns once the lab's topics hold no ready and no in-flight job on two checks in a row: the
/// pipeline publishes a divide job shortly after a multiply job completes.
async fn drained(broker: &RunningBroker) {
    let mut quiet_checks = 0;
    while quiet_checks < 2 {
        tokio::time::sleep(DRAIN_POLL).await;
        let mut busy = false;
        for topic in [stubs::MULTIPLY_TOPIC, stubs::DIVIDE_TOPIC] {
            if let Some(stats) = broker.topic_stats(topic).await {
                busy |= stats.ready + stats.in_flight > 0;
            }
        }
        quiet_checks = if busy { 0 } else { quiet_checks + 1 };
    }
}
