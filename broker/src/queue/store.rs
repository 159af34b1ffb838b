//! The contract every store keeps: the [`JobStore`] trait and the neutral types it speaks in.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use stubs::{DeadLetters, JetStreamReport, Job, JobError};

/// The identifier a store gives a published job, unique within its topic (the memory and disk
/// stores make it unique across all topics; JetStream numbers each stream on its own).
pub type JobId = u64;

/// A job handed to one dispatcher. It stays in flight until it is settled with
/// [`JobStore::complete`], [`JobStore::dead_letter`] or [`JobStore::requeue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The topic the job was taken from.
    pub topic: Arc<str>,
    /// The job's identifier.
    pub id: JobId,
    /// The job.
    pub job: Job,
    /// How many times the job has been taken, this time included.
    pub attempt: u32,
    /// When the job was published, for the latency from publish to completion.
    pub published_at: SystemTime,
}

/// What [`JobStore::create_topic`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicCreation {
    /// A new topic with the requested capacity.
    Created,
    /// The topic existed; it keeps the capacity it had.
    Existing {
        /// The capacity the topic keeps.
        capacity: usize,
    },
}

/// A topic's counts, as the store sees them now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicCounts {
    /// How many ready jobs the topic holds before a publish waits.
    pub capacity: usize,
    /// Jobs waiting to be taken.
    pub ready: usize,
    /// Jobs taken and not yet settled.
    pub in_flight: usize,
    /// Jobs ever published.
    pub published: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs dead-lettered: failed with a job error, or undeliverable.
    pub failed: u64,
    /// Times a job was put back after a failed delivery.
    pub requeued: u64,
    /// Of the `failed` jobs, those dead-lettered with [`JobError::Undeliverable`]: their calls
    /// kept failing in transport.
    pub undeliverable: u64,
    /// Dead letters kept now.
    pub dead: usize,
    /// What JetStream reports of the topic's stream, for all brokers together; `None` for
    /// the stores of one broker.
    pub jetstream: Option<JetStreamReport>,
}

/// Why a store refused an operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The topic has not been created.
    #[error("no such topic: {0:?}")]
    NoSuchTopic(String),
    /// The store could not keep the change (a disk full or gone read-only).
    #[error("storage failed: {0}")]
    Storage(String),
    /// The topic stayed full until the publisher's deadline.
    #[error("topic {topic:?} stayed full (capacity {capacity})")]
    Full {
        /// The topic.
        topic: String,
        /// Its capacity.
        capacity: usize,
    },
    /// The delivery is not in flight (already settled, or never taken from this store).
    #[error("job {id} is not in flight on topic {topic:?}")]
    NotInFlight {
        /// The topic.
        topic: String,
        /// The job.
        id: JobId,
    },
}

/// Topics of jobs with take semantics.
///
/// Every future a store returns must be safe to cancel: dropped before it completes, it leaves
/// no trace. In particular a `publish` dropped while it waits for room enqueues nothing, and a
/// `take` dropped while it waits for a job takes nothing.
pub trait JobStore: Send + Sync + 'static {
    /// Creates `topic` with room for `capacity` ready jobs, or leaves an existing topic as it is.
    fn create_topic(
        &self,
        topic: &str,
        capacity: usize,
    ) -> impl Future<Output = Result<TopicCreation, QueueError>> + Send;

    /// Whether `topic` exists.
    fn has_topic(&self, topic: &str) -> impl Future<Output = bool> + Send;

    /// Appends `job` to `topic`, waiting while the topic holds `capacity` ready jobs, but not
    /// past `room_by`: then [`QueueError::Full`], and nothing is stored. The store owns this
    /// deadline, rather than its caller cancelling the wait, because a store that must write
    /// the job somewhere once there is room (a disk, another engine) can then refuse cleanly
    /// while it waits and still finish a write it has begun.
    fn publish(
        &self,
        topic: &str,
        job: Job,
        room_by: Instant,
    ) -> impl Future<Output = Result<JobId, QueueError>> + Send;

    /// Publishes `jobs` in order, each as [`JobStore::publish`] would, all by `room_by`: the ids
    /// of those stored, from the first, and why the rest were not. A store that writes jobs
    /// somewhere writes them together.
    fn publish_many(
        &self,
        topic: &str,
        jobs: Vec<Job>,
        room_by: Instant,
    ) -> impl Future<Output = (Vec<JobId>, Option<QueueError>)> + Send {
        async move {
            let mut ids = Vec::with_capacity(jobs.len());
            for job in jobs {
                match self.publish(topic, job, room_by).await {
                    Ok(id) => ids.push(id),
                    Err(error) => return (ids, Some(error)),
                }
            }
            (ids, None)
        }
    }

    /// Takes the job at the head of `topic`, waiting while there is none.
    fn take(&self, topic: &str) -> impl Future<Output = Result<Delivery, QueueError>> + Send;

    /// Settles a delivery as done: the job leaves the store.
    fn complete(&self, delivery: &Delivery) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Settles a delivery as failed with a job error from the factory at `factory`: the job
    /// leaves the topic for its bounded dead-letter list, and is never delivered again. A job
    /// the broker gives up on ([`JobError::Undeliverable`]) is counted apart as well.
    fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The dead letters of `topic`.
    fn dead_letters(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<DeadLetters, QueueError>> + Send;

    /// Puts a delivery back at the head of its topic, whatever the capacity, so that a job
    /// is never lost nor blocked behind newer jobs because a factory failed.
    fn requeue(&self, delivery: &Delivery) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Puts the deliveries of one topic back at its head in one step, in the order given (the
    /// first ends at the head), so that no take comes between them: the jobs of one failed
    /// call return as they were taken. None is put back unless all are in flight.
    fn requeue_all(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// The names of every topic, sorted.
    fn topic_names(&self) -> impl Future<Output = Vec<String>> + Send;

    /// The counts of `topic`.
    fn counts(&self, topic: &str) -> impl Future<Output = Result<TopicCounts, QueueError>> + Send;
}
