//! W2 with NATS JetStream used directly, no pairbroker in between: the yardstick of the
//! clustered workloads. Publishers and workers are async-nats clients in the runner's process,
//! on the same cluster and with the same shape as the W2 runs through brokers: a work-queue
//! stream of `buffer` messages (discard new, a full stream retried every 5 ms, as the broker
//! does), publishers that each wait for their job's acknowledgement, and workers that pull
//! `prefetch` jobs at a time, multiply, and acknowledge each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;

use crate::workloads::Flow;

/// The stream the direct runs use, apart from the brokers' `pairbroker-…` streams.
const STREAM: &str = "direct-w2";

/// How long the direct workers may take to do every job.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long a publisher waits before trying a full stream again, as the broker does.
const FULL_RETRY: Duration = Duration::from_millis(5);

/// Runs `flow`'s jobs through JetStream at `urls` with `replicas` copies; returns the time from
/// the first publish until the last job was acknowledged by a worker.
pub async fn w2(urls: &str, replicas: usize, flow: Flow) -> anyhow::Result<Duration> {
    let servers: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let js = jetstream::new(connect(&servers).await?);
    create_stream(&js, replicas, flow).await?;
    let completed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..flow.factories {
        let consumer = workers_consumer(&servers).await?;
        workers.push(tokio::spawn(work(
            consumer,
            flow.prefetch as usize,
            completed.clone(),
        )));
    }

    // Two publishing clients, as the clustered runs have a miner on each broker.
    let started = Instant::now();
    let mut publishers = Vec::new();
    let share = flow.jobs / u64::from(flow.publishers);
    for index in 0..flow.publishers {
        let js = if index % 2 == 0 {
            js.clone()
        } else {
            jetstream::new(connect(&servers).await?)
        };
        let jobs = share + u64::from(u64::from(index) < flow.jobs % u64::from(flow.publishers));
        publishers.push(tokio::spawn(publish(js, jobs)));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let deadline = Instant::now() + RUN_LIMIT;
    while completed.load(Ordering::Relaxed) < flow.jobs {
        if Instant::now() >= deadline {
            bail!(
                "the direct workers did {} of {} jobs in {RUN_LIMIT:?}",
                completed.load(Ordering::Relaxed),
                flow.jobs
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    for worker in workers {
        worker.abort();
    }
    js.delete_stream(STREAM)
        .await
        .context("cannot delete the direct stream")?;
    Ok(elapsed)
}

async fn connect(servers: &[String]) -> anyhow::Result<async_nats::Client> {
    async_nats::connect(servers)
        .await
        .context("cannot connect to NATS")
}

/// The work-queue stream of `flow.buffer` messages, and its workers' consumer.
async fn create_stream(js: &jetstream::Context, replicas: usize, flow: Flow) -> anyhow::Result<()> {
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{STREAM}.jobs")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_messages: i64::from(flow.buffer),
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .context("cannot create the direct stream")?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .context("cannot create the workers' consumer")?;
    Ok(())
}

/// The workers' consumer, seen from a client of its own.
async fn workers_consumer(
    servers: &[String],
) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
    jetstream::new(connect(servers).await?)
        .get_stream(STREAM)
        .await?
        .get_consumer("workers")
        .await
        .map_err(|error| anyhow::anyhow!("cannot find the workers' consumer: {error}"))
}

/// A worker: pulls `prefetch` jobs at a time, multiplies, and acknowledges each.
async fn work(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    prefetch: usize,
    completed: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(prefetch)
        .messages()
        .await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let (x, y) = operands(&message.payload);
        std::hint::black_box(x.wrapping_mul(y));
        message
            .ack()
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        completed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A publisher: `jobs` jobs, each waiting for its acknowledgement.
async fn publish(js: jetstream::Context, jobs: u64) -> anyhow::Result<()> {
    for job in 0..jobs {
        let payload = payload(job as i64, 3);
        loop {
            let acknowledged = async {
                js.publish(format!("{STREAM}.jobs"), payload.clone().into())
                    .await?
                    .await
            };
            match acknowledged.await {
                Ok(_) => break,
                // Full, or the new stream not yet known where this client asks.
                Err(error)
                    if error.to_string().contains("maximum messages")
                        || error.to_string().contains("no stream found") =>
                {
                    tokio::time::sleep(FULL_RETRY).await;
                }
                Err(error) => bail!("publish failed: {error}"),
            }
        }
    }
    Ok(())
}

fn payload(x: i64, y: i64) -> Vec<u8> {
    let mut bytes = x.to_le_bytes().to_vec();
    bytes.extend(y.to_le_bytes());
    bytes
}

fn operands(bytes: &[u8]) -> (i64, i64) {
    let word = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|word| word.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    };
    (word(0), word(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_sixteen_bytes_and_reads_back() {
        let bytes = payload(-7, 1 << 40);
        assert_eq!(bytes.len(), 16);
        assert_eq!(operands(&bytes), (-7, 1 << 40));
        assert_eq!(operands(&[1, 2]), (0, 0));
    }
}
