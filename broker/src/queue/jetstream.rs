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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use futures::StreamExt;
use stubs::{DeadLetter, DeadLetters, Job, JobError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::compact::{from_record, to_record, QueuedJob};
use super::{Delivery, JobId, JobStore, QueueError, StreamFigures, TopicCreation, TopicStats};

/// The one durable consumer all brokers share on each topic.
const CONSUMER: &str = "pairbroker";
/// The stream that keeps dead letters, a subject per topic. Not `pairbroker-…`, the prefix of
/// the topics' streams, so that no topic's stream can have its name.
const DEAD_LETTERS: &str = "pairbroker_dead_letters";
/// How long one pull request for a job waits at the server.
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// How many jobs a pull asks for beyond the takes waiting.
const LOOKAHEAD: usize = 32;
/// The most jobs one pull request asks for.
const MOST_IN_ONE_PULL: usize = 256;
/// The pause between two tries of a cluster that a starting broker cannot reach, or that is
/// not ready (electing its leaders): short, since clients are told to wait meanwhile.
const READY_RETRY: Duration = Duration::from_secs(1);
/// How long one try waits for JetStream's answer at start. A cluster still electing its
/// leaders may leave a request unanswered, and the client's own request timeout (10 s) per try
/// would keep the broker waiting that long after the cluster is ready.
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one try waits for a NATS server to take the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Jobs held by this broker for its next takes, first first, with the attempts they had when
/// this broker holds them for a reason JetStream did not see (`None`: JetStream's count holds).
type PutBack = Arc<Mutex<std::collections::VecDeque<Held>>>;

/// A job this broker holds for its next take: the message, the attempts it had when this
/// broker put it back (`None`: JetStream's count holds), and since when it is held.
struct Held {
    message: jetstream::Message,
    attempts: Option<u32>,
    since: Instant,
}

/// A take waiting for its job.
type Taker = oneshot::Sender<Held>;

/// Pulls jobs for the takes waiting, in one pull request for all of them and
/// [`LOOKAHEAD`] more (up to [`MOST_IN_ONE_PULL`]). A job with no take waiting for it (a take
/// dropped before its job came, or the lookahead) is held in this broker for the next take, at
/// most half its ack wait; it is never lost: unacknowledged, JetStream delivers it again. Jobs
/// held go to takes before any pull, and to a take that comes while a pull is under way.
async fn pull_for_takers(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    mut takers: mpsc::UnboundedReceiver<Taker>,
    put_back: PutBack,
) {
    let mut waiting = std::collections::VecDeque::new();
    loop {
        if waiting.is_empty() {
            match takers.recv().await {
                Some(taker) => waiting.push_back(taker),
                None => return,
            }
        }
        while let Ok(taker) = takers.try_recv() {
            waiting.push_back(taker);
        }
        serve_held(&mut waiting, &put_back);
        if waiting.is_empty() {
            continue;
        }
        // A few more than the takes waiting: a dispatcher fills its batch with the takes that
        // are ready at once, and these are.
        let pulled = consumer
            .batch()
            .max_messages((waiting.len() + LOOKAHEAD).min(MOST_IN_ONE_PULL))
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!("cannot pull from JetStream ({error}); trying again");
                tokio::time::sleep(PULL_EXPIRES).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                message = batch.next() => match message {
                    Some(Ok(message)) => {
                        let held = Held { message, attempts: None, since: Instant::now() };
                        hand_over(held, &mut waiting, &put_back);
                    }
                    Some(Err(error)) => {
                        tracing::debug!("a pull request ended early: {error}");
                        tokio::time::sleep(FULL_RETRY).await;
                        break;
                    }
                    None => break,
                },
                taker = takers.recv() => match taker {
                    Some(taker) => {
                        waiting.push_back(taker);
                        serve_held(&mut waiting, &put_back);
                    }
                    None => return,
                },
            }
        }
    }
}

/// Gives the jobs held here to the takes waiting, first first.
fn serve_held(waiting: &mut std::collections::VecDeque<Taker>, put_back: &PutBack) {
    waiting.retain(|taker| !taker.is_closed());
    while !waiting.is_empty() {
        let Some(held) = lock(put_back).pop_front() else {
            return;
        };
        hand_over(held, waiting, put_back);
    }
}

