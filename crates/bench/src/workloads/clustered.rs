//! A flow through two brokers over a NATS cluster started for the run, each broker with half
//! the factories and a miner with half the publishers and jobs; JetStream used directly on the
//! same cluster first, when asked.

use std::any::Any;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;
use stubs::BrokerClient;

use super::starting::{topic_of, Run, POLL, RUN_LIMIT};
use super::{Flow, RunFigures};
use crate::machine::Usage;
use crate::processes::{self, Programs};

/// Runs a clustered flow: a NATS cluster of `nodes` started for the run, JetStream used
/// directly on it first when `direct` asks, then two brokers over it (`--replicas nodes`), each
/// with half the factories and a miner with half the publishers and jobs.
pub(super) async fn run(
    programs: &Programs,
    flow: Flow,
    nodes: u8,
    direct: bool,
    busy_before: f64,
) -> anyhow::Result<RunFigures> {
    // The servers live until the run's end, then are killed.
    let (_servers, urls) = tokio::task::spawn_blocking(move || start_nats(nodes)).await?;
    let replicas = usize::from(nodes);
    let direct_jobs_per_s = if direct {
        let elapsed = crate::direct::w2(&urls, replicas, flow).await?;
        Some(flow.jobs as f64 / elapsed.as_secs_f64().max(1e-9))
    } else {
        None
    };

    let addresses = [processes::loopback()?, processes::loopback()?];
    let mut run = Run::default();
    let clients = start_brokers(programs, flow, &addresses, &urls, replicas, &mut run).await?;
    // Each program knows both brokers, its own first.
    let both = |own: usize| format!("{},{}", addresses[own], addresses[1 - own]);
    run.start_factories(programs, flow, |index| both(index as usize % 2))?;
    for (index, client) in clients.iter().enumerate() {
        let factories = flow.factories / 2 + u32::from((index as u32) < flow.factories % 2);
        run.wait_for_factories(client, flow, factories).await?;
    }
    let started = Instant::now();
    let broker_cpu_before = Run::cpu_s(&mut run.brokers);
    for index in 0..2 {
        let half = Flow {
            publishers: (flow.publishers / 2).max(1),
            jobs: flow.jobs / 2 + u64::from(index == 0) * (flow.jobs % 2),
            ..flow
        };
        run.start_miner(programs, half, &both(index), &format!("miner-{index}"))?;
    }
    let (completed, latencies) = wait_for_every_job(flow, &clients, &mut run).await?;
    let elapsed = started.elapsed();
    run.sample();
    let broker_flow_cpu_s = Run::cpu_s(&mut run.brokers) - broker_cpu_before;
    let ack_us = run.miners_done().await?;
    Ok(RunFigures {
        elapsed,
        jobs: completed.iter().sum(),
        // The slower broker's: jobs do not wait less for being split between two.
        p50_us: latencies.iter().map(|latency| latency.0).max().unwrap_or(0),
        p99_us: latencies.iter().map(|latency| latency.1).max().unwrap_or(0),
        broker: brokers_usage(&mut run),
        broker_flow_cpu_s,
        factories_cpu_s: Run::cpu_s(&mut run.factories),
        miner_cpu_s: Run::cpu_s(&mut run.miners),
        busy_before,
        ack_us,
        direct_jobs_per_s,
        ..RunFigures::default()
    })
}

/// One NATS server, or a cluster of three, and the URLs a broker is given for it.
fn start_nats(nodes: u8) -> (Box<dyn Any + Send>, String) {
    if nodes == 1 {
        let server = nats_harness::NatsServer::start();
        let url = server.url.clone();
        (Box::new(server), url)
    } else {
        let cluster = nats_harness::NatsCluster::start();
        let urls = cluster.urls();
        (Box::new(cluster), urls)
    }
}

/// Starts a broker at each of `addresses` over the NATS servers at `urls`, each stream with
/// `replicas` replicas, and a client of each.
async fn start_brokers(
    programs: &Programs,
    flow: Flow,
    addresses: &[SocketAddr],
    urls: &str,
    replicas: usize,
    run: &mut Run,
) -> anyhow::Result<Vec<BrokerClient>> {
    for (index, address) in addresses.iter().enumerate() {
        let args = [
            "--port",
            &address.port().to_string(),
            "--quiet",
            "--http",
            "off",
            "--store",
            urls,
            "--replicas",
            &replicas.to_string(),
        ];
        let label = format!("broker-{index}");
        let broker = programs.start("broker", &label, &args.map(str::to_owned))?;
        run.brokers.push(broker);
    }
    let mut clients = Vec::new();
    for address in addresses {
        clients.push(run.connect(*address, flow).await?);
    }
    Ok(clients)
}

/// Polls both brokers until their factories have completed every job between them: the jobs
/// each counted, and its (p50, p99) latency in microseconds.
async fn wait_for_every_job(
    flow: Flow,
    clients: &[BrokerClient],
    run: &mut Run,
) -> anyhow::Result<([u64; 2], [(u64, u64); 2])> {
    // Each broker counts what its own factories completed.
    let mut completed = [0u64; 2];
    let mut latencies = [(0u64, 0u64); 2];
    let deadline = Instant::now() + RUN_LIMIT;
    while completed.iter().sum::<u64>() < flow.jobs {
        for (index, client) in clients.iter().enumerate() {
            let what = "the broker's figures";
            let stats = run.wait_for(client, RUN_LIMIT, what, |_| true).await?;
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
    Ok((completed, latencies))
}

/// The brokers' CPU time together, and the largest memory of one.
fn brokers_usage(run: &mut Run) -> Usage {
    let mut broker = Usage::default();
    for process in &mut run.brokers {
        let usage = process.usage();
        broker.cpu_s += usage.cpu_s;
        broker.rss_bytes = broker.rss_bytes.max(usage.rss_bytes);
        broker.peak_rss_bytes = broker.peak_rss_bytes.max(usage.peak_rss_bytes);
    }
    broker
}
