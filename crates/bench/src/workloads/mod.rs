//! The workloads: brokers, factories and miners as separate processes on loopback, and the
//! figures of one run.
//!
//! - `starting`: the processes of a run, started and watched.
//! - `alone`: a flow through one broker, in memory or on disk.
//! - `clustered`: a flow through two brokers over NATS JetStream.

mod alone;
mod clustered;
mod starting;

pub(crate) use starting::create_topic;

use std::time::Duration;

use crate::machine::{self, Usage};
use crate::processes::Programs;

/// The topic every workload uses.
pub const TOPIC: &str = stubs::MULTIPLY_TOPIC;

/// One run's shape: how jobs flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The topic's buffer.
    pub buffer: u32,
    /// The miner's concurrent publishers.
    pub publishers: u32,
    /// Factories subscribed; zero leaves every job queued.
    pub factories: u32,
    /// Calls in flight per factory.
    pub prefetch: u32,
    /// Jobs published in all.
    pub jobs: u64,
    /// Jobs per second for the miner, or as fast as it can.
    pub rate: Option<u32>,
    /// Where the brokers keep their jobs.
    pub store: Store,
    /// Whose miner and factories: ours, or the Go lab's.
    pub language: Language,
    /// Whether every connection is in TLS, with the files of [`tls_dir`].
    pub tls: bool,
}

/// The runner's TLS files, written by `broker tls-init`'s own function the first time a flow
/// needs them, and kept for the runner's life.
pub fn tls_dir() -> anyhow::Result<&'static std::path::Path> {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let dir = std::env::temp_dir().join(format!("pairbroker-bench-tls-{}", std::process::id()));
    if !dir.join(transport::tls::KEY_FILE).exists() {
        transport::tls::write_development_files(&dir)?;
    }
    Ok(DIR.get_or_init(|| dir))
}

/// `--tls-dir DIR` for a program of a TLS flow; nothing otherwise.
fn tls_args(flow: Flow) -> anyhow::Result<Vec<String>> {
    Ok(if flow.tls {
        vec!["--tls-dir".to_owned(), tls_dir()?.display().to_string()]
    } else {
        Vec::new()
    })
}

/// Whose miner and factories a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// Ours (`miner`, `factory`), over tarpc.
    Rust,
    /// The Go lab's (`tests/go`), unchanged, over Go's net/rpc: the miner publishes from
    /// goroutines on one client, and each factory subscribes once per call in flight.
    Go,
}

/// Where a run's brokers keep their jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// In memory: one broker.
    Memory,
    /// On disk (`--data-dir`, fsync always): one broker.
    Disk,
    /// In NATS JetStream (`--store nats://…`) on a cluster of `nodes` started for the run,
    /// each stream with as many replicas: two brokers, each with a miner and half the
    /// factories. With `direct`, W2 is also run with JetStream used directly, on the same
    /// cluster, just before.
    Nats {
        /// NATS servers, 1 or 3.
        nodes: u8,
        /// Whether to measure JetStream used directly too.
        direct: bool,
    },
}

/// What one run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    /// From the miner's start until the last job was completed (or, with no factories, queued).
    pub elapsed: Duration,
    /// Jobs counted at the end.
    pub jobs: u64,
    /// Publish to completion, from the broker's histogram, in microseconds.
    pub p50_us: u64,
    /// Publish to completion, 99th percentile, in microseconds.
    pub p99_us: u64,
    /// The broker's CPU time and memory at the end.
    pub broker: Usage,
    /// The broker's CPU time while the jobs flowed, from the miner's start until the last job
    /// was counted, in seconds (all brokers', for a clustered flow).
    pub broker_flow_cpu_s: f64,
    /// The factories' CPU time, all together.
    pub factories_cpu_s: f64,
    /// The miner's CPU time.
    pub miner_cpu_s: f64,
    /// How busy the machine was just before the run, from 0 to 1.
    pub busy_before: f64,
    /// The broker's latency histogram: (upper bound in seconds, jobs in the bucket), when asked.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Bytes in the broker's data dir at the end, for a durable flow.
    pub data_bytes: u64,
    /// Median and 99th percentile of the miner's publish acknowledgement, in microseconds.
    pub ack_us: (u64, u64),
    /// For a durable flow that leaves its jobs queued: from a new broker's start on the data
    /// dir of a SIGKILLed one until it reports every job ready.
    pub recovery: Option<Duration>,
    /// For a clustered flow measured both ways: JetStream used directly, jobs per second.
    pub direct_jobs_per_s: Option<f64>,
}

impl RunFigures {
    /// Jobs per second over the run.
    pub fn jobs_per_s(&self) -> f64 {
        self.jobs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Microseconds of broker CPU time per job counted, while the jobs flowed.
    pub fn broker_cpu_per_job_us(&self) -> f64 {
        self.broker_flow_cpu_s * 1e6 / self.jobs.max(1) as f64
    }
}

/// Runs `flow` once, after waiting up to `idle_wait` for an idle machine: starts the brokers
/// (one with its HTTP side when `histogram` asks for the latency buckets, or two over a NATS
/// cluster), the factories, then the miner, and waits for every job.
pub async fn run(
    programs: &Programs,
    flow: Flow,
    histogram: bool,
    idle_wait: Duration,
) -> anyhow::Result<RunFigures> {
    let busy_before =
        tokio::task::spawn_blocking(move || machine::wait_until_idle(idle_wait)).await?;
    if let Store::Nats { nodes, direct } = flow.store {
        return clustered::run(programs, flow, nodes, direct, busy_before).await;
    }
    alone::run(programs, flow, histogram, busy_before).await
}
