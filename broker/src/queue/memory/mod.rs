//! [`MemoryStore`]: topics held in this process's memory. Fast, and gone when the process ends.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, MutexGuard, RwLock};
use stubs::{DeadLetter, DeadLetters, Job, JobError};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::codec::QueuedJob;
use super::compact::CompactQueue;
use super::dead_letters::{letter, Bounded, DEFAULT_DEAD_LETTER_LIMIT};
use super::in_flight::InFlight;
use super::{Delivery, JobId, JobStore, QueueError, TopicCounts, TopicCreation};

/// Topics in memory.
///
/// Locks are synchronous ones, held only for a few pointer moves and never across an
/// `.await`: they are cheaper than tokio's and cannot be held by a cancelled future. A panic
/// while one is held cannot leave a topic half-changed (every change is a single push, pop or
/// insert), so they do not poison.
#[derive(Debug)]
pub struct MemoryStore {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    next_job_id: AtomicU64,
    dead_letter_limit: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    capacity: usize,
    state: Mutex<TopicState>,
    /// Woken when a job becomes ready, for a waiting `take`.
    job_ready: Notify,
    /// Woken when the ready jobs drop below capacity, for a waiting `publish`.
    room: Notify,
}

#[derive(Debug)]
struct TopicState {
    ready: CompactQueue,
    in_flight: InFlight<QueuedJob>,
    published: u64,
    completed: u64,
    failed: u64,
    requeued: u64,
    /// Of the `failed`, those given up on as undeliverable.
    undeliverable: u64,
    dead_letters: Bounded<DeadLetter>,
}

impl TopicState {
    fn new(dead_letter_limit: usize) -> Self {
        Self {
            ready: CompactQueue::default(),
            in_flight: InFlight::default(),
            published: 0,
            completed: 0,
            failed: 0,
            requeued: 0,
            undeliverable: 0,
            dead_letters: Bounded::new(dead_letter_limit),
        }
    }

    /// Keeps a dead letter, and counts its job as failed.
    fn bury(&mut self, letter: DeadLetter) {
        self.failed += 1;
        if matches!(letter.error, JobError::Undeliverable { .. }) {
            self.undeliverable += 1;
        }
        self.dead_letters.push(letter);
    }
}

impl Topic {
    fn settle(
        &self,
        delivery: &Delivery,
    ) -> Result<(QueuedJob, MutexGuard<'_, TopicState>), QueueError> {
        let mut state = self.state.lock();
        let job = state.in_flight.settle(delivery)?;
        Ok((job, state))
    }
}

impl MemoryStore {
    /// An empty store keeping up to [`DEFAULT_DEAD_LETTER_LIMIT`] dead letters per topic.
    pub fn new() -> Self {
        Self::with_dead_letter_limit(DEFAULT_DEAD_LETTER_LIMIT)
    }

    /// An empty store keeping up to `limit` dead letters per topic.
    pub fn with_dead_letter_limit(limit: usize) -> Self {
        Self {
            topics: RwLock::default(),
            next_job_id: AtomicU64::new(0),
            dead_letter_limit: limit,
        }
    }

    /// Puts a job recovered from elsewhere (a disk) at the back of its topic, with its id and
    /// attempts, whatever the capacity; later jobs get larger ids. A job that `was_taken` (in
    /// flight when the store stopped) counts as requeued and as taken once more.
    pub(crate) fn restore(
        &self,
        name: &str,
        mut queued: QueuedJob,
        was_taken: bool,
    ) -> Result<(), QueueError> {
        let topic = self.topic(name)?;
        self.next_job_id
            .fetch_max(queued.id.saturating_add(1), Ordering::Relaxed);
        let mut state = topic.state.lock();
        if was_taken {
            queued.attempts = queued.attempts.saturating_add(1);
            state.requeued += 1;
        }
        state.ready.push_back(&queued);
        state.published += 1;
        drop(state);
        topic.job_ready.notify_one();
        Ok(())
    }

    /// Gives no id below `next` from now on: ids stay unique across restarts of a store that
    /// keeps its jobs elsewhere, even once every job it stored is settled.
    pub(crate) fn continue_ids_from(&self, next: JobId) {
        self.next_job_id.fetch_max(next, Ordering::Relaxed);
    }

    /// Adds a dead letter recovered from elsewhere to its topic's list.
    pub(crate) fn restore_dead_letter(
        &self,
        name: &str,
        letter: DeadLetter,
    ) -> Result<(), QueueError> {
        self.topic(name)?.state.lock().bury(letter);
        Ok(())
    }

    /// Publishes as [`JobStore::publish`] does: the job as queued, for a store that keeps it
    /// elsewhere too.
    pub(crate) async fn publish_queued(
        &self,
        name: &str,
        job: Job,
        room_by: Instant,
    ) -> Result<QueuedJob, QueueError> {
        let topic = self.topic(name)?;
        loop {
            // Registered before the check, so that room made between the check and the
            // wait still wakes us.
            let mut room = pin!(topic.room.notified());
            room.as_mut().enable();
            if let Some(queued) = self.publish_if_room(&topic, job) {
                return Ok(queued);
            }
            // Cancel-safe: a wait that times out, or is dropped, has stored nothing.
            if tokio::time::timeout_at(room_by, room).await.is_err() {
                return Err(QueueError::Full {
                    topic: topic.name.to_string(),
                    capacity: topic.capacity,
                });
            }
        }
    }

