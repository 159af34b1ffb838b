//! The store a broker keeps its topics in, chosen when it starts: a [`StoreConfig`] says
//! which, and [`StoreConfig::open`] opens it as a [`Store`].
//!
//! The choice is a value rather than a type parameter, so that the layers above the queue
//! (requests, dispatchers, HTTP, the Go front door) are written once, and a broker with any
//! store can be built from its configuration alone. Each call is one `match`, which costs
//! nothing next to the store's own work.

use std::path::PathBuf;

use stubs::{DeadLetters, Job, JobError};
use tokio::time::Instant;

use crate::queue::{
    Delivery, DiskError, DiskStore, Fsync, JobId, JobStore, MemoryStore, QueueError, TopicCounts,
    TopicCreation, DEFAULT_DEAD_LETTER_LIMIT,
};
#[cfg(feature = "jetstream")]
use crate::queue::{JetStreamConfig, JetStreamError, JetStreamStore};

/// Which store to open, and how.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// Topics in this process's memory, gone when it stops.
    Memory {
        /// How many dead letters a topic keeps.
        dead_letter_limit: usize,
    },
    /// Topics on local disk, in `dir`.
    Disk {
        /// The data directory, created if missing.
        dir: PathBuf,
        /// When writes are synced to the disk.
        fsync: Fsync,
        /// How many dead letters a topic keeps.
        dead_letter_limit: usize,
    },
    /// Topics in a NATS JetStream cluster, shared by every broker on it.
    #[cfg(feature = "jetstream")]
    JetStream(JetStreamConfig),
}

impl Default for StoreConfig {
    /// In memory, with the default dead-letter limit: the lab's store.
    fn default() -> Self {
        Self::Memory {
            dead_letter_limit: DEFAULT_DEAD_LETTER_LIMIT,
        }
    }
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The JetStream cluster cannot be used.
    #[cfg(feature = "jetstream")]
    #[error(transparent)]
    JetStream(#[from] JetStreamError),
}

impl StoreConfig {
    /// Opens the store, waiting as long as it takes (a JetStream cluster that is not up yet);
    /// the caller stops waiting by dropping the future.
    pub async fn open(&self) -> Result<Store, StoreError> {
        Ok(match self {
            Self::Memory { dead_letter_limit } => {
                Store::Memory(MemoryStore::with_dead_letter_limit(*dead_letter_limit))
            }
            Self::Disk {
                dir,
                fsync,
                dead_letter_limit,
            } => {
                let store = DiskStore::open(dir, *fsync, *dead_letter_limit).await?;
                tracing::info!("jobs are kept on disk in {}", dir.display());
                Store::Disk(store)
            }
            #[cfg(feature = "jetstream")]
            Self::JetStream(config) => {
                let store = JetStreamStore::connect(config.clone()).await?;
                tracing::info!("topics are kept in NATS JetStream");
                Store::JetStream(store)
            }
        })
    }

    /// Whether opening may take long enough for clients to be told to come back later.
    pub(crate) fn is_jetstream(&self) -> bool {
        #[cfg(feature = "jetstream")]
        if let Self::JetStream(_) = self {
            return true;
        }
        false
    }
}

/// One of the broker's stores, open.
// Made once and held behind an `Arc`, so the size of its largest variant costs nothing; a
// boxed variant would cost an indirection on every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Store {
    /// In this process's memory.
    Memory(MemoryStore),
    /// On local disk.
    Disk(DiskStore),
    /// In NATS JetStream.
    #[cfg(feature = "jetstream")]
    JetStream(JetStreamStore),
}

impl From<MemoryStore> for Store {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

/// `$call` on whichever store `$self` is, named `$store` in it.
macro_rules! on_store {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Memory($store) => $call.await,
            Store::Disk($store) => $call.await,
            // Boxed, because a JetStream call's future is kilobytes: inline, every call on
            // any store would carry that size and move it, the memory store's included.
            #[cfg(feature = "jetstream")]
            Store::JetStream($store) => Box::pin($call).await,
        }
    };
}

impl JobStore for Store {
    async fn create_topic(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<TopicCreation, QueueError> {
        on_store!(self, store => store.create_topic(topic, capacity))
    }

    async fn has_topic(&self, topic: &str) -> bool {
        on_store!(self, store => store.has_topic(topic))
    }

    async fn publish(&self, topic: &str, job: Job, room_by: Instant) -> Result<JobId, QueueError> {
        on_store!(self, store => store.publish(topic, job, room_by))
    }

    async fn publish_many(
        &self,
        topic: &str,
        jobs: Vec<Job>,
        room_by: Instant,
    ) -> (Vec<JobId>, Option<QueueError>) {
        on_store!(self, store => store.publish_many(topic, jobs, room_by))
    }

    async fn take(&self, topic: &str) -> Result<Delivery, QueueError> {
        on_store!(self, store => store.take(topic))
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        on_store!(self, store => store.complete(delivery))
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<(), QueueError> {
        on_store!(self, store => store.dead_letter(delivery, error, factory))
    }

    async fn dead_letters(&self, topic: &str) -> Result<DeadLetters, QueueError> {
        on_store!(self, store => store.dead_letters(topic))
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), QueueError> {
        on_store!(self, store => store.requeue(delivery))
    }

    async fn requeue_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        on_store!(self, store => store.requeue_all(deliveries))
    }

    async fn topic_names(&self) -> Vec<String> {
        on_store!(self, store => store.topic_names())
    }

    async fn counts(&self, topic: &str) -> Result<TopicCounts, QueueError> {
        on_store!(self, store => store.counts(topic))
    }
}
