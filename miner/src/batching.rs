//! [`Batcher`]: the miner's publishers hand their jobs to one batcher, which sends the jobs
//! handed over while earlier batches were on their way together, in one `publish_batch` call.
//!
//! Each publisher still has one job outstanding and still learns that job's own
//! [`Acknowledgement`], so back-pressure and retries work as before; only the calls are fewer.
//! A call carries up to one job per publisher waiting, because answering a call is most of what
//! a publish costs the broker, whatever the number of jobs in it. A lone publisher sends
//! batches of one, so it waits for no one.

use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use stubs::{BrokerError, Job, PublishBatch, PublishedBatch, MAX_PUBLISH_BATCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use transport::{BrokerLink, LinkError};

/// Batches on their way to the broker at once. More than one, so that a batch waiting for room
/// in a full topic does not hold back the jobs behind it, as concurrent publishes would not.
const BATCHES_IN_FLIGHT: usize = 4;

/// The broker's answer to one job's publish: its id, the broker's refusal, or the loss of the broker.
pub type Acknowledgement = Result<Result<u64, BrokerError>, Arc<LinkError>>;

type Handover = (Job, oneshot::Sender<Acknowledgement>);

/// Where publishers hand their jobs over.
#[derive(Clone, Debug)]
pub struct Batcher {
    jobs: mpsc::Sender<Handover>,
}

impl Batcher {
    /// Starts a batcher publishing to `topic` over `broker`. It runs until every clone of the
    /// batcher is dropped and its batches are answered.
    pub fn spawn(broker: Arc<BrokerLink>, topic: String) -> (Self, JoinHandle<()>) {
        let (jobs, handed_over) = mpsc::channel(MAX_PUBLISH_BATCH);
        let task = tokio::spawn(run(broker, topic, handed_over));
        (Self { jobs }, task)
    }

    /// Publishes `job` in the next batch and waits for its acknowledgement.
    pub async fn publish(&self, job: Job) -> Acknowledgement {
        let (reply, acknowledgement) = oneshot::channel();
        if self.jobs.send((job, reply)).await.is_err() {
            return Ok(Err(BrokerError::ShuttingDown));
        }
        acknowledgement
            .await
            .unwrap_or(Ok(Err(BrokerError::ShuttingDown)))
    }
}

async fn run(broker: Arc<BrokerLink>, topic: String, mut handed_over: mpsc::Receiver<Handover>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            first = handed_over.recv(), if in_flight.len() < BATCHES_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_PUBLISH_BATCH {
                    match handed_over.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                in_flight.push(send(&broker, &topic, batch));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one batch and tells each job's publisher what became of it.
async fn send(broker: &BrokerLink, topic: &str, batch: Vec<Handover>) {
    let (jobs, replies): (Vec<Job>, Vec<oneshot::Sender<Acknowledgement>>) =
        batch.into_iter().unzip();
    let request = PublishBatch {
        topic: topic.to_owned(),
        jobs,
    };
    let answer = broker
        .call(&request, |client, request| async move {
            client
                .publish_batch(tarpc::context::current(), request)
                .await
        })
        .await;
    let mut replies = replies.into_iter();
    match answer {
        Ok(Ok(PublishedBatch { job_ids, error })) => {
            for (job_id, reply) in job_ids.into_iter().zip(replies.by_ref()) {
                let _ = reply.send(Ok(Ok(job_id)));
            }
            // Jobs after the stored ones were not published, for `error`; a broker that
            // answered fewer ids without saying why is treated as if the topic stayed full.
            let error = error.unwrap_or(BrokerError::TopicFull {
                topic: topic.to_owned(),
                capacity: 0,
            });
            for reply in replies {
                let _ = reply.send(Ok(Err(error.clone())));
            }
        }
        Ok(Err(error)) => {
            for reply in replies {
                let _ = reply.send(Ok(Err(error.clone())));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
