//! The soak: the real broker, factories and a miner as processes on loopback for many minutes,
//! at a steady rate, while factories are killed and started again at random and an attacker on
//! the same host holds connections that never finish their handshake or never send a request.
//! It checks job by job that nothing acknowledged is lost, and reports the broker's memory and
//! its latency minute by minute.
//!
//! Run by `scripts/soak`, which says how; `bench soak --help` lists the options.

mod minute;
mod program;
mod tally;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use stubs::{BrokerClient, TopicReport};

use crate::attacker::Attacker;
use crate::processes::{self, Programs};
use crate::workloads::create_topic;
use minute::Minute;
use program::{Program, Random};

/// The topic the soak uses.
const TOPIC: &str = stubs::MULTIPLY_TOPIC;
/// The topic's buffer: room for a second of jobs at the default rate, so that a kill's
/// requeued jobs and a slow moment never make the miner wait.
const BUFFER: u32 = 2_000;
/// How often the soak checks its processes and whether a kill is due.
const TICK: Duration = Duration::from_millis(100);
/// How long the jobs still queued when the miner stops may take to be completed.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How long a program may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// `bench soak`: many minutes of jobs at a steady rate, with factories killed at random and an
/// attacker holding connections from the same host; reports jobs lost and duplicated, the
/// broker's memory at the start and the end, and p99 latency per minute.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench soak", version)]
pub struct SoakArgs {
    /// How long the jobs flow, in minutes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub minutes: u64,
    /// Jobs per second the miner publishes.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u32,
    /// Factory processes, each on a port of its own.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=64))]
    pub factories: u32,
    /// Calls in flight per factory.
    #[arg(long, default_value_t = 8)]
    pub prefetch: u32,
    /// Mean seconds between kills; each gap is drawn at random from 0 to twice this.
    #[arg(long, default_value_t = 3.0)]
    pub kill_every: f64,
    /// Connections the attacker holds that send nothing at all.
    #[arg(long, default_value_t = 60)]
    pub silent: u32,
    /// Connections the attacker holds that send half a handshake and stop.
    #[arg(long, default_value_t = 60)]
    pub half_open: u32,
    /// Connections the attacker holds that complete the handshake and never send a request.
    #[arg(long, default_value_t = 60)]
    pub idle: u32,
    /// Seed of the kills' random choices [default: from the clock]; printed, to repeat a run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the programs' output goes.
    #[arg(long, default_value = "target/soak")]
    pub out: PathBuf,
}

/// Runs `bench soak` with the arguments after `soak`.
pub async fn main(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = SoakArgs::parse_from(args);
    let report = run(args).await?;
    if report.lost > 0 {
        bail!("{} acknowledged jobs were never completed", report.lost);
    }
    Ok(())
}

/// What a soak found.
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Jobs the miner printed as acknowledged.
    pub published: u64,
    /// Distinct acknowledged jobs the broker printed as completed.
    pub completed: u64,
    /// Acknowledged jobs never completed.
    pub lost: u64,
    /// Completions beyond the first of a job.
    pub duplicates: u64,
}

/// The broker and factories of a soak, and what starting and killing them needs.
struct Soak {
    args: SoakArgs,
    /// Where the programs are.
    dir: PathBuf,
    broker: Program,
    address: SocketAddr,
    http: SocketAddr,
    client: BrokerClient,
    /// Each factory's port, kept across its restarts.
    ports: Vec<u16>,
    factories: Vec<Program>,
    restarts: u32,
    random: Random,
}

