//! [`DiskStore`]: topics kept on local disk (`--data-dir`), in a redb database.
//!
//! The queue itself (order, waiting, in-flight bookkeeping) is a [`MemoryStore`]; the disk holds
//! what must survive the process: every topic, every job not yet settled (ready or in flight),
//! and the dead letters. One writer thread applies the changes in transactions: the changes that
//! arrive while a transaction commits go into the next one (group commit), and a publish is
//! answered only once the transaction that holds its job is on disk.
//!
//! After a restart every stored job is ready again, in the order of its id: a job that was in
//! flight when the broker stopped is not told apart from one that was waiting.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use stubs::{DeadLetter, DeadLetters, Job, JobError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::compact::{from_record, to_record, QueuedJob};
use super::{Delivery, JobId, JobStore, MemoryStore, QueueError, TopicCreation, TopicStats};

const TOPICS: TableDefinition<&str, u64> = TableDefinition::new("topics");
const JOBS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("jobs");
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");

/// Why a change was not written when the writer thread is gone.
const WRITER_GONE: &str = "the disk writer has stopped";

/// The most changes one transaction carries.
const MAX_GROUP: usize = 4_096;

/// When a transaction is synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before any publish it holds is answered: nothing acknowledged is lost, even on power loss.
    Always,
    /// At least this often, and before the broker stops: a power cut may lose the publishes
    /// acknowledged in the last interval; a broker crash loses nothing the kernel has.
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

enum Change {
    Topic {
        name: String,
        capacity: u64,
    },
    Job {
        topic: String,
        id: JobId,
        record: Vec<u8>,
    },
    Settled {
        topic: String,
        id: JobId,
    },
    Dead {
        topic: String,
        id: JobId,
        letter: Vec<u8>,
    },
}

struct Write {
    change: Change,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Topics on local disk.
pub struct DiskStore {
    memory: MemoryStore,
    writes: mpsc::Sender<Write>,
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

impl DiskStore {
    /// Opens the store in `dir` (created if missing) and loads what it holds.
    pub async fn open(
        dir: &Path,
        fsync: Fsync,
        dead_letter_limit: usize,
    ) -> Result<Self, DiskError> {
        std::fs::create_dir_all(dir).map_err(|error| unusable(dir, error))?;
        let db = match redb::Database::create(dir.join("pairbroker.redb")) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(DiskError::InUse(dir.to_path_buf()))
            }
            Err(error) => return Err(unusable(dir, error)),
        };
        let memory = MemoryStore::with_dead_letter_limit(dead_letter_limit);
        load(&db, &memory)
            .await
            .map_err(|error| unusable(dir, error))?;
        let (writes, pending) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("pairbroker-disk".into())
            .spawn(move || write_loop(db, pending, fsync))
            .map_err(|error| unusable(dir, error))?;
        Ok(Self {
            memory,
            writes,
            writer: Some(writer),
            #[cfg(test)]
            scratch: None,
        })
    }

    /// Sends a change to the writer and waits until it is on disk.
    async fn write(&self, change: Change) -> Result<(), QueueError> {
        let (done, written) = oneshot::channel();
        self.writes
            .send(Write {
                change,
                done: Some(done),
            })
            .map_err(|_| QueueError::Storage(WRITER_GONE.into()))?;
        written
            .await
            .map_err(|_| QueueError::Storage(WRITER_GONE.into()))?
            .map_err(QueueError::Storage)
    }

