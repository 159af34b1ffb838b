//! [`MemoryStore`]: topics held in this process's memory. Fast, and gone when the process ends.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use stubs::{DeadLetter, DeadLetters, Job, JobError};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::compact::{CompactQueue, QueuedJob};
use super::{Delivery, JobId, JobStore, QueueError, TopicCreation, TopicStats};

/// How many dead letters a topic keeps by default: enough to see what went wrong, small enough
/// that a flood of bad jobs costs a bounded amount of memory (about 100 KiB a topic).
pub const DEFAULT_DEAD_LETTER_LIMIT: usize = 1_000;

/// Topics in memory.
///
/// Locks are `std::sync` ones, held only for a few pointer moves and never across an `.await`:
/// they are cheaper than tokio's and cannot be held by a cancelled future.
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

#[derive(Debug, Default)]
struct TopicState {
    ready: CompactQueue,
    in_flight: HashMap<JobId, QueuedJob>,
    published: u64,
    completed: u64,
    failed: u64,
    requeued: u64,
    /// Of the `failed`, those given up on as undeliverable.
    undeliverable: u64,
    dead_letters: VecDeque<DeadLetter>,
    dead_letters_dropped: u64,
}

impl TopicState {
    /// Counts a job dead-lettered with `error`.
    fn count_failure(&mut self, error: &JobError) {
        self.failed += 1;
        if matches!(error, JobError::Undeliverable { .. }) {
            self.undeliverable += 1;
        }
    }
}

impl Topic {
    fn lock(&self) -> MutexGuard<'_, TopicState> {
        // A panic while the lock was held cannot leave the state half-changed (every change is
        // a single push, pop or insert), so a poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settle(
        &self,
        delivery: &Delivery,
    ) -> Result<(QueuedJob, MutexGuard<'_, TopicState>), QueueError> {
        let mut state = self.lock();
        match state.in_flight.remove(&delivery.id) {
            Some(job) => Ok((job, state)),
            None => Err(QueueError::NotInFlight {
                topic: self.name.to_string(),
                id: delivery.id,
            }),
        }
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
        let mut state = topic.lock();
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
        let topic = self.topic(name)?;
        let mut state = topic.lock();
        state.count_failure(&letter.error);
        if state.dead_letters.len() == self.dead_letter_limit {
            state.dead_letters.pop_front();
            state.dead_letters_dropped += 1;
        }
        if self.dead_letter_limit > 0 {
            state.dead_letters.push_back(letter);
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, QueueError> {
        let topics = self
            .topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        topics
            .get(name)
            .cloned()
            .ok_or_else(|| QueueError::NoSuchTopic(name.to_owned()))
    }
}

impl JobStore for MemoryStore {
    async fn create_topic(&self, name: &str, capacity: usize) -> Result<TopicCreation, QueueError> {
        let mut topics = self
            .topics
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
                state: Mutex::new(TopicState::default()),
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
        let topic = self.topic(name)?;
        loop {
            // Registered before the check, so that room made between the check and the
            // wait still wakes us.
            let mut room = pin!(topic.room.notified());
            room.as_mut().enable();
            {
                let mut state = topic.lock();
                if state.ready.len() < topic.capacity {
                    let id = self.next_job_id.fetch_add(1, Ordering::Relaxed);
                    state.ready.push_back(&QueuedJob {
                        id,
                        job,
                        attempts: 0,
                        published_at: SystemTime::now(),
                    });
                    state.published += 1;
                    let room_left = state.ready.len() < topic.capacity;
                    drop(state);
                    topic.job_ready.notify_one();
                    if room_left {
                        // Pass the wake-up on: another publisher may be waiting for this room.
                        topic.room.notify_one();
                    }
                    return Ok(id);
                }
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

    async fn take(&self, name: &str) -> Result<Delivery, QueueError> {
        let topic = self.topic(name)?;
        loop {
            let mut job_ready = pin!(topic.job_ready.notified());
            job_ready.as_mut().enable();
            {
                let mut state = topic.lock();
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
        let topic = self.topic(&delivery.topic)?;
        let (queued, mut state) = topic.settle(delivery)?;
        state.count_failure(&error);
        if self.dead_letter_limit == 0 {
            state.dead_letters_dropped += 1;
            return Ok(());
        }
        if state.dead_letters.len() == self.dead_letter_limit {
            state.dead_letters.pop_front();
            state.dead_letters_dropped += 1;
        }
        let failed_at_unix_ms = super::unix_ms_now();
        state.dead_letters.push_back(DeadLetter {
            job_id: queued.id,
            job: queued.job,
            error,
            factory: factory.to_owned(),
            failed_at_unix_ms,
        });
        Ok(())
    }

    async fn dead_letters(&self, name: &str) -> Result<DeadLetters, QueueError> {
        let topic = self.topic(name)?;
        let state = topic.lock();
        Ok(DeadLetters {
            letters: state.dead_letters.iter().cloned().collect(),
            total: state.failed,
            dropped: state.dead_letters_dropped,
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
        let mut state = topic.lock();
        if let Some(missing) = deliveries.iter().find(|delivery| {
            *delivery.topic != *topic.name || !state.in_flight.contains_key(&delivery.id)
        }) {
            return Err(QueueError::NotInFlight {
                topic: missing.topic.to_string(),
                id: missing.id,
            });
        }
        for delivery in deliveries.iter().rev() {
            if let Some(job) = state.in_flight.remove(&delivery.id) {
                state.ready.push_front(&job);
                state.requeued += 1;
            }
        }
        drop(state);
        topic.job_ready.notify_one();
        Ok(())
    }

    async fn topic_names(&self) -> Vec<String> {
        let topics = self
            .topics
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut names: Vec<String> = topics.keys().map(|name| name.to_string()).collect();
        names.sort();
        names
    }

    async fn stats(&self, name: &str) -> Result<TopicStats, QueueError> {
        let topic = self.topic(name)?;
        let state = topic.lock();
        Ok(TopicStats {
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
mod tests {
    use super::*;
    use stubs::Pair;

    #[tokio::test]
    async fn dead_letters_are_bounded_and_the_oldest_are_dropped_first() {
        let store = MemoryStore::with_dead_letter_limit(2);
        store.create_topic("t", 10).await.unwrap();
        for x in 0..3 {
            store
                .publish(
                    "t",
                    Pair { x, y: 0 }.into(),
                    Instant::now() + std::time::Duration::from_secs(60),
                )
                .await
                .unwrap();
            let delivery = store.take("t").await.unwrap();
            store
                .dead_letter(&delivery, JobError::DivideByZero, "127.0.0.1:8050")
                .await
                .unwrap();
        }
        let dead = store.dead_letters("t").await.unwrap();
        assert_eq!((dead.total, dead.dropped), (3, 1));
        let jobs: Vec<Job> = dead.letters.iter().map(|letter| letter.job).collect();
        assert_eq!(
            jobs,
            vec![Pair { x: 1, y: 0 }.into(), Pair { x: 2, y: 0 }.into()]
        );
        assert!(dead
            .letters
            .iter()
            .all(|letter| letter.error == JobError::DivideByZero
                && letter.factory == "127.0.0.1:8050"
                && letter.failed_at_unix_ms > 0));
        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.failed, stats.ready, stats.in_flight), (3, 0, 0));
    }
}
