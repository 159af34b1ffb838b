//! The processes of one run: starting the miner and the factories, ours or the Go lab's, and
//! watching them while asking the broker for its figures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stubs::{BrokerClient, BrokerStats, TopicReport};

use super::{tls_args, tls_dir, Flow, Language, TOPIC};
use crate::go;
use crate::processes::{self, Process, Programs};

/// How long one run may take before the runner gives up on it.
pub(super) const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long the factories may take to subscribe, and a miner to exit once its jobs are in.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How often the runner asks the broker for its figures while jobs flow.
pub(super) const POLL: Duration = Duration::from_millis(5);
/// How often the runner reads the processes' CPU time and memory.
const SAMPLE: Duration = Duration::from_millis(50);

/// The processes of one run, stopped when dropped.
#[derive(Default)]
pub(super) struct Run {
    pub brokers: Vec<Process>,
    pub factories: Vec<Process>,
    pub miners: Vec<Process>,
}

impl Run {
    pub fn sample(&mut self) {
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
        self.check_brokers()?;
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

    fn check_brokers(&mut self) -> anyhow::Result<()> {
        self.brokers.iter_mut().try_for_each(Process::check_running)
    }

    /// The CPU seconds of `processes`, all together.
    pub fn cpu_s(processes: &mut [Process]) -> f64 {
        processes
            .iter_mut()
            .map(|process| process.usage().cpu_s)
            .sum()
    }

    /// Connects to the broker at `address` once it listens, in TLS for a TLS flow.
    pub async fn connect(
        &mut self,
        address: SocketAddr,
        flow: Flow,
    ) -> anyhow::Result<BrokerClient> {
        let tls = if flow.tls {
            transport::TlsFiles::in_dir(tls_dir()?).client()?
        } else {
            None
        };
        processes::connect(address, tls.as_ref(), || self.check_brokers()).await
    }

    /// Asks the broker for its figures until `done` holds, checking that every process lives.
    pub async fn wait_for(
        &mut self,
        client: &BrokerClient,
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
                self.sample();
                self.check()?;
                sampled = Instant::now();
            }
            if started.elapsed() >= limit {
                bail!("gave up waiting for {what} after {limit:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `factories` factories have subscribed to `client`'s broker.
    pub async fn wait_for_factories(
        &mut self,
        client: &BrokerClient,
        flow: Flow,
        factories: u32,
    ) -> anyhow::Result<()> {
        let what = "the factories to subscribe";
        self.wait_for(client, SETTLE_LIMIT, what, |stats| {
            subscribed(stats, flow, factories)
        })
        .await?;
        Ok(())
    }

    /// Starts `flow`'s miner (ours or the Go lab's) against `brokers`, its log under `label`.
    pub fn start_miner(
        &mut self,
        programs: &Programs,
        flow: Flow,
        brokers: &str,
        label: &str,
    ) -> anyhow::Result<()> {
        let miner = if flow.language == Language::Go {
            let args = go::miner_args(flow, brokers)?;
            programs.start_go("miner", &format!("go-{label}"), &args)?
        } else {
            programs.start("miner", label, &miner_args(flow, brokers)?)?
        };
        self.miners.push(miner);
        Ok(())
    }

    /// Starts `flow`'s factories (ours or the Go lab's), factory `index` with broker(s)
    /// `brokers(index)`.
    pub fn start_factories(
        &mut self,
        programs: &Programs,
        flow: Flow,
        brokers: impl Fn(u32) -> String,
    ) -> anyhow::Result<()> {
        for index in 0..flow.factories {
            let factory = if flow.language == Language::Go {
                let args = go::factory_args(flow, &brokers(index));
                programs.start_go("factory", &format!("go-factory-{index}"), &args)?
            } else {
                let args = factory_args(flow, &brokers(index))?;
                programs.start("factory", &format!("factory-{index}"), &args)?
            };
            self.factories.push(factory);
        }
        Ok(())
    }

    /// Waits for every miner to exit once its jobs are in: the slowest (p50, p99) publish
    /// acknowledgement of them, in microseconds.
    pub async fn miners_done(&mut self) -> anyhow::Result<(u64, u64)> {
        let mut ack_us = (0, 0);
        for miner in &mut self.miners {
            if !miner.exited_within(SETTLE_LIMIT).await {
                bail!("{} did not exit once its jobs were in", miner.label());
            }
            let (p50, p99) = acknowledgement_us(&miner.log());
            ack_us = (ack_us.0.max(p50), ack_us.1.max(p99));
        }
        Ok(ack_us)
    }
}

/// Our miner's arguments for `flow`, against `brokers`.
fn miner_args(flow: Flow, brokers: &str) -> anyhow::Result<Vec<String>> {
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
    Ok(args)
}

/// Our factory's arguments for `flow`, against `brokers`.
fn factory_args(flow: Flow, brokers: &str) -> anyhow::Result<Vec<String>> {
    let args = [
        "--port",
        "0",
        "--broker",
        brokers,
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
    Ok(args)
}

/// Creates the workload's topic with `buffer`, as our miner and factories do themselves.
pub async fn create_topic(client: &BrokerClient, buffer: u32) -> anyhow::Result<()> {
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

pub(super) fn topic_of(stats: &BrokerStats) -> Option<&TopicReport> {
    stats.topics.iter().find(|topic| topic.name == TOPIC)
}
