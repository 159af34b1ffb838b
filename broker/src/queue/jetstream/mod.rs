//! [`JetStreamStore`]: topics kept in a NATS JetStream cluster (`--store nats://HOST:PORT,...`),
//! for brokers that share their topics.
//!
//! Each topic is a stream with work-queue retention (a message leaves it once acknowledged),
//! file storage, `replicas` copies (NATS's own Raft keeps them), and room for `capacity`
//! messages with discard-new: a publish to a full stream is refused by the server, and the
//! store tries again until the publisher's deadline. All brokers share one durable pull
//! consumer per topic, so each job goes to one of them; a job is acknowledged once completed,
//! nak'ed for redelivery when its call failed, and terminated (and copied to the dead-letter
//! stream) on a job error. The consumer's ack wait is the broker's call timeout: the jobs in
//! flight on a broker that dies are delivered again through the others.
//!
//! Differences from the other stores, all JetStream's: a job in flight still counts towards
//! its topic's capacity (it stays in the stream until acknowledged), and a job put back is
//! redelivered first as JetStream sees fit, not strictly at the head.

mod connect;
mod names;
mod puller;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use stubs::{DeadLetter, DeadLetters, JetStreamReport, Job, JobError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::codec::{dead_letter_from, dead_letter_record, from_record, to_record, QueuedJob};
use super::dead_letters::letter;
use super::in_flight::InFlight;
use super::{Delivery, JobId, JobStore, QueueError, TopicCounts, TopicCreation};
use names::{dead_letter_subject, stream_name, subject, topic_of_stream, DEAD_LETTERS};
use puller::{pull_for_takers, Held, PutBack, Taker};

/// The one durable consumer all brokers share on each topic.
const CONSUMER: &str = "pairbroker";
/// How long one pull request for a job waits at the server.
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// How long a publish to a full stream waits before it tries again.
const FULL_RETRY: Duration = Duration::from_millis(5);

/// How to reach the cluster and what to ask of it.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// `nats://host:port` of each server to try.
    pub servers: Vec<String>,
    /// Copies of each stream: 1, or 3 on a cluster of three or more.
    pub replicas: usize,
    /// How long a job may stay unacknowledged before JetStream delivers it again.
    pub ack_wait: Duration,
    /// How many dead letters a topic keeps.
    pub dead_letter_limit: usize,
}

/// Why the cluster cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use NATS JetStream at {servers}: {reason}")]
pub struct JetStreamError {
    /// The servers given.
    pub servers: String,
    /// What went wrong.
    pub reason: String,
}

/// Topics in NATS JetStream.
pub struct JetStreamStore {
    client: async_nats::Client,
    js: jetstream::Context,
    config: JetStreamConfig,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// A test's own nats-server, stopped with the store.
    #[cfg(test)]
    server: Option<nats_harness::NatsServer>,
}

impl std::fmt::Debug for JetStreamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore").finish_non_exhaustive()
    }
}

struct Topic {
    name: Arc<str>,
    capacity: usize,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// Jobs taken through this broker and not yet settled, with the message to settle.
    in_flight: Mutex<InFlight<jetstream::Message>>,
    /// Jobs this broker holds for its next takes: those it put back after a failed call, at
    /// the head (JetStream would redeliver a nak'ed job after newer ones; their ack wait is
    /// reset), then those pulled ahead. Still unacknowledged at the server: should this broker
    /// die, they are delivered elsewhere.
    put_back: PutBack,
    /// Takes waiting for a job, served by the topic's puller.
    waiting: mpsc::UnboundedSender<Taker>,
    published: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    requeued: AtomicU64,
    /// Of the `failed`, those given up on as undeliverable.
    undeliverable: AtomicU64,
}

fn storage(error: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(error.to_string())
}

/// A dead letter as the stream keeps it: in the shared encoding, or as JSON, which brokers
/// wrote before they shared it (the two cannot be taken for each other: JSON's first bytes
/// are no valid record).
fn read_dead_letter(payload: &[u8]) -> Option<DeadLetter> {
    dead_letter_from(payload).or_else(|| serde_json::from_slice(payload).ok())
}

