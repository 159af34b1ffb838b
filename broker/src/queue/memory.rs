//! [`MemoryStore`]: topics held in this process's memory. Fast, and gone when the process ends.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use stubs::Job;
use tokio::sync::Notify;

use super::{Delivery, JobId, JobStore, QueueError, TopicCreation, TopicStats};

/// Topics in memory.
///
/// Locks are `std::sync` ones, held only for a few pointer moves and never across an `.await`:
/// they are cheaper than tokio's and cannot be held by a cancelled future.
#[derive(Debug, Default)]
pub struct MemoryStore {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    next_job_id: AtomicU64,
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
    ready: VecDeque<QueuedJob>,
    in_flight: HashMap<JobId, QueuedJob>,
    published: u64,
    completed: u64,
    failed: u64,
    requeued: u64,
}

#[derive(Clone, Copy, Debug)]
struct QueuedJob {
    id: JobId,
    job: Job,
    attempts: u32,
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
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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

    async fn publish(&self, name: &str, job: Job) -> Result<JobId, QueueError> {
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
                    state.ready.push_back(QueuedJob {
                        id,
                        job,
                        attempts: 0,
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
            room.await;
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

    async fn fail(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let topic = self.topic(&delivery.topic)?;
        let (_, mut state) = topic.settle(delivery)?;
        state.failed += 1;
        Ok(())
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let topic = self.topic(&delivery.topic)?;
        let (job, mut state) = topic.settle(delivery)?;
        state.ready.push_front(job);
        state.requeued += 1;
        drop(state);
        topic.job_ready.notify_one();
        Ok(())
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
        })
    }
}