    /// Appends `job` to `topic` if it has room.
    fn publish_if_room(&self, topic: &Topic, job: Job) -> Option<QueuedJob> {
        let mut state = topic.state.lock();
        if state.ready.len() >= topic.capacity {
            return None;
        }
        let id = self.next_job_id.fetch_add(1, Ordering::Relaxed);
        let queued = QueuedJob::new(id, job, SystemTime::now());
        state.ready.push_back(&queued);
        state.published += 1;
        let room_left = state.ready.len() < topic.capacity;
        drop(state);
        topic.job_ready.notify_one();
        if room_left {
            // Pass the wake-up on: another publisher may be waiting for this room.
            topic.room.notify_one();
        }
        Some(queued)
    }

    /// Settles a delivery as [`JobStore::dead_letter`] does: the letter, for a store that keeps
    /// it elsewhere too.
    pub(crate) fn dead_letter_now(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<DeadLetter, QueueError> {
        let topic = self.topic(&delivery.topic)?;
        let (queued, mut state) = topic.settle(delivery)?;
        let letter = letter(queued.id, queued.job, error, factory);
        state.bury(letter.clone());
        Ok(letter)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, QueueError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::NoSuchTopic(name.to_owned()))
    }
}

impl JobStore for MemoryStore {
    async fn create_topic(&self, name: &str, capacity: usize) -> Result<TopicCreation, QueueError> {
        let mut topics = self.topics.write();
        if let Some(existing) = topics.get(name) {
            return Ok(TopicCreation::Existing {
                capacity: existing.capacity,
            });
        }
        let name: Arc<str> = Arc::from(name);
        topics.insert(
            name.clone(),
            Arc::new(Topic {
                name,
                capacity,
                state: Mutex::new(TopicState::new(self.dead_letter_limit)),
                job_ready: Notify::new(),
                room: Notify::new(),
            }),
        );
        Ok(TopicCreation::Created)
    }

    async fn has_topic(&self, name: &str) -> bool {
        self.topic(name).is_ok()
    }

    async fn publish(&self, name: &str, job: Job, room_by: Instant) -> Result<JobId, QueueError> {
        Ok(self.publish_queued(name, job, room_by).await?.id)
    }

    async fn take(&self, name: &str) -> Result<Delivery, QueueError> {
        let topic = self.topic(name)?;
        loop {
            let mut job_ready = pin!(topic.job_ready.notified());
            job_ready.as_mut().enable();
            {
                let mut state = topic.state.lock();
                if let Some(mut queued) = state.ready.pop_front() {
                    queued.attempts += 1;
                    state.in_flight.insert(queued.id, queued);
                    let jobs_left = !state.ready.is_empty();
                    let room_made = state.ready.len() < topic.capacity;
                    drop(state);
                    if jobs_left {
                        // Pass the wake-up on: another dispatcher may be waiting for these jobs.
                        topic.job_ready.notify_one();
                    }
                    if room_made {
                        topic.room.notify_one();
                    }
                    return Ok(Delivery {
                        topic: topic.name.clone(),
                        id: queued.id,
                        job: queued.job,
                        attempt: queued.attempts,
                        published_at: queued.published_at,
                    });
                }
            }
            job_ready.await;
        }
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let topic = self.topic(&delivery.topic)?;
        let (_, mut state) = topic.settle(delivery)?;
        state.completed += 1;
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<(), QueueError> {
        self.dead_letter_now(delivery, error, factory).map(drop)
    }

    async fn dead_letters(&self, name: &str) -> Result<DeadLetters, QueueError> {
        let topic = self.topic(name)?;
        let state = topic.state.lock();
        Ok(DeadLetters {
            letters: state.dead_letters.iter().cloned().collect(),
            total: state.failed,
            dropped: state.dead_letters.dropped(),
        })
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.requeue_all(std::slice::from_ref(delivery)).await
    }

    async fn requeue_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        let Some(first) = deliveries.first() else {
            return Ok(());
        };
        let topic = self.topic(&first.topic)?;
        let mut state = topic.state.lock();
        let jobs = state.in_flight.settle_all(&topic.name, deliveries)?;
        for (_, job) in jobs.iter().rev() {
            state.ready.push_front(job);
            state.requeued += 1;
        }
        drop(state);
        topic.job_ready.notify_one();
        Ok(())
    }

    async fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .topics
            .read()
            .keys()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        names
    }

    async fn counts(&self, name: &str) -> Result<TopicCounts, QueueError> {
        let topic = self.topic(name)?;
        let state = topic.state.lock();
        Ok(TopicCounts {
            capacity: topic.capacity,
            ready: state.ready.len(),
            in_flight: state.in_flight.len(),
            published: state.published,
            completed: state.completed,
            failed: state.failed,
            requeued: state.requeued,
            undeliverable: state.undeliverable,
            dead: state.dead_letters.len(),
            jetstream: None,
        })
    }
}

#[cfg(test)]
mod tests;
