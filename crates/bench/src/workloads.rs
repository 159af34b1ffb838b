//! The workloads: a broker, factories and one miner as separate processes on loopback, and the
//! figures of one run.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stubs::{BrokerClient, BrokerStats, TopicReport};

use crate::go;
use crate::machine::{self, Usage};
use crate::processes::{Process, Programs};

/// The topic every workload uses.
pub const TOPIC: &str = stubs::MULTIPLY_TOPIC;

/// How long one run may take before the runner gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How often the runner asks the broker for its figures while jobs flow.
const POLL: Duration = Duration::from_millis(5);
/// How often the runner reads the processes' CPU time and memory.
const SAMPLE: Duration = Duration::from_millis(50);

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

/// The processes of one run, stopped when dropped.
struct Run {
    brokers: Vec<Process>,
    factories: Vec<Process>,
    miners: Vec<Process>,
}

impl Run {
    fn sample(&mut self) {
        for process in self.processes() {
            process.usage();
        }
    }

    fn processes(&mut self) -> impl Iterator<Item = &mut Process> {
        self.brokers
            .iter_mut()
            .chain(&mut self.factories)
            .chain(&mut self.miners)
    }

    /// Fails if a process died; a miner may end, successfully, once it has published all.
    fn check(&mut self) -> anyhow::Result<()> {
        for broker in &mut self.brokers {
            broker.check_running()?;
        }
        for factory in &mut self.factories {
            factory.check_running()?;
        }
        for miner in &mut self.miners {
            if !miner.exited_successfully() {
                miner.check_running()?;
            }
        }
        Ok(())
    }

    /// The CPU seconds of `processes`, all together.
    fn cpu_s(processes: &mut [Process]) -> f64 {
        processes
            .iter_mut()
            .map(|process| process.usage().cpu_s)
            .sum()
    }
}

