//! [`DiskStore`]: topics kept on local disk (`--data-dir`), in a redb database.
//!
//! The queue itself (order, waiting, in-flight bookkeeping) is a [`MemoryStore`]; the disk holds
//! what must survive the process: every topic, every job not yet settled (ready or in flight),
//! and the dead letters. One writer thread applies the changes in transactions (`writer`), a
//! publish is answered once each of its jobs is on disk or completed, whichever comes first
//! (`confirm`), and a store opened again gets back what its data dir holds (`load`). The
//! database's layout is in `table`.

mod confirm;
mod load;
mod table;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::RwLock;
use stubs::{DeadLetters, Job, JobError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::codec::{dead_letter_record, to_record};
use super::{Delivery, JobId, JobStore, MemoryStore, QueueError, TopicCounts, TopicCreation};
use confirm::{Confirmation, Tracked, Unconfirmed, Unsent};
use load::{load, Loaded};
use table::{TopicId, DATABASE_FILE};
use writer::{sync, write_loop, Change, Settlements, Write, Written};

/// The writer's answer to a change: whether it is on disk.
type OnDisk = oneshot::Receiver<Result<(), String>>;

/// Why a change was not written when the writer thread is gone.
const WRITER_GONE: &str = "the disk writer has stopped";

/// How much of the file redb caches. Its default (1 GiB) would let the broker's memory grow
/// with the disk; the queue itself is in memory already.
const CACHE_SIZE: usize = 16 * 1024 * 1024;

/// When a transaction is synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before any publish it holds is answered: nothing acknowledged is lost, even on power loss.
    Always,
    /// At least this often, and before the broker stops: a crash or a power cut may lose the
    /// publishes acknowledged since the last sync (redb keeps only synced commits).
    Interval(std::time::Duration),
    /// Only when the broker stops. redb keeps only synced commits, so a crash or a power cut
    /// loses every job acknowledged since the broker started.
    Never,
}

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Another broker holds it.
    #[error("the data dir {0} is in use by another broker")]
    InUse(PathBuf),
    /// It cannot be created, opened or read.
    #[error("cannot use the data dir {dir}: {reason}")]
    Unusable {
        /// The data dir.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Topics on local disk.
pub struct DiskStore {
    memory: MemoryStore,
    /// Each topic's number.
    topic_ids: RwLock<HashMap<Arc<str>, TopicId>>,
    writes: mpsc::Sender<Write>,
    settlements: Settlements,
    unconfirmed: Unconfirmed,
    /// Ids below this are reserved on disk: a publish may be answered on completion alone.
    reserved: Arc<AtomicU64>,
    /// The writer, joined when the store is dropped, so that its last sync is done before the
    /// process ends.
    writer: Option<std::thread::JoinHandle<()>>,
    /// A test's scratch folder, removed with the store.
    #[cfg(test)]
    scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore").finish_non_exhaustive()
    }
}

fn unusable(dir: &Path, reason: impl std::fmt::Display) -> DiskError {
    DiskError::Unusable {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Opens the database in `dir`, repaired up to its last complete commit if it was not closed
/// cleanly.
fn open_database(dir: &Path) -> Result<redb::Database, DiskError> {
    std::fs::create_dir_all(dir).map_err(|error| unusable(dir, error))?;
    let file = dir.join(DATABASE_FILE);
    // redb "repairs" a file it has just created too: only an existing one was left unclean.
    let existed = std::fs::metadata(&file).is_ok_and(|meta| meta.len() > 0);
    let repaired = Arc::new(AtomicBool::new(false));
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_SIZE);
    builder.set_repair_callback({
        let repaired = repaired.clone();
        move |_| repaired.store(true, Ordering::Relaxed)
    });
    // redb asserts some of what it reads from the file's header (a file shorter than its
    // header says panics): a damaged file must be refused with a reason, not crash us.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(&file)));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(DiskError::InUse(dir.to_path_buf()))
        }
        Ok(Err(error)) => return Err(unusable(dir, error)),
        Err(_) => {
            return Err(unusable(
                dir,
                format!("{} is damaged (redb could not read it)", file.display()),
            ))
        }
    };
    if existed && repaired.load(Ordering::Relaxed) {
        // redb checks every commit's checksum: one cut short by the crash is dropped whole,
        // and none of its publishes had been answered.
        tracing::warn!(
            "the data dir was not closed cleanly: recovered it up to its last complete commit"
        );
    }
    Ok(db)
}