impl Soak {
    /// Builds the programs, starts the broker with the topic and the factories, and waits until
    /// every factory has subscribed.
    async fn start(args: SoakArgs, seed: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let programs = Programs::build(&args.out)?;
        if !programs.release() {
            eprintln!(
                "soak: a debug build; its memory and latency figures mean little (use --release)"
            );
        }
        let dir = std::env::current_exe()?
            .parent()
            .context("the runner has no directory")?
            .to_path_buf();
        let (address, http) = (processes::loopback()?, processes::loopback()?);
        let broker_args = [
            "--port",
            &address.port().to_string(),
            "--http",
            &http.to_string(),
        ];
        let broker_args = broker_args.map(str::to_owned);
        let mut broker = Program::start(&dir, &args.out, "broker", "broker", &broker_args)?;
        let client = processes::connect(address, None, || broker.check_running()).await?;
        create_topic(&client, BUFFER).await?;
        let mut soak = Self {
            args,
            dir,
            broker,
            address,
            http,
            client,
            ports: Vec::new(),
            factories: Vec::new(),
            restarts: 0,
            random: Random(seed),
        };
        for index in 0..soak.args.factories {
            let port = processes::loopback()?.port();
            soak.ports.push(port);
            let factory = soak.start_factory(port, &format!("factory-{index}"))?;
            soak.factories.push(factory);
        }
        soak.wait_for_factories().await?;
        Ok(soak)
    }

    fn start_factory(&self, port: u16, label: &str) -> anyhow::Result<Program> {
        let args = [
            "--broker",
            &self.address.to_string(),
            "--port",
            &port.to_string(),
            "--topics",
            TOPIC,
            "--no-pipeline",
            "--prefetch",
            &self.args.prefetch.to_string(),
            "--quiet",
        ];
        let args = args.map(str::to_owned);
        Program::start(&self.dir, &self.args.out, "factory", label, &args)
    }

    async fn wait_for_factories(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while subscribers(&self.client).await? < self.args.factories as usize {
            self.broker.check_running()?;
            if Instant::now() >= deadline {
                bail!("the factories did not all subscribe within 30 s");
            }
            tokio::time::sleep(TICK).await;
        }
        Ok(())
    }

    fn start_miner(&self) -> anyhow::Result<Program> {
        let args = [
            "--broker",
            &self.address.to_string(),
            "--topic",
            TOPIC,
            "--buffer",
            &BUFFER.to_string(),
            "--concurrency",
            "8",
            "--rate",
            &self.args.rate.to_string(),
        ];
        let args = args.map(str::to_owned);
        Program::start(&self.dir, &self.args.out, "miner", "miner", &args)
    }

    /// When the next kill is due, from `now`: a gap drawn from 0 to twice the mean.
    fn next_kill(&mut self, now: Instant) -> Instant {
        now + Duration::from_secs_f64(self.random.unit() * 2.0 * self.args.kill_every)
    }

    /// Kills a factory chosen at random and starts it again on its port.
    fn kill_one(&mut self) -> anyhow::Result<()> {
        let which = (self.random.next() % u64::from(self.args.factories)) as usize;
        self.factories[which].kill();
        self.restarts += 1;
        let label = format!("factory-{which}-{}", self.restarts);
        self.factories[which] = self.start_factory(self.ports[which], &label)?;
        Ok(())
    }

    /// Lets the jobs flow for the soak's minutes, killing factories as they fall due and
    /// printing each minute: the figures at the start of the last minute, its kills so far,
    /// and the kills in all.
    async fn flow(
        &mut self,
        miner: &mut Program,
        attacker: &Attacker,
    ) -> anyhow::Result<(Minute, u64, u64)> {
        let started = Instant::now();
        let duration = Duration::from_secs(self.args.minutes * 60);
        let mut next_kill = self.next_kill(started);
        let (mut kills, mut all_kills) = (0u64, 0u64);
        let mut minute = Minute::begin(&self.client, self.http, attacker).await?;
        let mut minute_number = 1;
        let mut minute_ends = started + Duration::from_secs(60);
        while started.elapsed() < duration {
            tokio::time::sleep(TICK).await;
            self.broker.check_running()?;
            miner.check_running()?;
            let now = Instant::now();
            if now >= next_kill {
                self.kill_one()?;
                kills += 1;
                all_kills += 1;
                next_kill = self.next_kill(now);
            }
            if now >= minute_ends {
                let next = Minute::begin(&self.client, self.http, attacker).await?;
                let rss = self.broker.rss_bytes();
                minute.print(&minute_number.to_string(), &next, rss, kills);
                minute = next;
                minute_number += 1;
                minute_ends += Duration::from_secs(60);
                kills = 0;
            }
        }
        Ok((minute, kills, all_kills))
    }

