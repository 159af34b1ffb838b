//! The contract between the broker, the miners and the factories, and nothing else.
//!
//! - [`Pair`], [`Triplet`] and [`Job`]: the work a miner publishes.
//! - The request and reply messages of the lab: [`ChannelRequest`], [`PublishRequest`],
//!   [`Subscription`], [`JobReport`], [`StatusReport`].
//! - Typed failures: [`BrokerError`] for requests to the broker, [`JobError`] for a job a factory
//!   cannot compute. They travel inside the RPC reply as `Result<T, E>`, apart from tarpc's own
//!   transport errors, because they mean different things: a job error means "do not retry", a
//!   transport error means "put the job back".
//! - The two tarpc services, [`Broker`] and [`Factory`], and the callback names of the lab.
#![deny(missing_docs)]

mod callback;
pub use callback::Callback;

use serde::{Deserialize, Serialize};
use std::fmt;

/// The callback name under which a factory serves [`Factory::multiply`].
pub const MULTIPLY: &str = "Factory.Multiply";
/// The callback name under which a factory serves [`Factory::divide`].
pub const DIVIDE: &str = "Factory.Divide";
/// The topic that multiply jobs are published to by the lab's programs.
pub const MULTIPLY_TOPIC: &str = "multiply";
/// The topic that divide jobs are published to by the lab's programs.
pub const DIVIDE_TOPIC: &str = "divide";
/// How many calls a subscription keeps in flight when the factory does not say: one, as in the lab.
pub const DEFAULT_PREFETCH: u32 = 1;
/// The most jobs one `publish_batch` carries.
pub const MAX_PUBLISH_BATCH: usize = 1_024;

/// Two integers: the lab's original job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pair {
    /// The first operand.
    pub x: i64,
    /// The second operand.
    pub y: i64,
}

/// Three integers: the job of Part 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Triplet {
    /// The first operand.
    pub x: i64,
    /// The second operand.
    pub y: i64,
    /// The third operand.
    pub z: i64,
}

/// One unit of work. Both shapes flow through the same topics and procedures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Job {
    /// Two operands.
    Pair(Pair),
    /// Three operands.
    Triplet(Triplet),
}

impl From<Pair> for Job {
    fn from(pair: Pair) -> Self {
        Job::Pair(pair)
    }
}

impl From<Triplet> for Job {
    fn from(triplet: Triplet) -> Self {
        Job::Triplet(triplet)
    }
}

/// Formats the operands as the broker prints them: `12 and 34`, or `1, 2 and 3`.
impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Pair(Pair { x, y }) => write!(f, "{x} and {y}"),
            Job::Triplet(Triplet { x, y, z }) => write!(f, "{x}, {y} and {z}"),
        }
    }
}

/// Asks the broker for a topic that holds up to `buffer` ready jobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRequest {
    /// The topic's name.
    pub topic: String,
    /// How many ready jobs the topic holds before a publish waits for room.
    pub buffer: u32,
}

/// Asks the broker to append a job to a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The topic to append to.
    pub topic: String,
    /// The job.
    pub job: Job,
}

/// Asks the broker to call `callback` on the factory at `factory_address` with jobs of `topic`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The topic to take jobs from.
    pub topic: String,
    /// Where the factory serves its [`Factory`] service, as `host:port`.
    pub factory_address: String,
    /// Which procedure to call: [`MULTIPLY`] or [`DIVIDE`].
    pub callback: String,
    /// How many jobs the broker keeps in flight to this factory at once (sent in as few calls
    /// as are ready together).
    pub prefetch: u32,
}

/// A factory's answer to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    /// The value computed.
    pub result: i64,
}

/// The broker's answer to a request that changes its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// What the broker did, for a person to read.
    pub message: String,
}

/// The broker's answer to a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The identifier the broker gave the job; it names the job in the broker's output and logs.
    pub job_id: u64,
}

/// Jobs for one topic, published in one call (`publish_batch`), in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBatch {
    /// The topic.
    pub topic: String,
    /// The jobs, at most [`MAX_PUBLISH_BATCH`].
    pub jobs: Vec<Job>,
}

