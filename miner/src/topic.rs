//! [`TopicLink`]: the miner's way to its topic, shared by the random jobs and the chosen ones.
//! It creates the topic (again when a restarted broker has forgotten it) and publishes each job
//! until the broker stores it, so that both kinds of job follow one retry policy.

use std::sync::Arc;

use stubs::{BrokerError, ChannelRequest, Job};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::retry::{Ended, Retry};
use transport::{BrokerLink, LinkConfig, LinkError};

use crate::batching::Batcher;
use crate::MinerError;

/// A topic on a broker, created and ready for jobs.
pub(crate) struct TopicLink {
    broker: Arc<BrokerLink>,
    batcher: Batcher,
    channel: ChannelRequest,
}

impl TopicLink {
    /// Connects to the broker, creates `topic` with `buffer` and starts the batcher that
    /// carries the jobs. The batcher's task ends once the link is dropped and its batches are
    /// answered. `None` when `shutdown` came while the miner was still waiting for its broker.
    pub(crate) async fn open(
        link: &LinkConfig,
        topic: &str,
        buffer: u32,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Self, JoinHandle<()>)>, MinerError> {
        let Some(broker) = BrokerLink::connect(link, shutdown.clone())
            .await
            .map_err(MinerError::BrokerUnreachable)?
        else {
            return Ok(None);
        };
        let channel = ChannelRequest {
            topic: topic.to_owned(),
            buffer,
        };
        create_channel(&broker, &channel).await?;
        let (batcher, batcher_task) = Batcher::spawn(broker.clone(), channel.topic.clone());
        let topic = Self {
            broker,
            batcher,
            channel,
        };
        Ok(Some((topic, batcher_task)))
    }

    /// The topic's name.
    pub(crate) fn name(&self) -> &str {
        &self.channel.topic
    }

    /// Publishes one job, waiting as long as the topic stays full: back-pressure, as a send
    /// on a full Go channel blocks. A lost broker is reconnected and the job published again;
    /// so is a job that failed for now (see [`again`]).
    ///
    /// Once shutdown is signalled, the publish in flight is let finish (so that every job the
    /// broker accepted is reported) but not tried again: `None`, the job was not published.
    pub(crate) async fn publish(
        &self,
        job: Job,
        shutdown: &CancellationToken,
    ) -> Result<Option<u64>, MinerError> {
        let action = || format!("publish to {:?}", self.channel.topic);
        // Made at the first failure: most publishes succeed at once, and making one reads
        // the clock on every job.
        let mut retry = None;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let failure = match self.batcher.publish(job).await {
                Ok(Ok(job_id)) => return Ok(Some(job_id)),
                // Not a failure: the broker held the publish as long as the topic stayed full.
                Ok(Err(BrokerError::TopicFull { topic, capacity })) => {
                    tracing::info!(
                        "the topic {topic:?} is full ({capacity} jobs); still waiting for room"
                    );
                    continue;
                }
                Ok(Err(BrokerError::NoSuchTopic { topic })) => {
                    tracing::warn!(
                        "the broker does not know the topic {topic:?} (restarted?); creating it again"
                    );
                    create_channel(&self.broker, &self.channel).await?;
                    continue;
                }
                Err(error) if matches!(*error, LinkError::Stopped) => return Ok(None),
                Ok(Err(error)) => MinerError::Refused {
                    action: action(),
                    error,
                },
                // A publish that got no answer in time may have been enqueued all the same:
                // publishing again risks a duplicate, never a loss (at least once).
                Err(error) => MinerError::BrokerLost {
                    action: action(),
                    error,
                },
            };
            let retry = retry.get_or_insert_with(|| self.broker.retry());
            if !again(retry, failure).await? {
                return Ok(None);
            }
        }
    }
}

/// Creates the miner's topic (idempotent): at start, and again when a restarted broker has
/// forgotten it. Creating a replicated stream can outlast a call's deadline while a NATS
/// cluster forms, so a creation that failed for now is asked for again ([`BrokerLink::ask`]).
async fn create_channel(broker: &BrokerLink, channel: &ChannelRequest) -> Result<(), MinerError> {
    let action = || format!("create the topic {:?}", channel.topic);
    let created = broker
        .ask(&action, channel, |client, channel| async move {
            client
                .create_channel(tarpc::context::current(), channel)
                .await
        })
        .await;
    // The publishers see the stop too, and end.
    if created.ended == Some(Ended::Stopped) {
        return Ok(());
    }
    match created.answer {
        Ok(Ok(report)) => {
            tracing::info!("{}", report.message);
            Ok(())
        }
        Err(LinkError::Stopped) => Ok(()),
        Ok(Err(error)) => Err(MinerError::Refused {
            action: action(),
            error,
        }),
        Err(error) => Err(MinerError::BrokerLost {
            action: action(),
            error: Arc::new(error),
        }),
    }
}

/// After a try that failed with `failure`: when it failed for now (the broker's store, or no
/// answer in time) and `retry` allows another, waits for it and says true; false when the
/// miner is stopping meanwhile. Otherwise the failure stands.
async fn again(retry: &mut Retry, failure: MinerError) -> Result<bool, MinerError> {
    let Some(cause) = failure.transient_cause() else {
        return Err(failure);
    };
    let waited = retry.wait(|pause| {
        tracing::warn!("{cause}; trying again in {}", lab_console::Rounded(pause));
    });
    match waited.await {
        Ok(()) => Ok(true),
        Err(Ended::Stopped) => Ok(false),
        Err(Ended::GaveUp) => Err(failure),
    }
}
