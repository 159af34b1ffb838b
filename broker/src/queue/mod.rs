//! The queue core: topics of jobs with take semantics, free of RPC.
//!
//! A [`JobStore`] holds bounded FIFO topics. A job is published, taken by exactly one
//! dispatcher (it moves from *ready* to *in flight*), and then settled once: completed,
//! dead-lettered (a job error: kept aside, not retried) or requeued (put back at the head of its
//! topic). Three stores implement the trait:
//!
//! - [`MemoryStore`] (`memory/`): topics in this process's memory, the default for the lab.
//! - [`DiskStore`] (`disk/`): a [`MemoryStore`] whose jobs and dead letters are also kept in a
//!   redb database on local disk, so that they survive a restart.
//! - [`JetStreamStore`] (`jetstream/`, feature `jetstream`): topics kept in a NATS JetStream
//!   cluster, shared by every broker that uses it.
//!
//! What the stores share sits beside them:
//!
//! - `store`: the trait and the neutral types it speaks in ([`Delivery`], [`TopicCounts`], …);
//! - `codec`: one encoding of a job and of a dead letter, for memory, disk and JetStream;
//! - `compact`: a topic's ready jobs, encoded, as the memory store keeps them;
//! - `dead_letters`: a topic's bounded list of dead letters;
//! - `in_flight`: the deliveries taken and not yet settled;
//! - `rules`: what the broker accepts as a topic name, a buffer and a prefetch.

#[cfg(test)]
mod behaviour;
mod codec;
mod compact;
mod dead_letters;
mod disk;
mod in_flight;
#[cfg(feature = "jetstream")]
mod jetstream;
mod memory;
mod rules;
mod store;

pub use dead_letters::DEFAULT_DEAD_LETTER_LIMIT;
pub use disk::{DiskError, DiskStore, Fsync};
#[cfg(feature = "jetstream")]
pub use jetstream::{JetStreamConfig, JetStreamError, JetStreamStore};
pub use memory::MemoryStore;
pub use rules::{
    validate_buffer, validate_prefetch, validate_topic_name, ValidationError, MAX_BUFFER,
    MAX_PREFETCH, MAX_TOPIC_NAME_LENGTH, MIN_BUFFER, MIN_PREFETCH,
};
pub use store::{Delivery, JobId, JobStore, QueueError, TopicCounts, TopicCreation};