/// Gives `held` to the first take still waiting, or holds it here for the next take.
fn hand_over(held: Held, waiting: &mut std::collections::VecDeque<Taker>, put_back: &PutBack) {
    let mut held = held;
    while let Some(taker) = waiting.pop_front() {
        match taker.send(held) {
            Ok(()) => return,
            Err(returned) => held = returned,
        }
    }
    // No take waits (a pull asks for more, or a take was dropped): the job waits here for the
    // next take, behind those held before it.
    lock(put_back).push_back(held);
}

struct Topic {
    name: Arc<str>,
    capacity: usize,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// Jobs taken through this broker and not yet settled, with the message to settle.
    in_flight: Mutex<HashMap<JobId, jetstream::Message>>,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn storage(error: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(error.to_string())
}

/// A topic's name as a stream name and subject token: `_` doubled and `.` (allowed in topic
/// names, not in stream names) written `_d`, so that distinct topics stay distinct.
fn escaped(topic: &str) -> String {
    topic.replace('_', "__").replace('.', "_d")
}

fn unescaped(name: &str) -> String {
    let mut topic = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match (c, c == '_') {
            (_, true) => match chars.next() {
                Some('d') => topic.push('.'),
                _ => topic.push('_'),
            },
            (c, false) => topic.push(c),
        }
    }
    topic
}

fn stream_name(topic: &str) -> String {
    format!("pairbroker-{}", escaped(topic))
}

impl JetStreamStore {
    /// Connects to the cluster and makes sure the dead-letter stream exists. A cluster not
    /// reachable yet, or not ready (electing its leaders), is waited for, a line logged per
    /// try, for as long as it takes: the caller stops waiting by dropping the future. What
    /// waiting would not mend (a host name that does not resolve, credentials refused) is an
    /// error at once.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, JetStreamError> {
        let servers = config.servers.join(",");
        let failed = |reason: &dyn std::fmt::Display| JetStreamError {
            servers: servers.clone(),
            reason: reason.to_string(),
        };
        let waiting = |reason: &dyn std::fmt::Display| {
            tracing::warn!(
                "waiting for JetStream at {servers}: {reason}; trying again in {}",
                transport::words::Rounded(READY_RETRY)
            );
        };
        let client = loop {
            let connected = async_nats::ConnectOptions::new()
                .connection_timeout(CONNECT_TIMEOUT)
                .connect(config.servers.as_slice())
                .await;
            match connected {
                Ok(client) => break client,
                Err(error) if may_connect_yet(&error) => waiting(&error),
                Err(error) => return Err(failed(&error)),
            }
            tokio::time::sleep(READY_RETRY).await;
        };
        let version = client.server_info().version;
        if !is_trusted_version(&version) {
            tracing::warn!(
                "nats-server {version} is older than {}.{}: 2.9.10 was seen acknowledging publishes to a full \
                 replicated stream with wrong sequences, losing jobs; 2.15.1 passes our fault test",
                TRUSTED_VERSION.0,
                TRUSTED_VERSION.1
            );
        }
        let js = jetstream::new(client.clone());
        let dead_letters = stream::Config {
            name: DEAD_LETTERS.into(),
            subjects: vec![format!("{DEAD_LETTERS}.>")],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_messages_per_subject: config.dead_letter_limit.max(1) as i64,
            ..Default::default()
        };
        // The dead-letter stream answering is the sign that JetStream is ready. A cluster that
        // lost a node a moment ago may take seconds to elect its leaders: the broker waits.
        loop {
            let probe = js.get_or_create_stream(dead_letters.clone());
            match tokio::time::timeout(READY_PROBE_TIMEOUT, probe).await {
                Ok(Ok(_)) => break,
                Ok(Err(error)) if is_transient(&error) => waiting(&error),
                Ok(Err(error)) => return Err(failed(&error)),
                Err(_) => waiting(&format_args!(
                    "no answer within {}",
                    transport::words::Rounded(READY_PROBE_TIMEOUT)
                )),
            }
            tokio::time::sleep(READY_RETRY).await;
        }
        Ok(Self {
            client,
            js,
            config,
            topics: RwLock::default(),
            #[cfg(test)]
            server: None,
        })
    }

    /// The topic, from this broker's memory or from the cluster (another broker made it).
    async fn topic(&self, name: &str) -> Result<Arc<Topic>, QueueError> {
        if let Some(topic) = self
            .topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
        {
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
            subject: format!("pairbroker.{}", escaped(name)),
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
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
        lock(&topic.in_flight).insert(id, message);
        Some(delivery)
    }

    /// The in-flight message of `delivery`, taken out: it is settled once.
    fn settle(topic: &Topic, delivery: &Delivery) -> Result<jetstream::Message, QueueError> {
        lock(&topic.in_flight)
            .remove(&delivery.id)
            .ok_or_else(|| QueueError::NotInFlight {
                topic: delivery.topic.to_string(),
                id: delivery.id,
            })
    }
}