impl DiskStore {
    /// Opens the store in `dir` (created if missing) and loads what it holds.
    pub async fn open(
        dir: &Path,
        fsync: Fsync,
        dead_letter_limit: usize,
    ) -> Result<Self, DiskError> {
        let db = open_database(dir)?;
        // A data dir that cannot be written is refused now, not at the first publish.
        sync(&db).map_err(|error| unusable(dir, error))?;
        let memory = MemoryStore::with_dead_letter_limit(dead_letter_limit);
        let Loaded {
            topic_ids,
            taken,
            reserved,
            dead_letters,
            stale_dead_letters,
            ..
        } = load(&db, &memory, dead_letter_limit)
            .await
            .map_err(|error| unusable(dir, error))?;
        let (writes, pending) = mpsc::channel();
        let reserved = Arc::new(AtomicU64::new(reserved));
        let written = Written {
            taken,
            reserved: reserved.clone(),
            settled_early: Default::default(),
            dead_letters,
            dead_letter_limit,
            stale_dead_letters,
        };
        let settlements = Settlements::default();
        let writer = std::thread::Builder::new()
            .name("pairbroker-disk".into())
            .spawn({
                let settlements = settlements.clone();
                move || write_loop(db, pending, settlements, fsync, written)
            })
            .map_err(|error| unusable(dir, error))?;
        Ok(Self {
            memory,
            topic_ids: RwLock::new(topic_ids),
            writes,
            settlements,
            unconfirmed: Unconfirmed::default(),
            reserved,
            writer: Some(writer),
            #[cfg(test)]
            scratch: None,
        })
    }

    /// The number of `topic`, if it exists.
    fn topic_id(&self, topic: &str) -> Result<TopicId, QueueError> {
        self.topic_ids
            .read()
            .get(topic)
            .copied()
            .ok_or_else(|| QueueError::NoSuchTopic(topic.to_owned()))
    }

    /// Sends a change to the writer: what the receiver gets once it is on disk.
    fn send(&self, change: Change) -> Result<OnDisk, QueueError> {
        let (done, written) = oneshot::channel();
        self.writes
            .send(Write {
                change,
                done: Some(done),
            })
            .map_err(|_| QueueError::Storage(WRITER_GONE.into()))?;
        Ok(written)
    }

    /// Hands a change to the writer without waiting: it reaches the disk with the next commit.
    fn write_later(&self, change: Change) {
        let mut settlements = self.settlements.lock();
        let first = settlements.is_empty();
        settlements.push(change);
        drop(settlements);
        if first {
            let _ = self.writes.send(Write {
                change: Change::Settlements,
                done: None,
            });
        }
    }

    /// Numbers a new topic and sends it to the writer, unless another creator has: what to wait
    /// for, and whether it was numbered here.
    fn number_topic(&self, topic: &str, capacity: usize) -> Result<(OnDisk, bool), QueueError> {
        let mut ids = self.topic_ids.write();
        if ids.contains_key(topic) {
            return Ok((self.send(Change::Settlements)?, false));
        }
        let number = ids
            .values()
            .max()
            .map_or(Some(0), |highest| highest.checked_add(1))
            .ok_or_else(|| QueueError::Storage("no more topics fit in the data dir".into()))?;
        let written = self.send(Change::Topic {
            name: Arc::from(topic),
            topic: number,
            capacity: capacity as u64,
        })?;
        ids.insert(Arc::from(topic), number);
        Ok((written, true))
    }

    /// Waits until the jobs of one publish are on disk, or all completed with their ids
    /// reserved on disk already.
    async fn confirmed(
        &self,
        written: OnDisk,
        confirmation: &Confirmation,
        highest: JobId,
    ) -> Result<(), QueueError> {
        let mut written = std::pin::pin!(on_disk(written));
        tokio::select! {
            outcome = &mut written => outcome,
            () = confirmation.all_completed() => {
                // Completed jobs need no disk, but their ids must not be given again after a
                // crash: below the reservation on disk, they are not.
                if highest < self.reserved.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    written.await
                }
            }
        }
    }
}