    /// Waits until every job left is completed.
    async fn drain(&mut self) -> anyhow::Result<()> {
        let drained = Instant::now() + DRAIN_LIMIT;
        loop {
            self.broker.check_running()?;
            let stats = self.client.stats(tarpc::context::current()).await?;
            let topic = topic_of(&stats.topics)?;
            if topic.ready == 0 && topic.in_flight == 0 {
                return Ok(());
            }
            if Instant::now() >= drained {
                bail!(
                    "{} jobs ready and {} in flight after {DRAIN_LIMIT:?}",
                    topic.ready,
                    topic.in_flight
                );
            }
            tokio::time::sleep(TICK).await;
        }
    }
}

/// Runs the soak and prints its report.
pub async fn run(args: SoakArgs) -> anyhow::Result<SoakReport> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
            | 1
    });
    let mut soak = Soak::start(args.clone(), seed).await?;
    let rss_start = soak.broker.rss_bytes();
    let attacker = Attacker::start(soak.address, [args.silent, args.half_open, args.idle]);
    let mut miner = soak.start_miner()?;
    println!(
        "soak: {} min at {} jobs/s, {} factories (prefetch {}), a kill every {:.1} s on average \
         (seed {seed}), attacker {} silent + {} half-open + {} idle connections; output in {}",
        args.minutes,
        args.rate,
        args.factories,
        args.prefetch,
        args.kill_every,
        args.silent,
        args.half_open,
        args.idle,
        args.out.display()
    );
    println!("minute  completed  p99 latency   broker RSS  kills  attacker reopened");
    let (minute, kills, all_kills) = soak.flow(&mut miner, &attacker).await?;

    // The miner finishes its publishes and exits; then every job it got acknowledged must be
    // completed, with the attacker still there.
    miner.terminate().await?;
    soak.drain().await?;
    let rss_end = soak.broker.rss_bytes();
    let last = Minute::begin(&soak.client, soak.http, &attacker).await?;
    if last.completed > minute.completed {
        minute.print("drain", &last, rss_end, kills);
    }
    let stats = soak.client.stats(tarpc::context::current()).await?;
    let topic = topic_of(&stats.topics)?.clone();
    attacker.stop();
    soak.broker.terminate().await?;
    for factory in &mut soak.factories {
        factory.kill();
    }

    let report = tally::count(&miner.output()?, &soak.broker.output()?);
    println!(
        "broker RSS: {:.1} MiB at the start, {:.1} MiB at the end",
        mib(rss_start),
        mib(rss_end)
    );
    println!(
        "jobs: {} published (the broker counted {}), {} completed, {} lost, {} duplicate \
         completions; {} requeued by the kills (each may have been computed twice), {} \
         dead-lettered; {all_kills} factories killed; attacker connections reopened after the \
         broker closed them: {}",
        report.published,
        topic.published,
        report.completed,
        report.lost,
        report.duplicates,
        topic.requeued,
        topic.undeliverable,
        attacker.reopened()
    );
    Ok(report)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn topic_of(topics: &[TopicReport]) -> anyhow::Result<&TopicReport> {
    topics
        .iter()
        .find(|topic| topic.name == TOPIC)
        .context("the topic is gone")
}

async fn subscribers(client: &BrokerClient) -> anyhow::Result<usize> {
    let stats = client.stats(tarpc::context::current()).await?;
    Ok(stats
        .subscribers
        .iter()
        .filter(|subscriber| subscriber.topic == TOPIC)
        .count())
}
