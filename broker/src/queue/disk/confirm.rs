//! Publish confirmation: when a publisher may be told its jobs are safe.
//!
//! A job is safe once it is on disk, or once it is completed: a completed job needs no disk
//! (as RabbitMQ confirms a persistent message that was consumed before it was written).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::super::JobId;
use super::table::TopicId;
use super::writer::{Change, Write};

/// Published jobs whose publisher waits for their commit, by id.
#[derive(Default)]
pub struct Unconfirmed(pub(super) Mutex<HashMap<JobId, Arc<Confirmation>>>);

/// One publish: its jobs not yet completed, plus one while it is still adding jobs.
pub struct Confirmation {
    left: AtomicUsize,
    all_completed: Notify,
}

impl Confirmation {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(1),
            all_completed: Notify::new(),
        })
    }

    /// One job completed, or the publish has added all of its jobs.
    pub fn one_less(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_completed.notify_one();
        }
    }

    /// Waits until every job of the publish is completed.
    pub async fn all_completed(&self) {
        self.all_completed.notified().await;
    }
}

impl Unconfirmed {
    pub fn track(&self, id: JobId, confirmation: &Arc<Confirmation>) {
        confirmation.left.fetch_add(1, Ordering::AcqRel);
        self.0.lock().insert(id, confirmation.clone());
    }

    pub fn completed(&self, id: JobId) {
        let confirmation = self.0.lock().remove(&id);
        if let Some(confirmation) = confirmation {
            confirmation.one_less();
        }
    }

    fn forget(&self, ids: &[JobId]) {
        let mut tracked = self.0.lock();
        for id in ids {
            tracked.remove(id);
        }
    }
}

/// The ids of one publish, no longer tracked once it is answered or dropped.
pub struct Tracked<'a> {
    pub unconfirmed: &'a Unconfirmed,
    pub ids: Vec<JobId>,
}

impl Tracked<'_> {
    pub fn finish(mut self) -> Vec<JobId> {
        self.unconfirmed.forget(&self.ids);
        std::mem::take(&mut self.ids)
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.unconfirmed.forget(&self.ids);
    }
}

/// The records of jobs already in the queue and not yet sent to the writer. A publish dropped
/// while it waits for room sends them on its way out: they are in the queue, so they are kept
/// on disk too, although nobody will be told.
pub struct Unsent<'a> {
    pub writes: &'a mpsc::Sender<Write>,
    pub topic: TopicId,
    pub records: Vec<(JobId, Vec<u8>)>,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if !self.records.is_empty() {
            let _ = self.writes.send(Write {
                change: Change::Jobs {
                    topic: self.topic,
                    jobs: std::mem::take(&mut self.records),
                },
                done: None,
            });
        }
    }
}