impl JetStreamStore {
    /// The topic, from this broker's memory or from the cluster (another broker made it).
    async fn topic(&self, name: &str) -> Result<Arc<Topic>, QueueError> {
        if let Some(topic) = self.topics.read().get(name) {
            return Ok(topic.clone());
        }
        let stream = match self.js.get_stream(stream_name(name)).await {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref inner)
                        if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Err(QueueError::NoSuchTopic(name.to_owned()))
            }
            Err(error) => return Err(storage(error)),
        };
        self.adopt(name, stream).await
    }

    /// Remembers the stream of topic `name`, with its shared consumer.
    async fn adopt(
        &self,
        name: &str,
        mut stream: stream::Stream,
    ) -> Result<Arc<Topic>, QueueError> {
        let info = stream.info().await.map_err(storage)?;
        let capacity = usize::try_from(info.config.max_messages).unwrap_or(usize::MAX);
        let consumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(storage)?;
        let put_back = PutBack::default();
        let (waiting, takers) = mpsc::unbounded_channel();
        tokio::spawn(pull_for_takers(consumer.clone(), takers, put_back.clone()));
        let topic = Arc::new(Topic {
            name: Arc::from(name),
            capacity,
            subject: subject(name),
            consumer,
            in_flight: Mutex::default(),
            put_back: put_back.clone(),
            waiting,
            published: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            requeued: AtomicU64::new(0),
            undeliverable: AtomicU64::new(0),
        });
        let mut topics = self.topics.write();
        Ok(topics.entry(Arc::from(name)).or_insert(topic).clone())
    }

    /// A message as a delivery, now in flight; `None` for one that is not a job of ours, which
    /// is kept aside and never delivered again. A job put back here has had `attempts`, which
    /// JetStream did not all see.
    async fn deliver(
        topic: &Topic,
        message: jetstream::Message,
        attempts: Option<u32>,
    ) -> Option<Delivery> {
        let (id, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered as u32),
            Err(error) => {
                tracing::warn!(
                    "a message of {:?} came without its delivery info ({error}); dropped",
                    topic.name
                );
                let _ = message.ack_with(AckKind::Term).await;
                return None;
            }
        };
        let Some(queued) = from_record(&message.payload) else {
            tracing::warn!("message {id} of {:?} is not a job; dropped", topic.name);
            let _ = message.ack_with(AckKind::Term).await;
            return None;
        };
        let delivery = Delivery {
            topic: topic.name.clone(),
            id,
            job: queued.job,
            attempt: attempts.map_or(delivered, |attempts| attempts.saturating_add(1)),
            published_at: queued.published_at,
        };
        tracing::debug!(
            "delivering job {id} of {:?} ({}), delivery {delivered}",
            topic.name,
            delivery.job
        );
        topic.in_flight.lock().insert(id, message);
        Some(delivery)
    }
}

/// Settles `message` as `kind` and waits until the server has taken it, so that the topic's
/// counts, read next, include it.
async fn confirmed(
    client: &async_nats::Client,
    message: &jetstream::Message,
    kind: AckKind,
) -> Result<(), QueueError> {
    let reply = message
        .reply
        .clone()
        .ok_or_else(|| storage("not a JetStream message"))?;
    client.request(reply, kind.into()).await.map_err(storage)?;
    Ok(())
}

/// Whether a publish was refused because the stream is full.
fn is_full(error: &jetstream::context::PublishError) -> bool {
    // JetStream's discard-new refusal: "maximum messages exceeded" (async-nats gives it no kind).
    error.to_string().contains("maximum messages exceeded")
}