/// Settles `message` as `kind` and waits until the server has taken it, so that the figures
/// read next count it.
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

/// The oldest nats-server release not known to lose jobs: 2.9.10 (Debian bookworm's) answers
/// some publishes to a full replicated stream with another job's sequence, and stores not all
/// of those it acknowledged (`tests/tests/cluster_faults.rs` found it; 2.15.1 passes).
const TRUSTED_VERSION: (u64, u64) = (2, 10);

/// Whether `version` (`2.15.1`) is [`TRUSTED_VERSION`] or later.
fn is_trusted_version(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= TRUSTED_VERSION,
        _ => false,
    }
}

/// Whether connecting to NATS failed for a while only: no server taking connections yet. A
/// host name that does not resolve, or credentials or TLS refused, will not mend by waiting.
fn may_connect_yet(error: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    matches!(
        error.kind(),
        Kind::Io | Kind::TimedOut | Kind::MaxReconnects
    )
}

/// Whether creating a stream failed for a while only: no answer in time, or a cluster still
/// electing its leaders.
fn is_transient(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    use jetstream::ErrorCode;
    match error.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(error) => [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::CLUSTER_NOT_ACTIVE,
            ErrorCode::CLUSTER_NOT_LEADER,
            ErrorCode::CLUSTER_NOT_ASSIGNED,
        ]
        .contains(&error.error_code()),
        _ => false,
    }
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
            subjects: vec![format!("pairbroker.{}", escaped(topic))],
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
        let record = to_record(&QueuedJob {
            id: 0,
            job,
            attempts: 0,
            published_at: SystemTime::now(),
        });
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
            let record = to_record(&QueuedJob {
                id: 0,
                job: *job,
                attempts: 0,
                published_at: now,
            });
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
            let held_here = lock(&topic.put_back).pop_front();
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
        let message = Self::settle(&topic, delivery)?;
        // Confirmed by the server, so that the figures read next count it.
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
        let message = Self::settle(&topic, delivery)?;
        let undeliverable = matches!(error, JobError::Undeliverable { .. });
        let letter = DeadLetter {
            job_id: delivery.id,
            job: delivery.job,
            error,
            factory: factory.to_owned(),
            failed_at_unix_ms: super::unix_ms_now(),
        };
        let letter = serde_json::to_vec(&letter).map_err(storage)?;
        self.js
            .publish(
                format!("{DEAD_LETTERS}.{}", escaped(&topic.name)),
                letter.into(),
            )
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
        let subject = format!("{DEAD_LETTERS}.{}", escaped(&topic.name));
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
                if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&message.payload) {
                    letters.push(letter);
                }
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
        let messages = {
            let mut in_flight = lock(&topic.in_flight);
            if let Some(missing) = deliveries.iter().find(|delivery| {
                *delivery.topic != *topic.name || !in_flight.contains_key(&delivery.id)
            }) {
                return Err(QueueError::NotInFlight {
                    topic: missing.topic.to_string(),
                    id: missing.id,
                });
            }
            deliveries
                .iter()
                .filter_map(|delivery| {
                    let message = in_flight.remove(&delivery.id)?;
                    Some((message, Some(delivery.attempt)))
                })
                .collect::<Vec<_>>()
        };
        for (message, _) in &messages {
            // The job stays this broker's for another ack wait.
            message.ack_with(AckKind::Progress).await.map_err(storage)?;
        }
        topic
            .requeued
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let mut put_back = lock(&topic.put_back);
        let since = Instant::now();
        for (message, attempts) in messages.into_iter().rev() {
            put_back.push_front(Held {
                message,
                attempts,
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
                Ok(name) => names.extend(name.strip_prefix("pairbroker-").map(unescaped)),
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

    async fn stats(&self, topic: &str) -> Result<TopicStats, QueueError> {
        let topic = self.topic(topic).await?;
        let mut consumer = topic.consumer.clone();
        let info = consumer.info().await.map_err(storage)?;
        let stream_name = stream_name(&topic.name);
        let stream = self.js.get_stream(&stream_name).await.map_err(storage)?;
        let stream = stream.cached_info();
        // Jobs put back here are unacknowledged at the server, but ready.
        let put_back = lock(&topic.put_back).len();
        let cluster = stream.cluster.clone().unwrap_or_default();
        let figures = StreamFigures {
            stream: stream_name,
            leader: cluster.leader.clone(),
            replicas: stream.config.num_replicas.max(1),
            current_replicas: usize::from(cluster.leader.is_some())
                + cluster
                    .replicas
                    .iter()
                    .filter(|peer| peer.current && !peer.offline)
                    .count(),
            messages: stream.state.messages,
            last_sequence: stream.state.last_sequence,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
            waiting_pulls: info.num_waiting as u64,
        };
        Ok(TopicStats {
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
            jetstream: Some(figures),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nats_harness::NatsServer;

    /// A store on a nats-server of its own.
    pub(crate) async fn scratch_store() -> JetStreamStore {
        let server = NatsServer::start();
        let mut store = JetStreamStore::connect(JetStreamConfig {
            servers: vec![server.url.clone()],
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            dead_letter_limit: 10,
        })
        .await
        .unwrap();
        store.server = Some(server);
        store
    }

    #[tokio::test]
    async fn topics_are_listed_by_their_names_and_dead_letters_are_read_back() {
        let store = scratch_store().await;
        for topic in ["dead_letters", "dead-letters", "a.b"] {
            store.create_topic(topic, 5).await.unwrap();
        }
        assert_eq!(
            store.topic_names().await,
            vec!["a.b", "dead-letters", "dead_letters"]
        );
        let later = Instant::now() + Duration::from_secs(60);
        let job: Job = stubs::Pair { x: 4, y: 0 }.into();
        let id = store.publish("a.b", job, later).await.unwrap();
        let delivery = store.take("a.b").await.unwrap();
        store
            .dead_letter(&delivery, JobError::DivideByZero, "127.0.0.1:9")
            .await
            .unwrap();
        let dead = store.dead_letters("a.b").await.unwrap();
        assert_eq!(dead.letters.len(), 1);
        assert_eq!(
            (dead.letters[0].job_id, dead.letters[0].job, dead.total),
            (id, job, 1)
        );
        assert!(store
            .dead_letters("dead-letters")
            .await
            .unwrap()
            .letters
            .is_empty());
    }

    #[test]
    fn servers_older_than_two_ten_are_not_trusted() {
        for version in ["2.10.0", "2.15.1", "v2.11.3", "3.0.0", "2.12.0-beta.1"] {
            assert!(is_trusted_version(version), "{version}");
        }
        for version in ["2.9.10", "2.2.0", "1.4.1", "", "two", "2"] {
            assert!(!is_trusted_version(version), "{version}");
        }
    }

    #[test]
    fn topic_names_survive_their_escaping() {
        for topic in ["multiply", "a.b", "a_b", "a_d", "a._d_", "__"] {
            assert!(!escaped(topic).contains('.'), "{topic}");
            assert_eq!(unescaped(&escaped(topic)), topic);
        }
        assert_ne!(escaped("a.b"), escaped("a_db"));
    }
}
