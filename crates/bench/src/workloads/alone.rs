//! A flow through one broker, in memory or on disk; for a durable flow that leaves its jobs
//! queued, also how long a new broker takes to recover them after a crash.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stubs::TopicReport;

use super::starting::{create_topic, topic_of, Run, RUN_LIMIT};
use super::{tls_args, Flow, Language, RunFigures, Store, TOPIC};
use crate::metrics;
use crate::processes::{self, Programs};

/// The one broker of a run: where it listens and keeps its jobs, and its arguments.
struct Broker {
    address: SocketAddr,
    /// Its HTTP side, on when the run asks for the latency histogram.
    http: Option<SocketAddr>,
    args: Vec<String>,
    data: DataDir,
}

impl Broker {
    fn new(flow: Flow, histogram: bool) -> anyhow::Result<Self> {
        let address = processes::loopback()?;
        let http = if histogram {
            Some(processes::loopback()?)
        } else {
            None
        };
        let mut args = vec![
            "--port".to_owned(),
            address.port().to_string(),
            "--quiet".to_owned(),
            "--http".to_owned(),
            http.map_or("off".to_owned(), |http| http.to_string()),
        ];
        let data = DataDir((flow.store == Store::Disk).then(|| {
            std::env::temp_dir().join(format!(
                "pairbroker-bench-data-{}-{}",
                std::process::id(),
                address.port()
            ))
        }));
        if let Some(dir) = &data.0 {
            args.extend(["--data-dir".to_owned(), dir.display().to_string()]);
        }
        args.extend(tls_args(flow)?);
        Ok(Self {
            address,
            http,
            args,
            data,
        })
    }
}

/// Runs `flow` through one broker: starts it, the factories, then the miner, and waits for
/// every job.
pub(super) async fn run(
    programs: &Programs,
    flow: Flow,
    histogram: bool,
    busy_before: f64,
) -> anyhow::Result<RunFigures> {
    let broker = Broker::new(flow, histogram)?;
    let mut run = Run::default();
    run.brokers
        .push(programs.start("broker", "broker", &broker.args)?);
    let client = run.connect(broker.address, flow).await?;
    if flow.language == Language::Go {
        // The Go programs create the topic with the lab's buffer of 10; made first, it keeps
        // the flow's.
        create_topic(&client, flow.buffer).await?;
    }
    run.start_factories(programs, flow, |_| broker.address.to_string())?;
    run.wait_for_factories(&client, flow, flow.factories)
        .await?;

    let started = Instant::now();
    let broker_cpu_before = run.brokers[0].usage().cpu_s;
    run.start_miner(programs, flow, &broker.address.to_string(), "miner")?;
    let stats = run
        .wait_for(&client, RUN_LIMIT, "every job", |stats| {
            topic_of(stats).is_some_and(|topic| counted(flow, topic) >= flow.jobs)
        })
        .await?;
    let elapsed = started.elapsed();
    run.sample();
    let broker_flow_cpu_s = run.brokers[0].usage().cpu_s - broker_cpu_before;
    let topic = topic_of(&stats).context("the topic is gone")?;
    if topic.capacity != u64::from(flow.buffer) {
        // The Go programs ask for the lab's buffer of 10: the flow's, asked for first, must hold.
        bail!(
            "the topic's buffer is {}, not the flow's {}",
            topic.capacity,
            flow.buffer
        );
    }
    let latency_buckets = match broker.http {
        Some(http) => metrics::latency_buckets(&metrics::fetch(http).await?, TOPIC),
        None => Vec::new(),
    };
    let factories_cpu_s = Run::cpu_s(&mut run.factories);
    let data_bytes = broker.data.0.as_deref().map_or(0, dir_bytes);
    let ack_us = run.miners_done().await?;
    let miner_cpu_s = Run::cpu_s(&mut run.miners);
    let usage = run.brokers[0].usage();
    let recovery = if flow.store == Store::Disk && flow.factories == 0 {
        Some(recover(programs, flow, &broker, &mut run).await?)
    } else {
        None
    };
    Ok(RunFigures {
        data_bytes,
        ack_us,
        recovery,
        elapsed,
        jobs: counted(flow, topic),
        p50_us: topic.latency_us.p50,
        p99_us: topic.latency_us.p99,
        broker: usage,
        broker_flow_cpu_s,
        factories_cpu_s,
        miner_cpu_s,
        busy_before,
        latency_buckets,
        direct_jobs_per_s: None,
    })
}

/// The jobs a flow counts: completed ones, or with no factories, the ones queued.
fn counted(flow: Flow, topic: &TopicReport) -> u64 {
    if flow.factories == 0 {
        topic.ready
    } else {
        topic.completed
    }
}

/// Kills the broker, as in a crash, and starts a new one that loads what the first left: how
/// long until it reports every job ready.
async fn recover(
    programs: &Programs,
    flow: Flow,
    broker: &Broker,
    run: &mut Run,
) -> anyhow::Result<Duration> {
    run.brokers[0].kill();
    run.brokers[0] = programs.start("broker", "broker-recovering", &broker.args)?;
    let started = Instant::now();
    let client = run.connect(broker.address, flow).await?;
    run.wait_for(&client, RUN_LIMIT, "the jobs to recover", |stats| {
        topic_of(stats).is_some_and(|topic| topic.ready >= flow.jobs)
    })
    .await?;
    Ok(started.elapsed())
}

/// A run's data dir, removed when the run ends.
struct DataDir(Option<PathBuf>);

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