impl JobStore for JetStreamStore {
    async fn create_topic(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<TopicCreation, QueueError> {
        if let Ok(existing) = self.topic(topic).await {
            return Ok(TopicCreation::Existing {
                capacity: existing.capacity,
            });
        }
        let config = stream::Config {
            name: stream_name(topic),
            subjects: vec![subject(topic)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            max_messages: i64::try_from(capacity).unwrap_or(i64::MAX),
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        // Another broker may create it at the same moment: the one stream both get is the
        // first one's (JetStream refuses the second's different settings; it is found then).
        let stream = match self.js.get_or_create_stream(config).await {
            Ok(stream) => stream,
            Err(error) => {
                return match self.topic(topic).await {
                    Ok(existing) => Ok(TopicCreation::Existing {
                        capacity: existing.capacity,
                    }),
                    Err(_) => Err(storage(error)),
                }
            }
        };
        let created = self.adopt(topic, stream).await?;
        Ok(if created.capacity == capacity {
            TopicCreation::Created
        } else {
            TopicCreation::Existing {
                capacity: created.capacity,
            }
        })
    }

    async fn has_topic(&self, topic: &str) -> bool {
        self.topic(topic).await.is_ok()
    }

    async fn publish(&self, topic: &str, job: Job, room_by: Instant) -> Result<JobId, QueueError> {
        let topic = self.topic(topic).await?;
        let record = to_record(&QueuedJob::new(0, job, SystemTime::now()));
        loop {
            let acknowledged = async {
                self.js
                    .publish(topic.subject.clone(), record.clone().into())
                    .await?
                    .await
            };
            match acknowledged.await {
                Ok(ack) => {
                    topic.published.fetch_add(1, Ordering::Relaxed);
                    return Ok(ack.sequence);
                }
                Err(error) if is_full(&error) => {
                    let now = Instant::now();
                    if now >= room_by {
                        return Err(QueueError::Full {
                            topic: topic.name.to_string(),
                            capacity: topic.capacity,
                        });
                    }
                    // Once more at the deadline itself, then no more.
                    tokio::time::sleep_until(room_by.min(now + FULL_RETRY)).await;
                }
                Err(error) => return Err(storage(error)),
            }
        }
    }

    /// Sends every job before waiting for the first acknowledgement: JetStream replicates them
    /// together. A job refused for want of room is published again as [`JobStore::publish`]
    /// does; if one is refused for good, the jobs after it are reported unpublished even if
    /// JetStream stored some of them (they would be delivered twice, never lost).
    async fn publish_many(
        &self,
        topic: &str,
        jobs: Vec<Job>,
        room_by: Instant,
    ) -> (Vec<JobId>, Option<QueueError>) {
        let topic_name = topic;
        let topic = match self.topic(topic).await {
            Ok(topic) => topic,
            Err(error) => return (Vec::new(), Some(error)),
        };
        let now = SystemTime::now();
        let mut pending = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let record = to_record(&QueuedJob::new(0, *job, now));
            match self.js.publish(topic.subject.clone(), record.into()).await {
                Ok(acknowledgement) => pending.push(acknowledgement),
                Err(error) => {
                    tracing::debug!(
                        "a publish was not sent ({error}); the jobs after it go one by one"
                    );
                    break;
                }
            }
        }
        let mut ids = Vec::with_capacity(jobs.len());
        let mut sent = pending.into_iter();
        for job in jobs {
            let stored = match sent.next() {
                Some(acknowledgement) => match acknowledgement.await {
                    Ok(ack) => {
                        topic.published.fetch_add(1, Ordering::Relaxed);
                        Ok(ack.sequence)
                    }
                    Err(error) if is_full(&error) => self.publish(topic_name, job, room_by).await,
                    Err(error) => Err(storage(error)),
                },
                None => self.publish(topic_name, job, room_by).await,
            };
            match stored {
                Ok(id) => ids.push(id),
                Err(error) => return (ids, Some(error)),
            }
        }
        (ids, None)
    }

    async fn take(&self, topic: &str) -> Result<Delivery, QueueError> {
        let topic = self.topic(topic).await?;
        let stopped = || storage("the topic's puller has stopped");
        loop {
            let held_here = topic.put_back.lock().pop_front();
            let held = match held_here {
                Some(held) => held,
                None => {
                    // Cancel-safe: dropped before its job comes, this take leaves the job to
                    // the next.
                    let (taker, job) = oneshot::channel();
                    topic.waiting.send(taker).map_err(|_| stopped())?;
                    job.await.map_err(|_| stopped())?
                }
            };
            // Held past half its ack wait, it may be given to another broker before its factory
            // is done: it goes back to JetStream now instead, for whoever takes next.
            if held.since.elapsed() > self.config.ack_wait / 2 {
                let _ = held.message.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            if let Some(delivery) = Self::deliver(&topic, held.message, held.attempts).await {
                return Ok(delivery);
            }
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let topic = self.topic(&delivery.topic).await?;
        let message = topic.in_flight.lock().settle(delivery)?;
        // Confirmed by the server, so that the topic's counts, read next, include it.
        message.double_ack().await.map_err(storage)?;
        topic.completed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<(), QueueError> {
        let topic = self.topic(&delivery.topic).await?;
        let message = topic.in_flight.lock().settle(delivery)?;
        let undeliverable = matches!(error, JobError::Undeliverable { .. });
        let letter = dead_letter_record(&letter(delivery.id, delivery.job, error, factory));
        self.js
            .publish(dead_letter_subject(&topic.name), letter.into())
            .await
            .map_err(storage)?
            .await
            .map_err(storage)?;
        confirmed(&self.client, &message, AckKind::Term).await?;
        topic.failed.fetch_add(1, Ordering::Relaxed);
        if undeliverable {
            topic.undeliverable.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn dead_letters(&self, topic: &str) -> Result<DeadLetters, QueueError> {
        let topic = self.topic(topic).await?;
        let subject = dead_letter_subject(&topic.name);
        let stream = self.js.get_stream(DEAD_LETTERS).await.map_err(storage)?;
        let reader = stream
            .create_consumer(pull::Config {
                filter_subject: subject,
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .map_err(storage)?;
        let pending = reader.cached_info().num_pending as usize;
        let mut letters = Vec::with_capacity(pending);
        if pending > 0 {
            let mut batch = reader
                .fetch()
                .max_messages(pending)
                .messages()
                .await
                .map_err(storage)?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(storage)?;
                letters.extend(read_dead_letter(&message.payload));
            }
        }
        let total = topic
            .failed
            .load(Ordering::Relaxed)
            .max(letters.len() as u64);
        Ok(DeadLetters {
            dropped: total.saturating_sub(letters.len() as u64),
            total,
            letters,
        })
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.requeue_all(std::slice::from_ref(delivery)).await
    }

    async fn requeue_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let Some(first) = deliveries.first() else {
            return Ok(());
        };
        let topic = self.topic(&first.topic).await?;
        let messages = topic.in_flight.lock().settle_all(&topic.name, deliveries)?;
        for (_, message) in &messages {
            // The job stays this broker's for another ack wait.
            message.ack_with(AckKind::Progress).await.map_err(storage)?;
        }
        topic
            .requeued
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let mut put_back = topic.put_back.lock();
        let since = Instant::now();
        for (delivery, message) in messages.into_iter().rev() {
            put_back.push_front(Held {
                message,
                attempts: Some(delivery.attempt),
                since,
            });
        }
        Ok(())
    }

    async fn topic_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut listing = self.js.stream_names();
        while let Some(name) = listing.next().await {
            match name {
                Ok(name) => names.extend(topic_of_stream(&name)),
                // The listing asks again after an error, and would for ever: what it has will do.
                Err(error) => {
                    tracing::warn!(
                        "cannot list every topic ({error}); listed {} of them",
                        names.len()
                    );
                    break;
                }
            }
        }
        names.sort();
        names
    }

    async fn counts(&self, topic: &str) -> Result<TopicCounts, QueueError> {
        let topic = self.topic(topic).await?;
        let mut consumer = topic.consumer.clone();
        let info = consumer.info().await.map_err(storage)?;
        let stream_name = stream_name(&topic.name);
        let stream = self.js.get_stream(&stream_name).await.map_err(storage)?;
        let stream = stream.cached_info();
        // Jobs put back here are unacknowledged at the server, but ready.
        let put_back = topic.put_back.lock().len();
        let cluster = stream.cluster.clone().unwrap_or_default();
        let current_replicas = usize::from(cluster.leader.is_some())
            + cluster
                .replicas
                .iter()
                .filter(|peer| peer.current && !peer.offline)
                .count();
        let report = JetStreamReport {
            stream: stream_name,
            leader: cluster.leader.clone(),
            replicas: stream.config.num_replicas.max(1) as u64,
            current_replicas: current_replicas as u64,
            messages: stream.state.messages,
            last_sequence: stream.state.last_sequence,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting_pulls: info.num_waiting as u64,
        };
        Ok(TopicCounts {
            capacity: topic.capacity,
            ready: usize::try_from(info.num_pending)
                .unwrap_or(usize::MAX)
                .saturating_add(put_back),
            in_flight: info.num_ack_pending.saturating_sub(put_back),
            published: topic.published.load(Ordering::Relaxed),
            completed: topic.completed.load(Ordering::Relaxed),
            failed: topic.failed.load(Ordering::Relaxed),
            requeued: topic.requeued.load(Ordering::Relaxed),
            undeliverable: topic.undeliverable.load(Ordering::Relaxed),
            dead: 0,
            jetstream: Some(report),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