/// Waits for the writer's answer to a change.
async fn on_disk(written: OnDisk) -> Result<(), QueueError> {
    written
        .await
        .map_err(|_| QueueError::Storage(WRITER_GONE.into()))?
        .map_err(QueueError::Storage)
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // A closed channel ends the writer after its last commit and sync.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.writes, closed));
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl JobStore for DiskStore {
    async fn create_topic(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<TopicCreation, QueueError> {
        if self.memory.has_topic(topic).await {
            // In the queue only once it is on disk.
            return self.memory.create_topic(topic, capacity).await;
        }
        // On disk before it is in the queue, so that no job published to it is committed
        // before the topic is. A creator that finds the topic numbered but not yet in the
        // queue waits for a commit after the first creator's.
        let (written, numbered_here) = self.number_topic(topic, capacity)?;
        if let Err(error) = on_disk(written).await {
            if numbered_here {
                // Not kept: the next creator writes it again.
                self.topic_ids.write().remove(topic);
            }
            return Err(error);
        }
        if !numbered_here && self.topic_id(topic).is_err() {
            // The first creator's write failed, and it took the number back.
            return Err(QueueError::Storage(format!(
                "the topic {topic:?} could not be stored"
            )));
        }
        self.memory.create_topic(topic, capacity).await
    }

    async fn has_topic(&self, topic: &str) -> bool {
        self.memory.has_topic(topic).await
    }

    async fn publish(&self, topic: &str, job: Job, room_by: Instant) -> Result<JobId, QueueError> {
        match self.publish_many(topic, vec![job], room_by).await {
            (ids, None) if ids.len() == 1 => Ok(ids[0]),
            (_, error) => Err(error.unwrap_or(QueueError::Storage(WRITER_GONE.into()))),
        }
    }

    async fn publish_many(
        &self,
        topic: &str,
        jobs: Vec<Job>,
        room_by: Instant,
    ) -> (Vec<JobId>, Option<QueueError>) {
        // Into the queue one by one, as there is room; onto the disk together, in one commit.
        // A job in the queue is acknowledged once it is on disk too, or completed; should the
        // publisher go away meanwhile, it stays: at least once, never lost.
        let number = match self.topic_id(topic) {
            Ok(number) => number,
            Err(error) => return (Vec::new(), Some(error)),
        };
        let confirmation = Confirmation::new();
        let mut tracked = Tracked {
            unconfirmed: &self.unconfirmed,
            ids: Vec::with_capacity(jobs.len()),
        };
        let mut unsent = Unsent {
            writes: &self.writes,
            topic: number,
            records: Vec::with_capacity(jobs.len()),
        };
        let mut refused = None;
        for job in jobs {
            match self.memory.publish_queued(topic, job, room_by).await {
                Ok(queued) => {
                    self.unconfirmed.track(queued.id, &confirmation);
                    tracked.ids.push(queued.id);
                    unsent.records.push((queued.id, to_record(&queued)));
                }
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        if unsent.records.is_empty() {
            return (tracked.finish(), refused);
        }
        let written = match self.send(Change::Jobs {
            topic: number,
            jobs: std::mem::take(&mut unsent.records),
        }) {
            Ok(written) => written,
            Err(error) => return (Vec::new(), Some(error)),
        };
        confirmation.one_less();
        let highest = tracked.ids.iter().copied().max().unwrap_or_default();
        let outcome = self.confirmed(written, &confirmation, highest).await;
        let ids = tracked.finish();
        match outcome {
            Ok(()) => (ids, refused),
            Err(error) => (Vec::new(), Some(error)),
        }
    }

    async fn take(&self, topic: &str) -> Result<Delivery, QueueError> {
        let delivery = self.memory.take(topic).await?;
        if let Ok(number) = self.topic_id(topic) {
            self.write_later(Change::Taken {
                topic: number,
                id: delivery.id,
            });
        }
        Ok(delivery)
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.memory.complete(delivery).await?;
        self.unconfirmed.completed(delivery.id);
        // Not waited for: lost in a crash, the job is delivered again (at least once).
        self.write_later(Change::Settled { id: delivery.id });
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<(), QueueError> {
        let letter = self.memory.dead_letter_now(delivery, error, factory)?;
        self.write_later(Change::Dead {
            topic: self.topic_id(&delivery.topic)?,
            id: delivery.id,
            letter: dead_letter_record(&letter),
        });
        Ok(())
    }

    async fn dead_letters(&self, topic: &str) -> Result<DeadLetters, QueueError> {
        self.memory.dead_letters(topic).await
    }

    async fn requeue(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.memory.requeue(delivery).await
    }

    async fn requeue_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        self.memory.requeue_all(deliveries).await
    }

    async fn topic_names(&self) -> Vec<String> {
        self.memory.topic_names().await
    }

    async fn counts(&self, topic: &str) -> Result<TopicCounts, QueueError> {
        self.memory.counts(topic).await
    }
}

#[cfg(test)]
pub(crate) mod tests;