/// The broker's answer to a batch: its first `job_ids.len()` jobs are stored, in order, with
/// these ids; the others are not, because of `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedBatch {
    /// The ids of the jobs stored, one per job from the start of the batch.
    pub job_ids: Vec<u64>,
    /// Why the rest of the batch was not stored (e.g. the topic stayed full); `None` when
    /// every job was.
    pub error: Option<BrokerError>,
}

/// A job that failed with a job error, kept by the broker instead of being retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job's identifier.
    pub job_id: u64,
    /// The job.
    pub job: Job,
    /// What the factory answered, or [`JobError::Undeliverable`] for a job whose calls failed.
    pub error: JobError,
    /// The address of the factory that answered, or whose call failed last.
    pub factory: String,
    /// When the broker received the answer, in milliseconds since the Unix epoch.
    pub failed_at_unix_ms: u64,
}

/// A topic's dead letters: the most recent ones, and how many there were in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetters {
    /// The newest dead letters, oldest first; the oldest are dropped past the broker's limit.
    pub letters: Vec<DeadLetter>,
    /// How many jobs of the topic have failed in all.
    pub total: u64,
    /// How many dead letters were dropped to keep the list within the limit.
    pub dropped: u64,
}

/// What the broker is doing: its topics and subscribers, as the `stats` RPC reports them.
/// Field names are those of `broker stats --json` and `/api/stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Every topic, by name.
    pub topics: Vec<TopicReport>,
    /// Every subscription in force, by topic and address.
    pub subscribers: Vec<SubscriberReport>,
    /// Seconds since the broker started.
    pub uptime_s: u64,
}

/// One topic's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicReport {
    /// The topic's name.
    pub name: String,
    /// Ready jobs it holds before a publish waits.
    pub capacity: u64,
    /// Jobs waiting to be taken.
    pub ready: u64,
    /// Jobs taken and not yet settled.
    pub in_flight: u64,
    /// Jobs ever published.
    pub published: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs dead-lettered: failed with a job error, or undeliverable.
    pub failed: u64,
    /// Times a job was put back after a failed call.
    pub requeued: u64,
    /// Of the `failed` jobs, those dead-lettered because every call that carried them failed
    /// in transport, as many times as the broker's `--max-deliveries` allows.
    pub undeliverable: u64,
    /// Dead letters kept now.
    pub dead: u64,
    /// Subscriptions in force.
    pub subscribers: u64,
    /// Jobs completed per second over the last 10 seconds.
    pub rate_per_s: f64,
    /// Time from publish to completion.
    pub latency_us: Latency,
    /// With `--store nats://…`: the topic's stream as JetStream reports it, for all brokers
    /// together (the figures above are this broker's, but for `ready` and `in_flight`).
    /// `null` for the stores of one broker.
    pub jetstream: Option<JetStreamReport>,
}

/// A topic's stream and its shared consumer as JetStream reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JetStreamReport {
    /// The stream's name.
    pub stream: String,
    /// The NATS server that leads the stream now, if one does.
    pub leader: Option<String>,
    /// Copies of the stream asked for.
    pub replicas: u64,
    /// Copies up to date now, the leader's included.
    pub current_replicas: u64,
    /// Jobs in the stream: waiting, or in flight on any broker.
    pub messages: u64,
    /// The last job's sequence: jobs ever published through any broker.
    pub last_sequence: u64,
    /// Jobs not yet delivered to any broker.
    pub pending: u64,
    /// Jobs delivered to a broker and not yet acknowledged.
    pub ack_pending: u64,
    /// Of those, jobs delivered more than once.
    pub redelivered: u64,
    /// Pull requests waiting at the server, from all brokers.
    pub waiting_pulls: u64,
}

/// Percentiles of a latency, in microseconds; zero before the first completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// The median.
    pub p50: u64,
    /// The 99th percentile.
    pub p99: u64,
}

