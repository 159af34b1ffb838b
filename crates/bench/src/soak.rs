//! The soak: the real broker, factories and a miner as processes on loopback for many minutes,
//! at a steady rate, while factories are killed and started again at random and an attacker on
//! the same host holds connections that never finish their handshake or never send a request.
//! It checks job by job that nothing acknowledged is lost, and reports the broker's memory and
//! its latency minute by minute.
//!
//! Run by `scripts/soak`, which says how; `bench soak --help` lists the options.

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use stubs::{BrokerClient, TopicReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::attacker::Attacker;
use crate::machine;
use crate::processes::Programs;

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

/// A program of the soak with its output in files, killed when dropped.
struct Program {
    label: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Program {
    fn start(
        dir: &Path,
        out: &Path,
        program: &str,
        label: &str,
        args: &[String],
    ) -> anyhow::Result<Self> {
        let stdout = out.join(format!("{label}.out"));
        let stderr = out.join(format!("{label}.log"));
        let child = Command::new(dir.join(program))
            .args(args)
            .stdin(Stdio::null())
            .stdout(
                File::create(&stdout)
                    .with_context(|| format!("cannot create {}", stdout.display()))?,
            )
            .stderr(
                File::create(&stderr)
                    .with_context(|| format!("cannot create {}", stderr.display()))?,
            )
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            bail!(
                "{} exited ({status}); the end of its log:\n{}",
                self.label,
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        Ok(())
    }

    fn rss_bytes(&self) -> u64 {
        machine::usage(self.child.id()).map_or(0, |usage| usage.rss_bytes)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a successful exit.
    async fn terminate(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        let deadline = Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM", self.label);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {EXIT_LIMIT:?} of SIGTERM",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn output(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.stdout)
            .with_context(|| format!("cannot read {}", self.stdout.display()))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small random generator (xorshift64*), enough to choose kills reproducibly.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number from 0 to 1.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("no free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs the soak and prints its report.
pub async fn run(args: SoakArgs) -> anyhow::Result<SoakReport> {
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
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
            | 1
    });
    let mut random = Random(seed);
    let broker_address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let http_address = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let broker_args: Vec<String> = [
        "--port",
        &broker_address.port().to_string(),
        "--http",
        &http_address.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut broker = Program::start(&dir, &args.out, "broker", "broker", &broker_args)?;
    let client = connect(broker_address, &mut broker).await?;
    let channel = stubs::ChannelRequest {
        topic: TOPIC.to_owned(),
        buffer: BUFFER,
    };
    client
        .create_channel(tarpc::context::current(), channel)
        .await
        .context("the broker stopped answering")?
        .context("the broker refused the topic")?;

    let factory_args = |port: u16| -> Vec<String> {
        [
            "--broker",
            &broker_address.to_string(),
            "--port",
            &port.to_string(),
            "--topics",
            TOPIC,
            "--no-pipeline",
            "--prefetch",
            &args.prefetch.to_string(),
            "--quiet",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let mut ports = Vec::new();
    let mut factories = Vec::new();
    for index in 0..args.factories {
        let port = free_port()?;
        ports.push(port);
        factories.push(Program::start(
            &dir,
            &args.out,
            "factory",
            &format!("factory-{index}"),
            &factory_args(port),
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while subscribers(&client).await? < args.factories as usize {
        broker.check_running()?;
        if Instant::now() >= deadline {
            bail!("the factories did not all subscribe within 30 s");
        }
        tokio::time::sleep(TICK).await;
    }

    let rss_start = broker.rss_bytes();
    let attacker = Attacker::start(broker_address, [args.silent, args.half_open, args.idle]);
    let miner_args: Vec<String> = [
        "--broker",
        &broker_address.to_string(),
        "--topic",
        TOPIC,
        "--buffer",
        &BUFFER.to_string(),
        "--concurrency",
        "8",
        "--rate",
        &args.rate.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut miner = Program::start(&dir, &args.out, "miner", "miner", &miner_args)?;
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

    let started = Instant::now();
    let duration = Duration::from_secs(args.minutes * 60);
    let mut next_kill = started + Duration::from_secs_f64(random.unit() * 2.0 * args.kill_every);
    let mut kills = 0u64;
    let mut all_kills = 0u64;
    let mut minute = Minute::begin(&client, http_address, &attacker).await?;
    let mut minute_number = 1;
    let mut minute_ends = started + Duration::from_secs(60);
    let mut restarts = 0u32;
    while started.elapsed() < duration {
        tokio::time::sleep(TICK).await;
        broker.check_running()?;
        miner.check_running()?;
        let now = Instant::now();
        if now >= next_kill {
            let which = (random.next() % u64::from(args.factories)) as usize;
            factories[which].kill();
            restarts += 1;
            factories[which] = Program::start(
                &dir,
                &args.out,
                "factory",
                &format!("factory-{which}-{restarts}"),
                &factory_args(ports[which]),
            )?;
            kills += 1;
            all_kills += 1;
            next_kill = now + Duration::from_secs_f64(random.unit() * 2.0 * args.kill_every);
        }
        if now >= minute_ends {
            let next = Minute::begin(&client, http_address, &attacker).await?;
            minute.print(&minute_number.to_string(), &next, broker.rss_bytes(), kills);
            minute = next;
            minute_number += 1;
            minute_ends += Duration::from_secs(60);
            kills = 0;
        }
    }

    // The miner finishes its publishes and exits; then every job it got acknowledged must be
    // completed, with the attacker still there.
    miner.terminate().await?;
    let drained = Instant::now() + DRAIN_LIMIT;
    loop {
        broker.check_running()?;
        let stats = client.stats(tarpc::context::current()).await?;
        let topic = topic_of(&stats.topics)?;
        if topic.ready == 0 && topic.in_flight == 0 {
            break;
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
    let rss_end = broker.rss_bytes();
    let last = Minute::begin(&client, http_address, &attacker).await?;
    if last.completed > minute.completed {
        minute.print("drain", &last, rss_end, kills);
    }
    let topic = topic_of(&client.stats(tarpc::context::current()).await?.topics)?.clone();
    attacker.stop();
    broker.terminate().await?;
    for factory in &mut factories {
        factory.kill();
    }

    let acknowledged = jobs_acknowledged(&miner.output()?);
    let completions = jobs_completed(&broker.output()?);
    let mut times: HashMap<(i64, i64), u64> = HashMap::new();
    for job in completions {
        *times.entry(job).or_default() += 1;
    }
    let lost = acknowledged
        .iter()
        .filter(|job| !times.contains_key(job))
        .count() as u64;
    let duplicates = acknowledged
        .iter()
        .filter_map(|job| times.get(job))
        .map(|times| times - 1)
        .sum();
    let report = SoakReport {
        published: acknowledged.len() as u64,
        completed: acknowledged.len() as u64 - lost,
        lost,
        duplicates,
    };
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

/// Connects to the broker once it listens.
async fn connect(address: SocketAddr, broker: &mut Program) -> anyhow::Result<BrokerClient> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match transport::connect_broker(
            &address.to_string(),
            Duration::from_secs(1),
            &transport::AccessToken::none(),
            None,
        )
        .await
        {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() >= deadline => {
                bail!("the broker did not start listening: {error}")
            }
            Err(_) => {
                broker.check_running()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The figures at the start of a minute, to subtract from the next minute's.
struct Minute {
    completed: u64,
    /// Jobs per latency bucket since the broker started, and the count beyond the last bound.
    buckets: Vec<(f64, u64)>,
    beyond: u64,
    reopened: u64,
}

impl Minute {
    async fn begin(
        client: &BrokerClient,
        http: SocketAddr,
        attacker: &Attacker,
    ) -> anyhow::Result<Self> {
        let stats = client.stats(tarpc::context::current()).await?;
        let completed = topic_of(&stats.topics)?.completed;
        let exposition = fetch_metrics(http).await?;
        let buckets = crate::workloads::parse_latency_buckets(&exposition, TOPIC);
        let count = latency_count(&exposition);
        let beyond = count.saturating_sub(buckets.iter().map(|(_, jobs)| jobs).sum());
        Ok(Self {
            completed,
            buckets,
            beyond,
            reopened: attacker.reopened(),
        })
    }

    /// Prints the minute that ended at `next` (or the drain after the last), under `label`.
    fn print(&self, label: &str, next: &Minute, rss: u64, kills: u64) {
        let mut buckets = next.buckets.clone();
        for (bucket, before) in buckets.iter_mut().zip(&self.buckets) {
            bucket.1 = bucket.1.saturating_sub(before.1);
        }
        let beyond = next.beyond.saturating_sub(self.beyond);
        let total: u64 = buckets.iter().map(|(_, jobs)| jobs).sum::<u64>() + beyond;
        let p99 = percentile(&buckets, total, 0.99)
            .map_or("beyond the last bucket".to_owned(), |seconds| {
                format!("<= {:.2} ms", seconds * 1000.0)
            });
        println!(
            "{label:>6}  {:>9}  {p99:>11}  {:>7.1} MiB  {kills:>5}  {:>17}",
            next.completed - self.completed,
            mib(rss),
            next.reopened - self.reopened
        );
    }
}

/// The upper bound of the bucket that holds the `share` quantile of `total` jobs, or `None`
/// when it lies beyond the last bound.
fn percentile(buckets: &[(f64, u64)], total: u64, share: f64) -> Option<f64> {
    let wanted = (total as f64 * share).ceil() as u64;
    let mut below = 0;
    for (bound, jobs) in buckets {
        below += jobs;
        if below >= wanted {
            return Some(*bound);
        }
    }
    None
}

/// The count of the topic's latency histogram, beyond its last bound included.
fn latency_count(exposition: &str) -> u64 {
    let label = format!("topic=\"{TOPIC}\"");
    exposition
        .lines()
        .find(|line| line.contains("job_latency_seconds_count{") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

async fn fetch_metrics(http: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(http)
        .await
        .with_context(|| format!("cannot reach the broker's HTTP side at {http}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The jobs the miner printed as acknowledged: `published X and Y to TOPIC (job N)`.
fn jobs_acknowledged(output: &str) -> Vec<(i64, i64)> {
    output
        .lines()
        .filter_map(|line| {
            let (operands, _) = line.strip_prefix("published ")?.split_once(" to ")?;
            let (x, y) = operands.split_once(" and ")?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The jobs the broker printed as completed: `Factory.Multiply of X and Y is P`.
fn jobs_completed(output: &str) -> Vec<(i64, i64)> {
    output
        .lines()
        .filter_map(|line| {
            let (operands, _) = line
                .strip_prefix("Factory.Multiply of ")?
                .split_once(" is ")?;
            let (x, y) = operands.split_once(" and ")?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_is_the_bound_of_the_bucket_that_reaches_it() {
        let buckets = [(0.001, 90), (0.002, 9), (0.005, 1)];
        assert_eq!(percentile(&buckets, 100, 0.99), Some(0.002));
        assert_eq!(percentile(&buckets, 200, 0.99), None);
    }

    #[test]
    fn jobs_are_read_from_the_miner_and_the_broker_lines() {
        let miner = "published 12 and 34 to multiply (job 0)\nsomething else\n";
        assert_eq!(jobs_acknowledged(miner), vec![(12, 34)]);
        let broker = "Factory.Multiply of 12 and 34 is 408\nFactory.Divide of 1 and 2 is 0\n";
        assert_eq!(jobs_completed(broker), vec![(12, 34)]);
    }
}