    /// Sends a change to the writer without waiting: it reaches the disk with the next commit.
    fn write_later(&self, change: Change) {
        let _ = self.writes.send(Write { change, done: None });
    }
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

/// Loads every topic, job and dead letter of `db` into `memory`.
async fn load(db: &redb::Database, memory: &MemoryStore) -> Result<(), String> {
    let txn = db.begin_read().map_err(|error| error.to_string())?;
    let topics = match txn.open_table(TOPICS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(error) => return Err(error.to_string()),
    };
    for entry in topics.iter().map_err(|error| error.to_string())? {
        let (name, capacity) = entry.map_err(|error| error.to_string())?;
        let capacity = usize::try_from(capacity.value()).unwrap_or(usize::MAX);
        let _ = memory.create_topic(name.value(), capacity).await;
    }
    let mut jobs = 0u64;
    let mut unreadable = 0u64;
    if let Ok(table) = txn.open_table(JOBS) {
        for entry in table.iter().map_err(|error| error.to_string())? {
            let (key, record) = entry.map_err(|error| error.to_string())?;
            let (topic, _) = key.value();
            match from_record(record.value()) {
                Some(queued) if memory.restore(topic, queued).is_ok() => jobs += 1,
                _ => unreadable += 1,
            }
        }
    }
    if let Ok(table) = txn.open_table(DEAD) {
        for entry in table.iter().map_err(|error| error.to_string())? {
            let (key, letter) = entry.map_err(|error| error.to_string())?;
            let (topic, _) = key.value();
            let restored = dead_letter_from(letter.value())
                .is_some_and(|letter| memory.restore_dead_letter(topic, letter).is_ok());
            if !restored {
                unreadable += 1;
            }
        }
    }
    tracing::info!(jobs, unreadable, "loaded the data dir");
    Ok(())
}

fn write_loop(db: redb::Database, pending: mpsc::Receiver<Write>, fsync: Fsync) {
    let mut last_sync = std::time::Instant::now();
    let mut unsynced = false;
    loop {
        let first = match fsync {
            Fsync::Interval(every) if unsynced => {
                match pending.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(write) => write,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(error) = sync(&db) {
                            tracing::error!(%error, "cannot sync the data dir");
                        }
                        (last_sync, unsynced) = (std::time::Instant::now(), false);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match pending.recv() {
                Ok(write) => write,
                Err(_) => break,
            },
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(write) => group.push(write),
                Err(_) => break,
            }
        }
        let durable = match fsync {
            Fsync::Always => true,
            Fsync::Never => false,
            Fsync::Interval(every) => last_sync.elapsed() >= every,
        };
        let result = commit(&db, &group, durable).map_err(|error| {
            tracing::error!(%error, "cannot write to the data dir");
            error
        });
        if durable {
            (last_sync, unsynced) = (std::time::Instant::now(), false);
        } else {
            unsynced = true;
        }
        for write in group {
            if let Some(done) = write.done {
                let _ = done.send(result.clone());
            }
        }
    }
    // The store is gone (the broker stops): what is not synced yet is synced now.
    if unsynced {
        if let Err(error) = sync(&db) {
            tracing::error!(%error, "cannot sync the data dir");
        }
    }
}

/// Makes every commit so far durable: an empty transaction, synced.
fn sync(db: &redb::Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|error| error.to_string())?;
    txn.commit().map_err(|error| error.to_string())
}

fn commit(db: &redb::Database, group: &[Write], durable: bool) -> Result<(), String> {
    let text = |error: &dyn std::fmt::Display| error.to_string();
    let mut txn = db.begin_write().map_err(|e| text(&e))?;
    txn.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(|e| text(&e))?;
    {
        let mut topics = txn.open_table(TOPICS).map_err(|e| text(&e))?;
        let mut jobs = txn.open_table(JOBS).map_err(|e| text(&e))?;
        let mut dead = txn.open_table(DEAD).map_err(|e| text(&e))?;
        for write in group {
            match &write.change {
                Change::Topic { name, capacity } => {
                    topics
                        .insert(name.as_str(), capacity)
                        .map_err(|e| text(&e))?;
                }
                Change::Job { topic, id, record } => {
                    jobs.insert((topic.as_str(), *id), record.as_slice())
                        .map_err(|e| text(&e))?;
                }
                Change::Settled { topic, id } => {
                    jobs.remove((topic.as_str(), *id)).map_err(|e| text(&e))?;
                }
                Change::Dead { topic, id, letter } => {
                    jobs.remove((topic.as_str(), *id)).map_err(|e| text(&e))?;
                    dead.insert((topic.as_str(), *id), letter.as_slice())
                        .map_err(|e| text(&e))?;
                }
            }
        }
    }
    txn.commit().map_err(|e| text(&e))
}