/// How the broker reaches a factory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// pairbroker's own RPC, the [`Factory`] service (`tarpc` in JSON).
    #[default]
    Tarpc,
    /// Go's net/rpc with its gob codec, as the Go lab's factories serve (`go-net-rpc`).
    GoNetRpc,
}

impl Protocol {
    /// The name in `broker stats`, JSON and /metrics: `tarpc` or `go-net-rpc`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tarpc => "tarpc",
            Protocol::GoNetRpc => "go-net-rpc",
        }
    }
}

/// One subscription's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberReport {
    /// The topic.
    pub topic: String,
    /// The factory's address.
    pub address: String,
    /// The procedure called.
    pub callback: String,
    /// How the broker reaches the factory.
    pub protocol: Protocol,
    /// Calls allowed in flight.
    pub prefetch: u32,
    /// Calls in flight now.
    pub in_flight: u64,
    /// Jobs it completed.
    pub completed: u64,
    /// Jobs it failed with a job error.
    pub failed: u64,
    /// When it subscribed, in seconds since the Unix epoch.
    pub connected_since_unix_s: u64,
}

/// Why the broker refused a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BrokerError {
    /// The topic has not been created.
    #[error("no such topic: {topic:?}")]
    NoSuchTopic {
        /// The topic asked for.
        topic: String,
    },
    /// The topic name breaks the naming rule.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The name given.
        topic: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The buffer is outside the allowed range.
    #[error("invalid buffer {buffer}: it must be from {min} to {max}")]
    InvalidBuffer {
        /// The buffer given.
        buffer: u32,
        /// The smallest buffer allowed.
        min: u32,
        /// The largest buffer allowed.
        max: u32,
    },
    /// The prefetch is outside the allowed range.
    #[error("invalid prefetch {prefetch}: it must be from {min} to {max}")]
    InvalidPrefetch {
        /// The prefetch given.
        prefetch: u32,
        /// The smallest prefetch allowed.
        min: u32,
        /// The largest prefetch allowed.
        max: u32,
    },
    /// The callback is not one of the factory procedures.
    #[error("unknown callback {callback:?}: expected {MULTIPLY:?} or {DIVIDE:?}")]
    UnknownCallback {
        /// The callback given.
        callback: String,
    },
    /// The factory address does not parse or does not resolve.
    #[error("invalid factory address {address:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// The broker could not connect to the factory.
    #[error("cannot reach the factory at {address}: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// What the connection attempt said.
        reason: String,
    },
    /// The topic stayed full until the caller's deadline; the job was not enqueued.
    #[error("topic {topic:?} stayed full (capacity {capacity}) until the deadline; the job was not enqueued")]
    TopicFull {
        /// The topic.
        topic: String,
        /// Its capacity.
        capacity: u32,
    },
    /// No subscription matches an unsubscribe request.
    #[error("no subscription of {factory_address} to {topic:?} with {callback:?}")]
    NoSuchSubscription {
        /// The topic.
        topic: String,
        /// The factory's address.
        factory_address: String,
        /// The callback.
        callback: String,
    },
    /// The broker holds as many topics as it allows.
    #[error("the broker holds {limit} topics, its limit; reuse one (or start the broker with a higher --max-topics)")]
    TooManyTopics {
        /// The broker's limit.
        limit: u32,
    },
    /// The broker is stopping and takes no new work.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// A batch holds more jobs than one call may carry.
    #[error("a batch of {jobs} jobs is over the limit of {max}; split it")]
    BatchTooLarge {
        /// Jobs in the batch.
        jobs: u32,
        /// The most a batch may hold.
        max: u32,
    },
    /// The broker could not keep the job on disk (disk full, data dir read-only): the job was
    /// not acknowledged.
    #[error("the broker could not store the job: {reason}")]
    StorageFailed {
        /// What the store said.
        reason: String,
    },
}

impl BrokerError {
    /// Whether the same request may succeed if made again a little later: the broker's store
    /// failed for now (a NATS node gone, a disk full until space is freed), and nothing was
    /// kept. Every other refusal says something about the request or the broker's settings,
    /// which asking again does not change.
    pub fn is_transient(&self) -> bool {
        matches!(self, BrokerError::StorageFailed { .. })
    }
}

