//! [`TopicLink`]: the miner's way to its topic, shared by the random jobs and the chosen ones.
//! It creates the topic (again when a restarted broker has forgotten it) and publishes each job
//! until the broker stores it, so that both kinds of job follow one retry policy.

use std::sync::Arc;
use std::time::Duration;

use stubs::{BrokerError, ChannelRequest, Job};
use tarpc::client::RpcError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{BrokerLink, LinkConfig, LinkError};

use crate::batching::Batcher;
use crate::MinerError;

/// How long the miner waits before asking again for what the broker could not store, at
/// first; doubled at each refusal up to [`STORAGE_RETRY_MAX`].
const STORAGE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of what the broker could not store.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// A topic on a broker, created and ready for jobs.
pub(crate) struct TopicLink {
    broker: Arc<BrokerLink>,
    batcher: Batcher,
    channel: ChannelRequest,
}

impl TopicLink {
    /// Connects to the broker, creates `topic` with `buffer` and starts the batcher that
    /// carries the jobs. The batcher's task ends once the link is dropped and its batches are
    /// answered.
    pub(crate) async fn open(
        link: &LinkConfig,
        topic: &str,
        buffer: u32,
        shutdown: &CancellationToken,
    ) -> Result<(Self, JoinHandle<()>), MinerError> {
        let broker = BrokerLink::connect(link)
            .await
            .map_err(MinerError::BrokerUnreachable)?;
        let channel = ChannelRequest {
            topic: topic.to_owned(),
            buffer,
        };
        create_channel(&broker, &channel, shutdown).await?;
        let (batcher, batcher_task) = Batcher::spawn(broker.clone(), channel.topic.clone());
        let topic = Self {
            broker,
            batcher,
            channel,
        };
        Ok((topic, batcher_task))
    }

    /// The topic's name.
    pub(crate) fn name(&self) -> &str {
        &self.channel.topic
    }

    /// Publishes one job, waiting as long as the topic stays full: back-pressure, as a send
    /// on a full Go channel blocks. A lost broker is reconnected and the job published again.
    ///
    /// Once shutdown is signalled, the publish in flight is let finish (so that every job the
    /// broker accepted is reported) but not tried again: `None`, the job was not published.
    pub(crate) async fn publish(
        &self,
        job: Job,
        shutdown: &CancellationToken,
    ) -> Result<Option<u64>, MinerError> {
        let action = || format!("publish to {:?}", self.channel.topic);
        let mut storage_backoff = STORAGE_RETRY_FIRST;
        loop {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            match self.batcher.publish(job).await {
                Ok(Ok(job_id)) => return Ok(Some(job_id)),
                // The broker's store failed for now (a NATS node gone, its disk full): the job
                // was not acknowledged, so it is published again once the store may be back.
                Ok(Err(BrokerError::StorageFailed { reason })) => {
                    tracing::warn!(
                        "the broker could not store the job ({reason}); publishing it again in {}",
                        lab_console::Rounded(storage_backoff)
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(storage_backoff) => {}
                    }
                    storage_backoff = (storage_backoff * 2).min(STORAGE_RETRY_MAX);
                }
                Ok(Err(BrokerError::TopicFull { topic, capacity })) => {
                    tracing::info!(
                        "the topic {topic:?} is full ({capacity} jobs); still waiting for room"
                    );
                }
                Ok(Err(BrokerError::NoSuchTopic { topic })) => {
                    tracing::warn!(
                        "the broker does not know the topic {topic:?} (restarted?); creating it again"
                    );
                    create_channel(&self.broker, &self.channel, shutdown).await?;
                }
                // The broker may have enqueued the job and answered late: publishing again
                // risks a duplicate, never a loss (at least once).
                Err(error) if matches!(*error, LinkError::Rpc(RpcError::DeadlineExceeded)) => {
                    tracing::warn!("the publish got no answer in time; publishing again");
                }
                Ok(Err(error)) => {
                    return Err(MinerError::Refused {
                        action: action(),
                        error,
                    })
                }
                Err(error) => {
                    return Err(MinerError::BrokerLost {
                        action: action(),
                        error,
                    })
                }
            }
        }
    }
}

/// Creates the miner's topic (idempotent): at start, and again when a restarted broker has
/// forgotten it. A topic the broker could not store is asked for again until `shutdown`.
async fn create_channel(
    broker: &BrokerLink,
    channel: &ChannelRequest,
    shutdown: &CancellationToken,
) -> Result<(), MinerError> {
    let action = || format!("create the topic {:?}", channel.topic);
    let mut storage_backoff = STORAGE_RETRY_FIRST;
    loop {
        let created = broker
            .call(|client| {
                let request = channel.clone();
                async move {
                    client
                        .create_channel(tarpc::context::current(), request)
                        .await
                }
            })
            .await;
        return match created {
            Ok(Ok(report)) => {
                tracing::info!("{}", report.message);
                Ok(())
            }
            Ok(Err(BrokerError::StorageFailed { reason })) => {
                tracing::warn!(
                    "the broker could not store the topic ({reason}); trying again in {}",
                    lab_console::Rounded(storage_backoff)
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(storage_backoff) => {}
                }
                storage_backoff = (storage_backoff * 2).min(STORAGE_RETRY_MAX);
                continue;
            }
            // Creating a replicated stream can outlast a call's deadline while a NATS cluster
            // forms; creating a topic is idempotent, so it is asked again.
            Err(LinkError::Rpc(RpcError::DeadlineExceeded)) => {
                tracing::warn!(
                    "the broker did not answer in time while creating the topic {:?}; asking \
                     again in {}",
                    channel.topic,
                    lab_console::Rounded(storage_backoff)
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(storage_backoff) => {}
                }
                storage_backoff = (storage_backoff * 2).min(STORAGE_RETRY_MAX);
                continue;
            }
            Ok(Err(error)) => Err(MinerError::Refused {
                action: action(),
                error,
            }),
            Err(error) => Err(MinerError::BrokerLost {
                action: action(),
                error: Arc::new(error),
            }),
        };
    }
}