/// A dead letter as stored: its job's record, the error, when, and the factory.
fn dead_letter_record(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = to_record(&QueuedJob {
        id: letter.job_id,
        job: letter.job,
        attempts: 0,
        published_at: UNIX_EPOCH,
    });
    let record_length = bytes.len() as u8;
    bytes.insert(0, record_length);
    bytes.push(match letter.error {
        JobError::DivideByZero => 0,
        JobError::Overflow => 1,
    });
    bytes.extend_from_slice(&letter.failed_at_unix_ms.to_le_bytes());
    bytes.extend_from_slice(letter.factory.as_bytes());
    bytes
}

fn dead_letter_from(bytes: &[u8]) -> Option<DeadLetter> {
    let (&record_length, rest) = bytes.split_first()?;
    let (record, rest) = rest.split_at_checked(usize::from(record_length))?;
    let queued = from_record(record)?;
    let (&error, rest) = rest.split_first()?;
    let (failed_at, factory) = rest.split_at_checked(8)?;
    Some(DeadLetter {
        job_id: queued.id,
        job: queued.job,
        error: match error {
            0 => JobError::DivideByZero,
            1 => JobError::Overflow,
            _ => return None,
        },
        factory: String::from_utf8(factory.to_vec()).ok()?,
        failed_at_unix_ms: u64::from_le_bytes(failed_at.try_into().ok()?),
    })
}