/// Why a factory could not compute a job. The broker does not retry such a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobError {
    /// A divisor was zero.
    #[error("division by zero")]
    DivideByZero,
    /// The result does not fit a 64-bit signed integer.
    #[error("integer overflow")]
    Overflow,
    /// Any other reason, in the factory's own words: a procedure a student has not written
    /// yet says so here, and so does an error of the factory's own making.
    #[error("{reason}")]
    Other {
        /// What the factory said.
        reason: String,
    },
    // Last, so that the errors before it keep their numbers on the wire. Never sent by a
    // factory: the broker gives it to a job it stopped delivering.
    /// Every call that carried the job failed in transport (the factory died, hung or closed
    /// the connection), as many times as the broker's `--max-deliveries` allows: the job is
    /// not delivered again, because it may well be what brings its factories down.
    #[error("delivered {deliveries} {}; every call failed: {reason}", times(*.deliveries))]
    Undeliverable {
        /// How many times the job was delivered.
        deliveries: u32,
        /// Why the last call failed.
        reason: String,
    },
}

/// `time` or `times`, as `count` needs.
fn times(count: u32) -> &'static str {
    if count == 1 {
        "time"
    } else {
        "times"
    }
}

impl JobError {
    /// The answer of a procedure that is not written yet: `what` says what to write.
    pub fn not_written(procedure: &str, what: &str) -> Self {
        JobError::Other {
            reason: format!("{procedure} is not written yet: {what}"),
        }
    }
}

/// The broker: topics, publishing and subscriptions.
#[tarpc::service]
pub trait Broker {
    /// Creates a topic, or reports the capacity of the existing one (idempotent).
    async fn create_channel(request: ChannelRequest) -> Result<StatusReport, BrokerError>;
    /// Appends a job to a topic, waiting for room while the topic is full.
    async fn publish(request: PublishRequest) -> Result<Published, BrokerError>;
    /// Starts calling a factory back with jobs of a topic.
    async fn subscribe(subscription: Subscription) -> Result<StatusReport, BrokerError>;
    /// Stops dispatching new jobs to a subscription; calls in flight finish.
    async fn unsubscribe(subscription: Subscription) -> Result<StatusReport, BrokerError>;
    /// Whether the broker holds this subscription (topic, factory address, callback) now. A
    /// factory asks, to notice that the broker dropped it and to subscribe again.
    async fn is_subscribed(subscription: Subscription) -> Result<bool, BrokerError>;
    /// What the broker is doing: topics, subscribers and their figures.
    async fn stats() -> BrokerStats;
    /// The jobs of a topic that failed with a job error.
    async fn dead_letters(topic: String) -> Result<DeadLetters, BrokerError>;
    // Last, so that the requests before it keep their numbers on the wire: a client built
    // before it was added still talks to this broker.
    /// Appends jobs to a topic in order, each as `publish` would, in one call: what a publisher
    /// with many jobs in flight sends instead of a call per job.
    async fn publish_batch(batch: PublishBatch) -> Result<PublishedBatch, BrokerError>;
}

/// A factory: the worker the broker calls back.
#[tarpc::service]
pub trait Factory {
    /// `x * y`, or `x * y * z`.
    async fn multiply(job: Job) -> Result<JobReport, JobError>;
    /// `x / y`, or `(x / y) / z`, truncating toward zero.
    async fn divide(job: Job) -> Result<JobReport, JobError>;
    /// `multiply` of each job, answered in order, in one call: what the broker sends when more
    /// than one job is ready for this factory. (After the lab's procedures, so that theirs keep
    /// their numbers on the wire; the broker asks with an empty batch before it sends any, and
    /// calls a factory that cannot answer one job at a time.)
    async fn multiply_batch(jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>>;
    /// `divide` of each job, answered in order, in one call.
    async fn divide_batch(jobs: Vec<Job>) -> Vec<Result<JobReport, JobError>>;
}
