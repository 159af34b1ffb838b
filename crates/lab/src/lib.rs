//! The whole lab in one process: a broker, factories and miners started together on
//! loopback, each printing its lines behind its own prefix.
//!
//! - [`RunningBroker`], [`RunningFactory`] and [`start_miner`]: the pieces, started in this
//!   process on loopback, for the lab, the system tests and benchmarks.
//! - [`cli`]: the `lab` program, which runs them all (`cargo run -p lab`).
//! - [`mark`]: `lab mark`, which marks a factory program part by part.
//! - [`new`]: `lab new`, which writes a student's starting point.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use broker::queue::TopicCounts;
use broker::{BrokerState, Config, Observer, Settings, StoreConfig, StoreError, Watcher};
use factory::cli::LabTopic;
use factory::pipeline::{PipelineReport, ReportSlot};
use factory::{FactoryConfig, FactoryError};
use lab_console::Console;
use miner::{MinerConfig, MinerError, MinerReport};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod cli;
pub mod mark;
pub mod new;

/// A running broker, in this process.
pub struct RunningBroker {
    /// Where it listens.
    pub address: SocketAddr,
    /// Where its dashboard and `/metrics` are served, if they are.
    pub http: Option<SocketAddr>,
    /// Its state, for inspection.
    pub broker: Arc<BrokerState>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Why a broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port cannot be bound.
    #[error("cannot bind a port on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
    /// Its store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StartError> for std::io::Error {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Bind(error) => error,
            StartError::Store(error) => std::io::Error::other(error),
        }
    }
}

impl RunningBroker {
    /// Starts a broker on `127.0.0.1:port` (0 for a free port), its topics in memory.
    pub async fn start(port: u16, settings: Settings, observer: Observer) -> std::io::Result<Self> {
        Self::start_watched(port, settings, observer, None).await
    }

    /// [`RunningBroker::start`], with `watcher` hearing of every subscribe and publish.
    pub async fn start_watched(
        port: u16,
        settings: Settings,
        observer: Observer,
        watcher: Option<Watcher>,
    ) -> std::io::Result<Self> {
        let config = Config {
            settings,
            store: StoreConfig::default(),
            observer,
            watcher,
        };
        Ok(Self::start_with(port, config, false).await?)
    }

    /// Starts the broker of `config` on `127.0.0.1:port` (0 for a free port), as the broker
    /// program would, with its store opened first; with `http`, its dashboard and `/metrics`
    /// on a free loopback port.
    pub async fn start_with(port: u16, config: Config, http: bool) -> Result<Self, StartError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let address = listener.local_addr()?;
        let http = match http {
            true => Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?),
            false => None,
        };
        let shutdown = CancellationToken::new();
        let ready = broker::open(config, listener, http, shutdown.clone())
            .await?
            .expect("nothing stops the broker before it has started");
        let (broker, http) = (ready.state().clone(), ready.http_address());
        let task = tokio::spawn(ready.serve());
        Ok(Self {
            address,
            http,
            broker,
            shutdown,
            task,
        })
    }

    /// The counts of a topic, as the broker's store keeps them.
    pub async fn topic_counts(&self, topic: &str) -> Option<TopicCounts> {
        self.broker.topic_counts(topic).await.ok()
    }

    /// Stops the broker and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A running factory, in this process.
pub struct RunningFactory {
    /// Where it serves, as given to the broker.
    pub address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), FactoryError>>,
    pipeline: ReportSlot,
}

impl RunningFactory {
    /// Starts a factory on `127.0.0.1:port` (0 for a free port) for the broker in `config`.
    pub async fn start(
        port: u16,
        config: FactoryConfig,
        console: Console,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let address = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let pipeline = ReportSlot::default();
        let span = component_span(&console);
        let task = tokio::spawn(
            factory::pipeline::reporting_to(
                pipeline.clone(),
                factory::run(config, listener, console, shutdown.clone()),
            )
            .instrument(span),
        );
        Ok(Self {
            address,
            shutdown,
            task,
            pipeline,
        })
    }

    /// Whether the factory has stopped (after an error, or when told to).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the factory gracefully and returns how it ended: with its pipeline's report, or
    /// `None` when it ran none or the pipeline could not finish in time.
    pub async fn stop(self) -> Result<Option<PipelineReport>, FactoryError> {
        self.shutdown.cancel();
        self.task.await.unwrap_or(Ok(()))?;
        // `factory::run` returns after its pipeline has stopped, report left, or given up on it.
        Ok(self.pipeline.take())
    }
}

/// A factory's configuration for the lab's broker at `broker`: both topics, prefetch 1.
pub fn factory_config(broker: SocketAddr, pipeline: bool) -> FactoryConfig {
    FactoryConfig {
        link: transport::LinkConfig::to(broker.to_string()),
        tls: None,
        ip: Ipv4Addr::LOCALHOST.into(),
        topics: vec![LabTopic::Multiply, LabTopic::Divide],
        prefetch: stubs::DEFAULT_PREFETCH,
        buffer: factory::DEFAULT_BUFFER,
        pipeline,
    }
}

/// A miner's configuration for the lab's broker at `broker`: Pairs to `topic`, one a second.
pub fn miner_config(broker: SocketAddr, topic: &str) -> MinerConfig {
    MinerConfig {
        link: transport::LinkConfig::to(broker.to_string()),
        topic: topic.to_owned(),
        buffer: miner::cli::DEFAULT_BUFFER,
        interval: miner::cli::DEFAULT_INTERVAL,
        rate: None,
        count: None,
        triplets: false,
        max: miner::jobs::DEFAULT_MAX_PAIR,
        seed: None,
        concurrency: 1,
    }
}

/// Starts a miner in this process.
pub fn start_miner(
    config: MinerConfig,
    console: Console,
    shutdown: CancellationToken,
) -> JoinHandle<Result<MinerReport, MinerError>> {
    let span = component_span(&console);
    tokio::spawn(miner::run(config, console, shutdown).instrument(span))
}

/// The span that names a component's log lines as its console names its result lines.
fn component_span(console: &Console) -> tracing::Span {
    console
        .name()
        .map_or_else(tracing::Span::none, lab_console::component)
}

/// Waits until `done` holds, checking every few milliseconds; false if `limit` passes first.
pub async fn wait_until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    /// Often enough to add little to a test's time, seldom enough to cost nothing.
    const POLL_INTERVAL: Duration = Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