impl JobStore for DiskStore {
    async fn create_topic(
        &self,
        topic: &str,
        capacity: usize,
    ) -> Result<TopicCreation, QueueError> {
        let created = self.memory.create_topic(topic, capacity).await?;
        if created == TopicCreation::Created {
            self.write(Change::Topic {
                name: topic.to_owned(),
                capacity: capacity as u64,
            })
            .await?;
        }
        Ok(created)
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
        // Into the queue one by one, as there is room; onto the disk together, in one commit
        // unless room ran out part-way. A job in the queue is acknowledged once it is on disk
        // too; should the publisher go away meanwhile, it stays: at least once, never lost.
        let mut ids = Vec::with_capacity(jobs.len());
        let mut written = Vec::with_capacity(jobs.len());
        let mut refused = None;
        for job in jobs {
            match self.memory.publish(topic, job, room_by).await {
                Ok(id) => {
                    let record = to_record(&QueuedJob {
                        id,
                        job,
                        attempts: 0,
                        published_at: SystemTime::now(),
                    });
                    let (done, on_disk) = oneshot::channel();
                    let change = Change::Job {
                        topic: topic.to_owned(),
                        id,
                        record,
                    };
                    if self
                        .writes
                        .send(Write {
                            change,
                            done: Some(done),
                        })
                        .is_err()
                    {
                        refused = Some(QueueError::Storage(WRITER_GONE.into()));
                        break;
                    }
                    ids.push(id);
                    written.push(on_disk);
                }
                Err(error) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        // Acknowledged only as far as the disk took them, in order.
        for (stored, on_disk) in written.into_iter().enumerate() {
            let outcome = on_disk.await.unwrap_or_else(|_| Err(WRITER_GONE.into()));
            if let Err(reason) = outcome {
                ids.truncate(stored);
                return (ids, Some(QueueError::Storage(reason)));
            }
        }
        (ids, refused)
    }

    async fn take(&self, topic: &str) -> Result<Delivery, QueueError> {
        self.memory.take(topic).await
    }

    async fn complete(&self, delivery: &Delivery) -> Result<(), QueueError> {
        self.memory.complete(delivery).await?;
        // Not waited for: lost in a crash, the job is delivered again (at least once).
        self.write_later(Change::Settled {
            topic: delivery.topic.to_string(),
            id: delivery.id,
        });
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: JobError,
        factory: &str,
    ) -> Result<(), QueueError> {
        self.memory.dead_letter(delivery, error, factory).await?;
        let failed_at_unix_ms = super::unix_ms_now();
        self.write_later(Change::Dead {
            topic: delivery.topic.to_string(),
            id: delivery.id,
            letter: dead_letter_record(&DeadLetter {
                job_id: delivery.id,
                job: delivery.job,
                error,
                factory: factory.to_owned(),
                failed_at_unix_ms,
            }),
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

    async fn stats(&self, topic: &str) -> Result<TopicStats, QueueError> {
        self.memory.stats(topic).await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;
    use stubs::Pair;

    /// A store in a fresh temporary folder, removed with the store.
    pub(crate) async fn scratch_store() -> DiskStore {
        let dir = tempfile::tempdir().unwrap();
        let mut store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        store.scratch = Some(dir);
        store
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn what_was_published_and_not_completed_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first_ids;
        {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 10).await.unwrap();
            let mut ids = Vec::new();
            for x in 0..4 {
                ids.push(
                    store
                        .publish("t", Pair { x, y: 2 }.into(), later())
                        .await
                        .unwrap(),
                );
            }
            let done = store.take("t").await.unwrap();
            store.complete(&done).await.unwrap();
            let failed = store.take("t").await.unwrap();
            store
                .dead_letter(&failed, JobError::Overflow, "127.0.0.1:9")
                .await
                .unwrap();
            let _in_flight = store.take("t").await.unwrap();
            first_ids = ids;
            // A last synced write, so that the unsynced settlements before it are on disk too.
            store.create_topic("u", 5).await.unwrap();
        }
        // The writer thread ends once the store is dropped; give it a moment to let go of the file.
        let store = loop {
            match DiskStore::open(dir.path(), Fsync::Always, 10).await {
                Err(DiskError::InUse(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.topic_names().await, vec!["t", "u"]);
        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.capacity, stats.ready, stats.failed), (10, 2, 1));
        let again: Vec<JobId> = vec![
            store.take("t").await.unwrap().id,
            store.take("t").await.unwrap().id,
        ];
        assert_eq!(
            again,
            first_ids[2..].to_vec(),
            "the job in flight first, in order"
        );
        let dead = store.dead_letters("t").await.unwrap();
        assert_eq!(dead.letters.len(), 1);
        assert_eq!(dead.letters[0].job_id, first_ids[1]);
        assert_eq!(dead.letters[0].factory, "127.0.0.1:9");
        // New ids go on after the recovered ones.
        let next = store
            .publish("t", Pair { x: 9, y: 9 }.into(), later())
            .await
            .unwrap();
        assert!(next > first_ids[3]);
    }

    #[tokio::test]
    async fn with_an_interval_a_job_is_kept_and_synced_by_the_time_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let every = Fsync::Interval(Duration::from_millis(50));
        let id = {
            let store = DiskStore::open(dir.path(), every, 10).await.unwrap();
            store.create_topic("t", 10).await.unwrap();
            store
                .publish("t", Pair { x: 1, y: 2 }.into(), later())
                .await
                .unwrap()
        };
        let store = loop {
            match DiskStore::open(dir.path(), every, 10).await {
                Err(DiskError::InUse(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.take("t").await.unwrap().id, id);
    }

    #[tokio::test]
    async fn with_never_the_jobs_are_synced_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = DiskStore::open(dir.path(), Fsync::Never, 10).await.unwrap();
            store.create_topic("t", 10).await.unwrap();
            store
                .publish("t", Pair { x: 1, y: 2 }.into(), later())
                .await
                .unwrap()
        };
        let store = DiskStore::open(dir.path(), Fsync::Never, 10).await.unwrap();
        assert_eq!(store.take("t").await.unwrap().id, id);
    }

    #[tokio::test]
    async fn a_data_dir_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        let second = DiskStore::open(dir.path(), Fsync::Always, 10).await;
        assert!(matches!(second, Err(DiskError::InUse(_))), "{second:?}");
    }

    #[test]
    fn dead_letters_survive_their_encoding() {
        let letter = DeadLetter {
            job_id: 77,
            job: stubs::Triplet { x: -1, y: 0, z: 3 }.into(),
            error: JobError::DivideByZero,
            factory: "127.0.0.1:8050".into(),
            failed_at_unix_ms: 1_764_000_000_000,
        };
        assert_eq!(dead_letter_from(&dead_letter_record(&letter)), Some(letter));
        assert_eq!(dead_letter_from(&[3, 1, 2]), None);
    }
}