/// A free TCP port on loopback.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `flow` once, after waiting up to `idle_wait` for an idle machine: starts a broker (with its HTTP side when `histogram` asks for the latency
/// buckets), the factories, then the miner, and waits for every job.
pub async fn run(
    programs: &Programs,
    flow: Flow,
    histogram: bool,
    idle_wait: Duration,
) -> anyhow::Result<RunFigures> {
    let busy_before =
        tokio::task::spawn_blocking(move || machine::wait_until_idle(idle_wait)).await?;
    let broker_address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let http_address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut broker_args = vec![
        "--port".to_owned(),
        broker_address.port().to_string(),
        "--quiet".to_owned(),
        "--http".to_owned(),
    ];
    broker_args.push(if histogram {
        http_address.to_string()
    } else {
        "off".to_owned()
    });
    let data_dir = std::env::temp_dir().join(format!(
        "pairbroker-bench-data-{}-{}",
        std::process::id(),
        broker_address.port()
    ));
    if let Store::Nats { nodes, direct } = flow.store {
        return run_clustered(programs, flow, nodes, direct, busy_before).await;
    }
    if flow.store == Store::Disk {
        broker_args.extend(["--data-dir".to_owned(), data_dir.display().to_string()]);
    }
    broker_args.extend(tls_args(flow)?);
    let data = DataDir((flow.store == Store::Disk).then(|| data_dir.clone()));
    let broker = programs.start("broker", "broker", &broker_args)?;
    let mut run = Run {
        brokers: vec![broker],
        factories: Vec::new(),
        miners: Vec::new(),
    };
    let client = connect(&broker_address, flow, &mut run).await?;
    if flow.language == Language::Go {
        // The Go programs create the topic with the lab's buffer of 10; made first, it keeps
        // the flow's.
        create_topic(&client, flow.buffer).await?;
    }

    start_factories(programs, flow, &mut run, |_| broker_address.to_string())?;
    wait_for(
        &client,
        &mut run,
        Duration::from_secs(30),
        "the factories to subscribe",
        |stats| subscribed(stats, flow, flow.factories),
    )
    .await?;

    let started = Instant::now();
    let broker_cpu_before = run.brokers[0].usage().cpu_s;
    run.miners.push(start_miner(
        programs,
        flow,
        &broker_address.to_string(),
        "miner",
    )?);
    let done = |topic: &TopicReport| {
        if flow.factories == 0 {
            topic.ready >= flow.jobs
        } else {
            topic.completed >= flow.jobs
        }
    };
    let stats = wait_for(&client, &mut run, RUN_LIMIT, "every job", |stats| {
        topic_of(stats).is_some_and(done)
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
    let latency_buckets = if histogram {
        latency_buckets(http_address).await?
    } else {
        Vec::new()
    };
    let factories_cpu_s = Run::cpu_s(&mut run.factories);
    let data_bytes = data.0.as_deref().map_or(0, dir_bytes);
    let miner = run.miners.first_mut().context("no miner")?;
    if !miner.exited_within(Duration::from_secs(30)).await {
        bail!("the miner did not exit once its jobs were in");
    }
    let ack_us = acknowledgement_us(&miner.log());
    let miner_cpu_s = miner.usage().cpu_s;
    let broker = run.brokers[0].usage();
    let recovery = if flow.store == Store::Disk && flow.factories == 0 {
        // The broker is killed, as in a crash, and a new one loads what the first left.
        run.brokers[0].kill();
        run.brokers[0] = programs.start("broker", "broker-recovering", &broker_args)?;
        let started = Instant::now();
        let client = connect(&broker_address, flow, &mut run).await?;
        wait_for(
            &client,
            &mut run,
            RUN_LIMIT,
            "the jobs to recover",
            |stats| topic_of(stats).is_some_and(|topic| topic.ready >= flow.jobs),
        )
        .await?;
        Some(started.elapsed())
    } else {
        None
    };
    Ok(RunFigures {
        data_bytes,
        ack_us,
        recovery,
        elapsed,
        jobs: if flow.factories == 0 {
            topic.ready
        } else {
            topic.completed
        },
        p50_us: topic.latency_us.p50,
        p99_us: topic.latency_us.p99,
        broker,
        broker_flow_cpu_s,
        factories_cpu_s,
        miner_cpu_s,
        busy_before,
        latency_buckets,
        direct_jobs_per_s: None,
    })
}

/// Runs a clustered flow: a NATS cluster of `nodes` started for the run, JetStream used
/// directly on it first when `direct` asks, then two brokers over it (`--replicas nodes`), each
/// with half the factories and a miner with half the publishers and jobs.
async fn run_clustered(
    programs: &Programs,
    flow: Flow,
    nodes: u8,
    direct: bool,
    busy_before: f64,
) -> anyhow::Result<RunFigures> {
    // The servers live until the run's end, then are killed.
    let (_servers, urls): (Box<dyn std::any::Any + Send>, String) =
        tokio::task::spawn_blocking(move || {
            if nodes == 1 {
                let server = nats_harness::NatsServer::start();
                let url = server.url.clone();
                (Box::new(server) as Box<dyn std::any::Any + Send>, url)
            } else {
                let cluster = nats_harness::NatsCluster::start();
                let urls = cluster.urls();
                (Box::new(cluster) as Box<dyn std::any::Any + Send>, urls)
            }
        })
        .await?;
    let replicas = usize::from(nodes);
    let direct_jobs_per_s = if direct {
        let elapsed = crate::direct::w2(&urls, replicas, flow).await?;
        Some(flow.jobs as f64 / elapsed.as_secs_f64().max(1e-9))
    } else {
        None
    };

    let addresses = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
    ];
    let mut run = Run {
        brokers: Vec::new(),
        factories: Vec::new(),
        miners: Vec::new(),
    };
    for (index, address) in addresses.iter().enumerate() {
        let args = [
            "--port",
            &address.port().to_string(),
            "--quiet",
            "--http",
            "off",
            "--store",
            &urls,
            "--replicas",
            &replicas.to_string(),
        ];
        run.brokers.push(programs.start(
            "broker",
            &format!("broker-{index}"),
            &args.map(str::to_owned),
        )?);
    }
    let mut clients = Vec::new();
    for address in &addresses {
        clients.push(connect(address, flow, &mut run).await?);
    }
    // Each program knows both brokers, its own first.
    let both = |own: usize| format!("{},{}", addresses[own], addresses[1 - own]);
    start_factories(programs, flow, &mut run, |index| both(index as usize % 2))?;
    for (index, client) in clients.iter().enumerate() {
        let factories = flow.factories / 2 + u32::from((index as u32) < flow.factories % 2);
        wait_for(
            client,
            &mut run,
            Duration::from_secs(30),
            "the factories to subscribe",
            |stats| subscribed(stats, flow, factories),
        )
        .await?;
    }
    let started = Instant::now();
    let broker_cpu_before = Run::cpu_s(&mut run.brokers);
    for index in 0..2 {
        let half = Flow {
            publishers: (flow.publishers / 2).max(1),
            jobs: flow.jobs / 2 + u64::from(index == 0) * (flow.jobs % 2),
            ..flow
        };
        run.miners.push(start_miner(
            programs,
            half,
            &both(index),
            &format!("miner-{index}"),
        )?);
    }
    // Each broker counts what its own factories completed.
    let mut completed = [0u64; 2];
    let mut latencies = [(0u64, 0u64); 2];
    let deadline = Instant::now() + RUN_LIMIT;
    while completed.iter().sum::<u64>() < flow.jobs {
        for (index, client) in clients.iter().enumerate() {
            let stats = wait_for(client, &mut run, RUN_LIMIT, "the broker's figures", |_| {
                true
            })
            .await?;
            if let Some(topic) = topic_of(&stats) {
                completed[index] = topic.completed;
                latencies[index] = (topic.latency_us.p50, topic.latency_us.p99);
            }
        }
        if Instant::now() >= deadline {
            bail!("gave up waiting for every job after {RUN_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let elapsed = started.elapsed();
    run.sample();
    let broker_flow_cpu_s = Run::cpu_s(&mut run.brokers) - broker_cpu_before;
    let mut ack_us = (0, 0);
    for miner in &mut run.miners {
        if !miner.exited_within(Duration::from_secs(30)).await {
            bail!("a miner did not exit once its jobs were in");
        }
        let (p50, p99) = acknowledgement_us(&miner.log());
        ack_us = (ack_us.0.max(p50), ack_us.1.max(p99));
    }
    let mut broker = Usage::default();
    for process in &mut run.brokers {
        let usage = process.usage();
        broker.cpu_s += usage.cpu_s;
        broker.rss_bytes = broker.rss_bytes.max(usage.rss_bytes);
        broker.peak_rss_bytes = broker.peak_rss_bytes.max(usage.peak_rss_bytes);
    }
    Ok(RunFigures {
        elapsed,
        jobs: completed.iter().sum(),
        // The slower broker's: jobs do not wait less for being split between two.
        p50_us: latencies.iter().map(|latency| latency.0).max().unwrap_or(0),
        p99_us: latencies.iter().map(|latency| latency.1).max().unwrap_or(0),
        broker,
        broker_flow_cpu_s,
        factories_cpu_s: Run::cpu_s(&mut run.factories),
        miner_cpu_s: Run::cpu_s(&mut run.miners),
        busy_before,
        ack_us,
        direct_jobs_per_s,
        ..RunFigures::default()
    })
}

/// Creates the workload's topic with `buffer`, as our miner and factories do themselves.
async fn create_topic(client: &BrokerClient, buffer: u32) -> anyhow::Result<()> {
    let request = stubs::ChannelRequest {
        topic: TOPIC.to_owned(),
        buffer,
    };
    client
        .create_channel(tarpc::context::current(), request)
        .await
        .context("the broker stopped answering")?
        .context("the broker refused the topic")?;
    Ok(())
}

/// Whether `factories` factories have subscribed to the topic with the flow's prefetch: a Go
/// factory reaches it one subscribe at a time.
fn subscribed(stats: &BrokerStats, flow: Flow, factories: u32) -> bool {
    let complete = stats
        .subscribers
        .iter()
        .filter(|subscriber| subscriber.topic == TOPIC && subscriber.prefetch == flow.prefetch)
        .count();
    complete == factories as usize
}

/// Starts `flow`'s miner (ours or the Go lab's) against `brokers`, its log under `label`.
fn start_miner(
    programs: &Programs,
    flow: Flow,
    brokers: &str,
    label: &str,
) -> anyhow::Result<Process> {
    if flow.language == Language::Go {
        let args = go::miner_args(flow, brokers)?;
        return programs.start_go("miner", &format!("go-{label}"), &args);
    }
    let mut args: Vec<String> = [
        "--broker",
        brokers,
        "--topic",
        TOPIC,
        "--buffer",
        &flow.buffer.to_string(),
        "--concurrency",
        &flow.publishers.to_string(),
        "--count",
        &flow.jobs.to_string(),
        "--quiet",
    ]
    .map(str::to_owned)
    .to_vec();
    match flow.rate {
        Some(rate) => args.extend(["--rate".to_owned(), rate.to_string()]),
        None => args.extend(["--interval".to_owned(), "0".to_owned()]),
    }
    args.extend(tls_args(flow)?);
    programs.start("miner", label, &args)
}

/// Starts `flow`'s factories (ours or the Go lab's), factory `index` with broker(s)
/// `brokers(index)`.
fn start_factories(
    programs: &Programs,
    flow: Flow,
    run: &mut Run,
    brokers: impl Fn(u32) -> String,
) -> anyhow::Result<()> {
    for index in 0..flow.factories {
        if flow.language == Language::Go {
            let args = go::factory_args(flow, &brokers(index));
            run.factories.push(programs.start_go(
                "factory",
                &format!("go-factory-{index}"),
                &args,
            )?);
            continue;
        }
        let args = [
            "--port",
            "0",
            "--broker",
            &brokers(index),
            "--topics",
            "multiply",
            "--no-pipeline",
            "--prefetch",
            &flow.prefetch.to_string(),
            "--buffer",
            &flow.buffer.to_string(),
            "--quiet",
        ];
        let mut args = args.map(str::to_owned).to_vec();
        args.extend(tls_args(flow)?);
        run.factories
            .push(programs.start("factory", &format!("factory-{index}"), &args)?);
    }
    Ok(())
}

/// The publish acknowledgement times a miner logs when it is done: (p50, p99) in microseconds.
fn acknowledgement_us(log: &str) -> (u64, u64) {
    let field = |name: &str| {
        log.lines()
            .rev()
            .find_map(|line| line.split_once(name))
            .and_then(|(_, rest)| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|digits| digits.parse().ok())
            })
            .unwrap_or(0)
    };
    (field("ack_p50_us="), field("ack_p99_us="))
}

/// A run's data dir, removed when the run ends.
struct DataDir(Option<std::path::PathBuf>);

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bytes in the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
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

fn topic_of(stats: &BrokerStats) -> Option<&TopicReport> {
    stats.topics.iter().find(|topic| topic.name == TOPIC)
}

/// Connects to the broker once it listens.
async fn connect(address: &SocketAddr, flow: Flow, run: &mut Run) -> anyhow::Result<BrokerClient> {
    let tls = if flow.tls {
        transport::TlsFiles::in_dir(tls_dir()?).client()?
    } else {
        None
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match transport::connect_broker(
            &address.to_string(),
            Duration::from_secs(1),
            &transport::AccessToken::none(),
            tls.as_ref(),
        )
        .await
        {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                bail!("the broker did not start listening: {error}")
            }
            Err(_) => {
                for broker in &mut run.brokers {
                    broker.check_running()?;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Asks the broker for its figures until `done` holds, checking that every process lives.
async fn wait_for(
    client: &BrokerClient,
    run: &mut Run,
    limit: Duration,
    what: &str,
    done: impl Fn(&BrokerStats) -> bool,
) -> anyhow::Result<BrokerStats> {
    let started = Instant::now();
    let mut sampled = started;
    loop {
        let stats = client
            .stats(tarpc::context::current())
            .await
            .context("the broker stopped answering")?;
        if done(&stats) {
            return Ok(stats);
        }
        if sampled.elapsed() >= SAMPLE {
            run.sample();
            run.check()?;
            sampled = Instant::now();
        }
        if started.elapsed() >= limit {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The broker's latency histogram from its `/metrics`: jobs per bucket, not cumulative.
async fn latency_buckets(http: SocketAddr) -> anyhow::Result<Vec<(f64, u64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http)
        .await
        .with_context(|| format!("cannot reach the broker's HTTP side at {http}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(parse_latency_buckets(&response, TOPIC))
}

/// Reads the `job_latency_seconds` buckets of `topic` out of a Prometheus text exposition and
/// turns cumulative counts into counts per bucket; the `+Inf` bucket is left out.
pub fn parse_latency_buckets(exposition: &str, topic: &str) -> Vec<(f64, u64)> {
    let label = format!("topic=\"{topic}\"");
    let mut cumulative: Vec<(f64, u64)> = exposition
        .lines()
        .filter(|line| line.contains("job_latency_seconds_bucket{") && line.contains(&label))
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let count = line.rsplit(' ').next()?.parse::<u64>().ok()?;
            Some((le.parse::<f64>().ok()?, count))
        })
        .filter(|(le, _)| le.is_finite())
        .collect();
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut below = 0;
    cumulative
        .into_iter()
        .map(|(le, count)| {
            let in_bucket = count.saturating_sub(below);
            below = count;
            (le, in_bucket)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_become_counts_per_bucket() {
        let exposition = "\
# TYPE pairbroker_job_latency_seconds histogram
pairbroker_job_latency_seconds_sum{topic=\"multiply\"} 0.5
pairbroker_job_latency_seconds_bucket{le=\"0.00002\",topic=\"multiply\"} 0
pairbroker_job_latency_seconds_bucket{le=\"0.00003\",topic=\"multiply\"} 4
pairbroker_job_latency_seconds_bucket{le=\"0.000045\",topic=\"multiply\"} 10
pairbroker_job_latency_seconds_bucket{le=\"+Inf\",topic=\"multiply\"} 11
pairbroker_job_latency_seconds_bucket{le=\"0.00003\",topic=\"divide\"} 99
";
        assert_eq!(
            parse_latency_buckets(exposition, "multiply"),
            vec![(0.00002, 0), (0.00003, 4), (0.000045, 6)]
        );
    }
}
