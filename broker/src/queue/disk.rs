//! [`DiskStore`]: topics kept on local disk (`--data-dir`), in a redb database.
//!
//! The queue itself (order, waiting, in-flight bookkeeping) is a [`MemoryStore`]; the disk holds
//! what must survive the process: every topic, every job not yet settled (ready or in flight),
//! and the dead letters. One writer thread applies the changes in transactions: the changes that
//! arrive while a transaction commits go into the next one (group commit), and a publish is
//! answered once each of its jobs is on disk or completed, whichever comes first. A job settled
//! before its transaction began is never written at all.
//!
//! After a restart every stored job is ready again, in the order of its id. Each topic also
//! keeps the highest id ever taken from it: a stored job at or below that mark had been handed
//! to a factory, so it comes back counted as requeued, and at the head, where ids put it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use stubs::{DeadLetter, DeadLetters, Job, JobError};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::compact::{from_record, to_record, QueuedJob};
use super::{Delivery, JobId, JobStore, MemoryStore, QueueError, TopicCreation, TopicStats};

/// A topic's number, given in order of creation: stored jobs name their topic by it.
type TopicId = u32;

/// Topic name → (its number, its capacity).
const TOPICS: TableDefinition<&str, (TopicId, u64)> = TableDefinition::new("topics");
/// Job id → the topic's number (a varint) and the job's record; and, at keys from
/// [`MARKS`] up, two kinds of marks that change with nearly every commit. Kept at the top of
/// the jobs' own key space they sit in the leaf that new jobs dirty anyway: a table of their
/// own would cost a page more per commit, and a synced page costs about 15 µs here.
const JOBS: TableDefinition<JobId, &[u8]> = TableDefinition::new("jobs");
/// The first key that is a mark, not a job (ids count up from 0 and never get near it).
/// `MARKS + topic`: the highest job id taken from that topic, as 8 bytes, little-endian.
const MARKS: JobId = 1 << 63;
/// Above every id given so far, so that ids are never given twice, even across restarts.
const NEXT_ID: JobId = JobId::MAX;
/// Job id → the topic's number (a varint) and the dead letter.
const DEAD: TableDefinition<JobId, &[u8]> = TableDefinition::new("dead_letters");

/// The file in the data dir.
const DATABASE_FILE: &str = "pairbroker.redb";

/// Why a change was not written when the writer thread is gone.
const WRITER_GONE: &str = "the disk writer has stopped";

/// How long settlements (completions, takes, dead letters), which nobody waits for, may wait
/// for a publish to share its commit. A crash in this window delivers their jobs again.
const SETTLEMENTS_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// How far ahead of the highest id in use ids are reserved on disk (rewritten once half of
/// it is used): a publish answered because its jobs were completed, before they were written,
/// must not see its ids given again after a crash.
const ID_RESERVATION: JobId = 1 << 16;

/// The most changes one transaction carries.
const MAX_GROUP: usize = 4_096;

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

enum Change {
    Topic {
        name: Arc<str>,
        topic: TopicId,
        capacity: u64,
    },
    /// Jobs published together, with their records.
    Jobs {
        topic: TopicId,
        jobs: Vec<(JobId, Vec<u8>)>,
    },
    Taken {
        topic: TopicId,
        id: JobId,
    },
    Settled {
        id: JobId,
    },
    Dead {
        topic: TopicId,
        id: JobId,
        letter: Vec<u8>,
    },
    /// Settlements wait in the shared list.
    Settlements,
}

/// Changes nobody waits for (takes, completions, dead letters), handed to the writer without
/// waking it: it takes them with the next commit. Only the first of a batch wakes it
/// ([`Change::Settlements`]), and a busy broker makes thousands of them a second.
type Settlements = Arc<Mutex<Vec<Change>>>;

struct Write {
    change: Change,
    done: Option<oneshot::Sender<Result<(), String>>>,
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

/// What a data dir held when it was opened.
struct Loaded {
    topic_ids: HashMap<Arc<str>, TopicId>,
    taken: HashMap<TopicId, JobId>,
    /// Ids below it were reserved: the next one given is at least this.
    reserved: JobId,
    /// Each topic's dead letters, oldest first.
    dead_letters: HashMap<TopicId, VecDeque<JobId>>,
}

impl DiskStore {
    /// Opens the store in `dir` (created if missing) and loads what it holds.
    pub async fn open(
        dir: &Path,
        fsync: Fsync,
        dead_letter_limit: usize,
    ) -> Result<Self, DiskError> {
        std::fs::create_dir_all(dir).map_err(|error| unusable(dir, error))?;
        let file = dir.join(DATABASE_FILE);
        // redb "repairs" a file it has just created too: only an existing one was left unclean.
        let existed = std::fs::metadata(&file).is_ok_and(|meta| meta.len() > 0);
        let repaired = Arc::new(AtomicBool::new(false));
        let mut builder = redb::Builder::new();
        // redb's default cache (1 GiB) would let the broker's memory grow with the disk; the
        // queue itself is in memory already.
        builder.set_cache_size(16 * 1024 * 1024);
        builder.set_repair_callback({
            let repaired = repaired.clone();
            move |_| repaired.store(true, Ordering::Relaxed)
        });
        // redb asserts some of what it reads from the file's header (a file shorter than its
        // header says panics): a damaged file must be refused with a reason, not crash us.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(&file)));
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
        // A data dir that cannot be written is refused now, not at the first publish.
        sync(&db).map_err(|error| unusable(dir, error))?;
        let memory = MemoryStore::with_dead_letter_limit(dead_letter_limit);
        let loaded = load(&db, &memory)
            .await
            .map_err(|error| unusable(dir, error))?;
        let (writes, pending) = mpsc::channel();
        let reserved = Arc::new(AtomicU64::new(loaded.reserved));
        let written = Written {
            taken: loaded.taken,
            reserved: reserved.clone(),
            settled_early: HashSet::new(),
            dead_letters: loaded.dead_letters,
            dead_letter_limit,
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
            topic_ids: RwLock::new(loaded.topic_ids),
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
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(topic)
            .copied()
            .ok_or_else(|| QueueError::NoSuchTopic(topic.to_owned()))
    }

    /// Sends a change to the writer: what the receiver gets once it is on disk.
    fn send(&self, change: Change) -> Result<oneshot::Receiver<Result<(), String>>, QueueError> {
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
        let mut settlements = lock(&self.settlements);
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
}

/// Waits for the writer's answer to a change.
async fn on_disk(written: oneshot::Receiver<Result<(), String>>) -> Result<(), QueueError> {
    written
        .await
        .map_err(|_| QueueError::Storage(WRITER_GONE.into()))?
        .map_err(QueueError::Storage)
}

/// Published jobs whose publisher waits for their commit, by id. A job completed before its
/// commit needs no disk to be safe, so its publisher is answered once all of its jobs are
/// (as RabbitMQ confirms a persistent message that was consumed before it was written).
#[derive(Default)]
struct Unconfirmed(Mutex<HashMap<JobId, Arc<Confirmation>>>);

/// One publish: its jobs not yet completed, plus one while it is still adding jobs.
struct Confirmation {
    left: AtomicUsize,
    all_completed: Notify,
}

impl Confirmation {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            left: AtomicUsize::new(1),
            all_completed: Notify::new(),
        })
    }

    fn one_less(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_completed.notify_one();
        }
    }
}

impl Unconfirmed {
    fn track(&self, id: JobId, confirmation: &Arc<Confirmation>) {
        confirmation.left.fetch_add(1, Ordering::AcqRel);
        lock(&self.0).insert(id, confirmation.clone());
    }

    fn completed(&self, id: JobId) {
        let confirmation = lock(&self.0).remove(&id);
        if let Some(confirmation) = confirmation {
            confirmation.one_less();
        }
    }

    fn forget(&self, ids: &[JobId]) {
        let mut tracked = lock(&self.0);
        for id in ids {
            tracked.remove(id);
        }
    }
}

/// The ids of one publish, no longer tracked once it is answered or dropped.
struct Tracked<'a> {
    unconfirmed: &'a Unconfirmed,
    ids: Vec<JobId>,
}

impl Tracked<'_> {
    fn finish(mut self) -> Vec<JobId> {
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
struct Unsent<'a> {
    writes: &'a mpsc::Sender<Write>,
    topic: TopicId,
    records: Vec<(JobId, Vec<u8>)>,
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

/// A stored value: the topic's number as a varint, then `bytes`.
fn with_topic(topic: TopicId, bytes: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(5 + bytes.len());
    let mut rest = topic;
    while rest >= 0x80 {
        value.push((rest as u8) | 0x80);
        rest >>= 7;
    }
    value.push(rest as u8);
    value.extend_from_slice(bytes);
    value
}

/// Splits a value written by [`with_topic`].
fn split_topic(value: &[u8]) -> Option<(TopicId, &[u8])> {
    let mut topic: u32 = 0;
    for (at, &byte) in value.iter().enumerate().take(5) {
        topic |= u32::from(byte & 0x7f).checked_shl(7 * at as u32)?;
        if byte & 0x80 == 0 {
            return Some((topic, &value[at + 1..]));
        }
    }
    None
}

/// Loads every topic, job and dead letter of `db` into `memory`.
async fn load(db: &redb::Database, memory: &MemoryStore) -> Result<Loaded, String> {
    let text = |error: &dyn std::fmt::Display| error.to_string();
    let mut loaded = Loaded {
        topic_ids: HashMap::new(),
        taken: HashMap::new(),
        reserved: 0,
        dead_letters: HashMap::new(),
    };
    let txn = db.begin_read().map_err(|e| text(&e))?;
    let topics = match txn.open_table(TOPICS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(loaded),
        Err(error) => return Err(error.to_string()),
    };
    let mut names = HashMap::new();
    for entry in topics.iter().map_err(|e| text(&e))? {
        let (name, value) = entry.map_err(|e| text(&e))?;
        let (topic, capacity) = value.value();
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let name: Arc<str> = Arc::from(name.value());
        let _ = memory.create_topic(&name, capacity).await;
        names.insert(topic, name.clone());
        loaded.topic_ids.insert(name, topic);
    }
    let table = match txn.open_table(JOBS) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(error.to_string()),
    };
    if let Some(table) = &table {
        for entry in table.range(MARKS..).map_err(|e| text(&e))? {
            let (key, value) = entry.map_err(|e| text(&e))?;
            let Some(id) = mark_from(value.value()) else {
                continue;
            };
            match key.value() {
                NEXT_ID => {
                    loaded.reserved = id;
                    memory.continue_ids_from(id);
                }
                key => {
                    if let Ok(topic) = TopicId::try_from(key - MARKS) {
                        loaded.taken.insert(topic, id);
                    }
                }
            }
        }
    }
    let (mut jobs, mut requeued, mut unreadable) = (0u64, 0u64, 0u64);
    if let Some(table) = &table {
        for entry in table.range(..MARKS).map_err(|e| text(&e))? {
            let (key, value) = entry.map_err(|e| text(&e))?;
            let value = value.value();
            let restored = split_topic(value).and_then(|(topic, record)| {
                let name = names.get(&topic)?;
                let queued = from_record(record).filter(|queued| queued.id == key.value())?;
                let was_taken = loaded
                    .taken
                    .get(&topic)
                    .is_some_and(|&mark| queued.id <= mark);
                memory.restore(name, queued, was_taken).ok()?;
                Some(was_taken)
            });
            match restored {
                Some(was_taken) => {
                    jobs += 1;
                    requeued += u64::from(was_taken);
                }
                None => unreadable += 1,
            }
        }
    }
    if let Ok(table) = txn.open_table(DEAD) {
        let mut letters = Vec::new();
        for entry in table.iter().map_err(|e| text(&e))? {
            let (key, value) = entry.map_err(|e| text(&e))?;
            let read = split_topic(value.value()).and_then(|(topic, letter)| {
                let letter =
                    dead_letter_from(letter).filter(|letter| letter.job_id == key.value())?;
                names.contains_key(&topic).then_some((topic, letter))
            });
            match read {
                Some(read) => letters.push(read),
                None => unreadable += 1,
            }
        }
        // The table is in the order of job ids; the list is in the order the jobs failed, to
        // the millisecond their letters keep.
        letters.sort_by_key(|(_, letter)| (letter.failed_at_unix_ms, letter.job_id));
        for (topic, letter) in letters {
            let id = letter.job_id;
            match memory.restore_dead_letter(&names[&topic], letter) {
                Ok(()) => loaded.dead_letters.entry(topic).or_default().push_back(id),
                Err(_) => unreadable += 1,
            }
        }
    }
    if unreadable > 0 {
        tracing::warn!(
            "the data dir holds {unreadable} records that cannot be read: they were left out"
        );
    }
    tracing::info!(
        "loaded the data dir: {} topics and {jobs} jobs, of which {requeued} were in flight and \
         go back to their topics",
        loaded.topic_ids.len()
    );
    Ok(loaded)
}

fn write_loop(
    db: redb::Database,
    pending: mpsc::Receiver<Write>,
    settlements: Settlements,
    fsync: Fsync,
    mut written: Written,
) {
    let mut last_sync = std::time::Instant::now();
    let mut unsynced = false;
    loop {
        let first = match fsync {
            Fsync::Interval(every) if unsynced => {
                match pending.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(write) => write,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(error) = sync(&db) {
                            tracing::error!("cannot sync the data dir: {error}");
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
        let settle_by = std::time::Instant::now() + SETTLEMENTS_WAIT;
        let mut someone_waits = first.done.is_some();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            let next = match pending.try_recv() {
                Ok(write) => Some(write),
                Err(mpsc::TryRecvError::Empty) if !someone_waits => {
                    // Only settlements so far, which nobody waits for: they wait for a change
                    // that somebody does, so that a commit of settlements alone never holds up
                    // a publish behind its sync.
                    let left = settle_by.saturating_duration_since(std::time::Instant::now());
                    pending.recv_timeout(left).ok()
                }
                Err(_) => None,
            };
            let Some(write) = next else { break };
            someone_waits |= write.done.is_some();
            group.push(write);
        }
        group.extend(take_settlements(&settlements));
        if group
            .iter()
            .all(|write| write.done.is_none() && matches!(write.change, Change::Settlements))
        {
            // A wake-up whose settlements an earlier commit took: nothing to write.
            continue;
        }
        let durable = match fsync {
            Fsync::Always => true,
            Fsync::Never => false,
            Fsync::Interval(every) => last_sync.elapsed() >= every,
        };
        let result = commit(&db, &group, durable, &mut written).map_err(|error| {
            tracing::error!("cannot write to the data dir: {error}");
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
    // The store is gone (the broker stops): the last settlements are written, and what is not
    // synced yet is synced now.
    let last = take_settlements(&settlements);
    if !last.is_empty() {
        match commit(&db, &last, true, &mut written) {
            Ok(()) => unsynced = false,
            Err(error) => tracing::error!("cannot write to the data dir: {error}"),
        }
    }
    if unsynced {
        if let Err(error) = sync(&db) {
            tracing::error!("cannot sync the data dir: {error}");
        }
    }
}

/// The settlements handed over so far, as writes nobody waits for.
fn take_settlements(settlements: &Settlements) -> Vec<Write> {
    std::mem::take(&mut *lock(settlements))
        .into_iter()
        .map(|change| Write { change, done: None })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes every commit so far durable: an empty transaction, synced.
fn sync(db: &redb::Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(|error| error.to_string())?;
    txn.commit().map_err(|error| error.to_string())
}

/// What the writer remembers between transactions.
#[derive(Default)]
struct Written {
    /// Each topic's highest id taken, as on disk.
    taken: HashMap<TopicId, JobId>,
    /// Ids below this are reserved on disk ([`NEXT_ID`]): never given again, even after a
    /// crash. Shared with the store, which answers a publish on completion only below it.
    reserved: Arc<AtomicU64>,
    /// Jobs settled before their own insert reached the writer (a publisher whose batch waited
    /// for room part-way): their insert is skipped when it comes.
    settled_early: HashSet<JobId>,
    /// Each topic's dead letters on disk, oldest first.
    dead_letters: HashMap<TopicId, VecDeque<JobId>>,
    /// How many dead letters a topic keeps, on disk as in memory.
    dead_letter_limit: usize,
}

/// Removes a settled job from the table, unless it was never written; remembers one whose
/// insert is still to come.
fn forget(
    id: JobId,
    jobs: &mut redb::Table<JobId, &[u8]>,
    never_written: &mut HashSet<JobId>,
    settled_early: &mut HashSet<JobId>,
) -> Result<(), redb::StorageError> {
    if !never_written.remove(&id) && jobs.remove(id)?.is_none() {
        settled_early.insert(id);
    }
    Ok(())
}

/// Writes `group` in one transaction. What the writer remembers changes only once it holds.
fn commit(
    db: &redb::Database,
    group: &[Write],
    durable: bool,
    written: &mut Written,
) -> Result<(), String> {
    let text = |error: &dyn std::fmt::Display| error.to_string();
    // A job published and settled within the group is never written: neither its insert nor
    // its removal.
    let settled_here: HashSet<JobId> = group
        .iter()
        .filter_map(|write| match write.change {
            Change::Settled { id } | Change::Dead { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    let mut never_written = HashSet::new();
    let mut settled_early = written.settled_early.clone();
    let mut marks: HashMap<TopicId, JobId> = HashMap::new();
    let mut new_dead_letters: HashMap<TopicId, Vec<JobId>> = HashMap::new();
    let mut highest: Option<JobId> = None;
    let new_reservation;
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
                Change::Topic {
                    name,
                    topic,
                    capacity,
                } => {
                    topics
                        .insert(&**name, (*topic, *capacity))
                        .map_err(|e| text(&e))?;
                }
                Change::Jobs { topic, jobs: batch } => {
                    for (id, record) in batch {
                        highest = highest.max(Some(*id));
                        if settled_early.remove(id) {
                            continue;
                        }
                        if settled_here.contains(id) {
                            never_written.insert(*id);
                            continue;
                        }
                        jobs.insert(id, with_topic(*topic, record).as_slice())
                            .map_err(|e| text(&e))?;
                    }
                }
                Change::Taken { topic, id } => {
                    highest = highest.max(Some(*id));
                    let mark = marks.entry(*topic).or_default();
                    *mark = (*mark).max(*id);
                }
                Change::Settlements => {}
                Change::Settled { id } => {
                    forget(*id, &mut jobs, &mut never_written, &mut settled_early)
                        .map_err(|e| text(&e))?;
                }
                Change::Dead { topic, id, letter } => {
                    forget(*id, &mut jobs, &mut never_written, &mut settled_early)
                        .map_err(|e| text(&e))?;
                    if written.dead_letter_limit > 0 {
                        dead.insert(id, with_topic(*topic, letter).as_slice())
                            .map_err(|e| text(&e))?;
                        new_dead_letters.entry(*topic).or_default().push(*id);
                    }
                }
            }
        }
        // The disk keeps as many dead letters as memory does: the oldest go first.
        for (topic, added) in &new_dead_letters {
            let kept = written.dead_letters.get(topic);
            let total = kept.map_or(0, VecDeque::len) + added.len();
            let oldest = kept.into_iter().flatten().chain(added);
            for id in oldest.take(total.saturating_sub(written.dead_letter_limit)) {
                dead.remove(id).map_err(|e| text(&e))?;
            }
        }
        marks.retain(|topic, id| written.taken.get(topic).is_none_or(|mark| *id > *mark));
        for (topic, id) in &marks {
            jobs.insert(MARKS + JobId::from(*topic), id.to_le_bytes().as_slice())
                .map_err(|e| text(&e))?;
        }
        let needed = highest.map(|id| id.saturating_add(1 + ID_RESERVATION / 2));
        new_reservation = match needed {
            Some(needed) if needed > written.reserved.load(Ordering::Acquire) => {
                let reservation = needed.saturating_add(ID_RESERVATION / 2);
                jobs.insert(NEXT_ID, reservation.to_le_bytes().as_slice())
                    .map_err(|e| text(&e))?;
                Some(reservation)
            }
            _ => None,
        };
    }
    txn.commit().map_err(|e| text(&e))?;
    written.taken.extend(marks);
    written.settled_early = settled_early;
    for (topic, added) in new_dead_letters {
        let kept = written.dead_letters.entry(topic).or_default();
        kept.extend(added);
        let excess = kept.len().saturating_sub(written.dead_letter_limit);
        kept.drain(..excess);
    }
    if let Some(reservation) = new_reservation {
        written.reserved.store(reservation, Ordering::Release);
    }
    Ok(())
}

/// A mark's value, as [`MARKS`] and [`NEXT_ID`] keep it.
fn mark_from(value: &[u8]) -> Option<JobId> {
    Some(JobId::from_le_bytes(value.try_into().ok()?))
}

/// A dead letter as stored: its job's record, the error (a code: 0 division by zero,
/// 1 overflow, 2 another reason, then the reason; 3 undeliverable, then the deliveries and the
/// reason), when, and the factory.
fn dead_letter_record(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = to_record(&QueuedJob {
        id: letter.job_id,
        job: letter.job,
        attempts: 0,
        published_at: UNIX_EPOCH,
    });
    let record_length = bytes.len() as u8;
    bytes.insert(0, record_length);
    match &letter.error {
        JobError::DivideByZero => bytes.push(0),
        JobError::Overflow => bytes.push(1),
        JobError::Other { reason } => {
            bytes.push(2);
            push_reason(&mut bytes, reason);
        }
        JobError::Undeliverable { deliveries, reason } => {
            bytes.push(3);
            bytes.extend_from_slice(&deliveries.to_le_bytes());
            push_reason(&mut bytes, reason);
        }
    }
    bytes.extend_from_slice(&letter.failed_at_unix_ms.to_le_bytes());
    bytes.extend_from_slice(letter.factory.as_bytes());
    bytes
}

/// Appends `reason` with its length in two bytes, cut to what they can say.
fn push_reason(bytes: &mut Vec<u8>, reason: &str) {
    let reason = truncated(reason, usize::from(u16::MAX));
    bytes.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    bytes.extend_from_slice(reason.as_bytes());
}

/// A reason written by [`push_reason`], and the bytes after it.
fn reason_from(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (length, rest) = bytes.split_at_checked(2)?;
    let length = u16::from_le_bytes(length.try_into().ok()?);
    let (reason, rest) = rest.split_at_checked(usize::from(length))?;
    Some((String::from_utf8(reason.to_vec()).ok()?, rest))
}

/// The longest start of `text` that is at most `limit` bytes and ends on a character.
fn truncated(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn dead_letter_from(bytes: &[u8]) -> Option<DeadLetter> {
    let (&record_length, rest) = bytes.split_first()?;
    let (record, rest) = rest.split_at_checked(usize::from(record_length))?;
    let queued = from_record(record)?;
    let (&code, rest) = rest.split_first()?;
    let (error, rest) = match code {
        0 => (JobError::DivideByZero, rest),
        1 => (JobError::Overflow, rest),
        2 => {
            let (reason, rest) = reason_from(rest)?;
            (JobError::Other { reason }, rest)
        }
        3 => {
            let (deliveries, rest) = rest.split_at_checked(4)?;
            let deliveries = u32::from_le_bytes(deliveries.try_into().ok()?);
            let (reason, rest) = reason_from(rest)?;
            (JobError::Undeliverable { deliveries, reason }, rest)
        }
        _ => return None,
    };
    let (failed_at, factory) = rest.split_at_checked(8)?;
    Some(DeadLetter {
        job_id: queued.id,
        job: queued.job,
        error,
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
        if self.memory.has_topic(topic).await {
            // In the queue only once it is on disk.
            return self.memory.create_topic(topic, capacity).await;
        }
        // On disk before it is in the queue, so that no job published to it is committed
        // before the topic is. A creator that finds the topic numbered but not yet in the
        // queue waits for a commit after the first creator's.
        let (written, created_here) = {
            let mut ids = self
                .topic_ids
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if ids.contains_key(topic) {
                (self.send(Change::Settlements)?, None)
            } else {
                let number = ids
                    .values()
                    .max()
                    .map_or(Some(0), |highest| highest.checked_add(1))
                    .ok_or_else(|| {
                        QueueError::Storage("no more topics fit in the data dir".into())
                    })?;
                let written = self.send(Change::Topic {
                    name: Arc::from(topic),
                    topic: number,
                    capacity: capacity as u64,
                })?;
                ids.insert(Arc::from(topic), number);
                (written, Some(number))
            }
        };
        if let Err(error) = on_disk(written).await {
            if created_here.is_some() {
                // Not kept: the next creator writes it again.
                self.topic_ids
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(topic);
            }
            return Err(error);
        }
        if created_here.is_none() && self.topic_id(topic).is_err() {
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
            match self.memory.publish(topic, job, room_by).await {
                Ok(id) => {
                    self.unconfirmed.track(id, &confirmation);
                    tracked.ids.push(id);
                    unsent.records.push((
                        id,
                        to_record(&QueuedJob {
                            id,
                            job,
                            attempts: 0,
                            published_at: SystemTime::now(),
                        }),
                    ));
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
        let mut written = std::pin::pin!(on_disk(written));
        let outcome = tokio::select! {
            outcome = &mut written => outcome,
            () = confirmation.all_completed.notified() => {
                // Completed jobs need no disk, but their ids must not be given again after a
                // crash: below the reservation on disk, they are not.
                if highest < self.reserved.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    written.await
                }
            }
        };
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
        self.memory
            .dead_letter(delivery, error.clone(), factory)
            .await?;
        let failed_at_unix_ms = super::unix_ms_now();
        self.write_later(Change::Dead {
            topic: self.topic_id(&delivery.topic)?,
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
        // Dropped, the store joined its writer: the file is free.
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        assert_eq!(store.topic_names().await, vec!["t", "u"]);
        let stats = store.stats("t").await.unwrap();
        assert_eq!(
            (stats.capacity, stats.ready, stats.failed, stats.requeued),
            (10, 2, 1, 1),
            "the job in flight counts as requeued"
        );
        let (in_flight, waiting) = (
            store.take("t").await.unwrap(),
            store.take("t").await.unwrap(),
        );
        assert_eq!(
            (in_flight.id, waiting.id),
            (first_ids[2], first_ids[3]),
            "the job in flight first, in order"
        );
        assert_eq!(
            (in_flight.attempt, waiting.attempt),
            (2, 1),
            "the job in flight was taken once before"
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
    async fn an_undeliverable_job_is_still_a_dead_letter_and_counted_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let undeliverable = JobError::Undeliverable {
            deliveries: 3,
            reason: "connection closed".into(),
        };
        let id = {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 10).await.unwrap();
            let id = store
                .publish("t", Pair { x: 5, y: 0 }.into(), later())
                .await
                .unwrap();
            let delivery = store.take("t").await.unwrap();
            store
                .dead_letter(&delivery, undeliverable.clone(), "127.0.0.1:9")
                .await
                .unwrap();
            id
        };
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.failed, stats.undeliverable, stats.ready), (1, 1, 0));
        let dead = store.dead_letters("t").await.unwrap();
        assert_eq!(dead.letters.len(), 1);
        assert_eq!(
            (dead.letters[0].job_id, &dead.letters[0].error),
            (id, &undeliverable)
        );
    }

    #[tokio::test]
    async fn ids_are_not_given_again_after_a_restart_even_once_every_job_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 10).await.unwrap();
            let mut last = 0;
            for x in 0..3 {
                last = store
                    .publish("t", Pair { x, y: 2 }.into(), later())
                    .await
                    .unwrap();
                let delivery = store.take("t").await.unwrap();
                store.complete(&delivery).await.unwrap();
            }
            last
        };
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        assert_eq!(store.stats("t").await.unwrap().ready, 0);
        let next = store
            .publish("t", Pair { x: 9, y: 9 }.into(), later())
            .await
            .unwrap();
        assert!(next > last, "{next} after {last}");
    }

    #[tokio::test]
    async fn the_last_settlements_are_written_when_the_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let kept = {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 10).await.unwrap();
            let (ids, _) = store
                .publish_many(
                    "t",
                    vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()],
                    later(),
                )
                .await;
            let done = store.take("t").await.unwrap();
            store.complete(&done).await.unwrap();
            ids[1]
        };
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        let stats = store.stats("t").await.unwrap();
        assert_eq!((stats.ready, stats.requeued), (1, 0));
        assert_eq!(store.take("t").await.unwrap().id, kept);
    }

    /// A store whose writer is this test: the writes it would commit come out of the receiver.
    async fn store_with_a_stalled_writer() -> (DiskStore, mpsc::Receiver<Write>) {
        let mut store = scratch_store().await;
        let (writes, pending) = mpsc::channel();
        // The real writer sees its channel closed and ends.
        drop(std::mem::replace(&mut store.writes, writes));
        (store, pending)
    }

    type Publish = tokio::task::JoinHandle<(Vec<JobId>, Option<QueueError>)>;

    fn spawn_publish(store: &Arc<DiskStore>, jobs: &[Job]) -> Publish {
        let (store, jobs) = (store.clone(), jobs.to_vec());
        tokio::spawn(async move { store.publish_many("u", jobs, later()).await })
    }

    async fn take_and_complete(store: &DiskStore, jobs: usize) {
        for _ in 0..jobs {
            let delivery = store.take("u").await.unwrap();
            store.complete(&delivery).await.unwrap();
        }
    }

    /// The answer the stalled writer owes for the next published batch.
    async fn next_batch_write(
        pending: &mpsc::Receiver<Write>,
    ) -> oneshot::Sender<Result<(), String>> {
        loop {
            match pending.try_recv() {
                Ok(Write {
                    change: Change::Jobs { .. },
                    done: Some(done),
                }) => return done,
                Ok(_) => {}
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }

    async fn assert_unanswered(publish: &mut Publish, why: &str) {
        let waited = tokio::time::timeout(Duration::from_millis(50), publish).await;
        assert!(waited.is_err(), "{why}");
    }

    #[tokio::test]
    async fn a_publish_is_answered_once_its_jobs_are_on_disk_or_completed() {
        let (store, pending) = store_with_a_stalled_writer().await;
        let store = Arc::new(store);
        // A topic, as the writer would have stored it.
        store.memory.create_topic("u", 10).await.unwrap();
        lock_topic_ids(&store).insert(Arc::from("u"), 1);
        let jobs: Vec<Job> = vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()];

        // Completed, but their ids are not reserved on disk yet: answered only by the disk.
        let mut publish = spawn_publish(&store, &jobs);
        take_and_complete(&store, 2).await;
        let write = next_batch_write(&pending).await;
        assert_unanswered(
            &mut publish,
            "answered with ids that a crash could give again",
        )
        .await;
        write.send(Ok(())).unwrap();
        assert_eq!(publish.await.unwrap().0.len(), 2);
        store.reserved.store(1 << 20, Ordering::Release);

        // Completed before any commit, ids reserved: answered.
        let publish = spawn_publish(&store, &jobs);
        take_and_complete(&store, 2).await;
        let (ids, refused) = tokio::time::timeout(Duration::from_secs(10), publish)
            .await
            .expect("a publish of completed jobs waits for no disk")
            .unwrap();
        assert_eq!((ids.len(), refused), (2, None));
        drop(next_batch_write(&pending).await);

        // Not completed: answered only once the writer says the jobs are on disk.
        let mut publish = spawn_publish(&store, &jobs);
        let _first = store.take("u").await.unwrap();
        let write = next_batch_write(&pending).await;
        assert_unanswered(
            &mut publish,
            "answered before its jobs were on disk or completed",
        )
        .await;
        write.send(Ok(())).unwrap();
        let (ids, refused) = publish.await.unwrap();
        assert_eq!((ids.len(), refused), (2, None));
        assert!(
            lock(&store.unconfirmed.0).is_empty(),
            "nothing left tracked"
        );
    }

    fn lock_topic_ids(
        store: &DiskStore,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, TopicId>> {
        store.topic_ids.write().unwrap()
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
        let store = DiskStore::open(dir.path(), every, 10).await.unwrap();
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

    /// Runs `total` jobs through a topic of `capacity`, a topic's worth at a time, and returns
    /// the data dir's largest size seen along the way, in bytes.
    async fn largest_size_running_jobs_through(fsync: Fsync, total: u64, capacity: usize) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), fsync, 10).await.unwrap();
        store.create_topic("t", capacity).await.unwrap();
        let file = dir.path().join(DATABASE_FILE);
        let mut largest = 0;
        let mut completed = 0u64;
        while completed < total {
            let batch: Vec<Job> = (0..capacity as i64)
                .map(|x| Pair { x, y: 2 }.into())
                .collect();
            let (ids, refused) = store.publish_many("t", batch, later()).await;
            assert_eq!((ids.len(), refused), (capacity, None));
            for _ in 0..capacity {
                let delivery = store.take("t").await.unwrap();
                store.complete(&delivery).await.unwrap();
            }
            completed += capacity as u64;
            largest = largest.max(std::fs::metadata(&file).unwrap().len());
        }
        let stats = store.stats("t").await.unwrap();
        assert_eq!(
            (stats.completed, stats.ready, stats.in_flight),
            (total, 0, 0)
        );
        largest
    }

    #[tokio::test]
    async fn disk_use_stays_bounded_by_what_is_queued() {
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let largest = largest_size_running_jobs_through(Fsync::Always, 1_000_000, 1_000).await;
        println!(
            "1,000,000 jobs through 1,000: largest {:.1} MiB",
            mib(largest)
        );
        assert!(largest < 4 * 1024 * 1024, "{:.1} MiB", mib(largest));
    }

    #[tokio::test]
    async fn disk_use_stays_bounded_without_a_sync_per_commit_too() {
        // redb reuses the pages that unsynced commits free; were it not to, these would grow
        // with every job.
        for fsync in [Fsync::Never, Fsync::Interval(Duration::from_millis(100))] {
            let largest = largest_size_running_jobs_through(fsync, 200_000, 1_000).await;
            assert!(largest < 4 * 1024 * 1024, "{fsync:?}: {largest} bytes");
        }
    }

    fn jobs_on_disk(db: &redb::Database) -> Vec<JobId> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(JOBS).unwrap();
        table
            .range(..MARKS)
            .unwrap()
            .map(|entry| entry.unwrap().0.value())
            .collect()
    }

    fn change(change: Change) -> Write {
        Write { change, done: None }
    }

    fn jobs(ids: &[JobId]) -> Change {
        let record = |id| {
            to_record(&QueuedJob {
                id,
                job: Pair { x: 1, y: 2 }.into(),
                attempts: 0,
                published_at: UNIX_EPOCH,
            })
        };
        Change::Jobs {
            topic: 0,
            jobs: ids.iter().map(|&id| (id, record(id))).collect(),
        }
    }

    #[test]
    fn a_job_settled_in_the_group_that_publishes_it_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let mut written = Written::default();
        let group = [
            change(jobs(&[1, 2, 3])),
            change(Change::Settled { id: 2 }),
            change(Change::Settled { id: 1 }),
        ];
        commit(&db, &group, true, &mut written).unwrap();
        assert_eq!(jobs_on_disk(&db), vec![3]);
        assert!(written.settled_early.is_empty());
        commit(
            &db,
            &[change(Change::Settled { id: 3 })],
            true,
            &mut written,
        )
        .unwrap();
        assert_eq!(jobs_on_disk(&db), Vec::<JobId>::new());
    }

    #[test]
    fn a_job_settled_before_its_insert_arrives_is_not_written_when_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let mut written = Written::default();
        let group = [change(Change::Settled { id: 7 }), change(jobs(&[5, 7]))];
        commit(&db, &group, true, &mut written).unwrap();
        assert_eq!(jobs_on_disk(&db), vec![5]);
        commit(
            &db,
            &[change(Change::Settled { id: 9 })],
            true,
            &mut written,
        )
        .unwrap();
        commit(&db, &[change(jobs(&[8, 9]))], true, &mut written).unwrap();
        assert_eq!(jobs_on_disk(&db), vec![5, 8]);
        assert!(written.settled_early.is_empty());
    }

    #[test]
    fn the_highest_id_taken_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let mut written = Written::default();
        let taken = |topic, id| change(Change::Taken { topic, id });
        commit(
            &db,
            &[taken(0, 4), taken(0, 9), taken(1, 2)],
            true,
            &mut written,
        )
        .unwrap();
        commit(&db, &[taken(0, 3)], true, &mut written).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(JOBS).unwrap();
        let marks: Vec<(JobId, JobId)> = table
            .range(MARKS..NEXT_ID)
            .unwrap()
            .map(|entry| {
                let (key, id) = entry.unwrap();
                (key.value() - MARKS, mark_from(id.value()).unwrap())
            })
            .collect();
        assert_eq!(marks, vec![(0, 9), (1, 2)]);
        // Ids up to the highest taken, and a reservation beyond, are never given again.
        let reserved = mark_from(table.get(NEXT_ID).unwrap().unwrap().value()).unwrap();
        assert_eq!(reserved, 9 + 1 + ID_RESERVATION);
        assert_eq!(written.reserved.load(Ordering::Acquire), reserved);
    }

    #[test]
    fn a_topic_number_survives_its_encoding() {
        for topic in [0, 1, 127, 128, 300, u32::MAX] {
            let value = with_topic(topic, b"abc");
            assert_eq!(split_topic(&value), Some((topic, &b"abc"[..])));
        }
        assert_eq!(split_topic(&[0x80, 0x80]), None);
    }

    #[test]
    fn the_disk_keeps_no_more_dead_letters_than_the_limit_oldest_dropped_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
        let mut written = Written {
            dead_letter_limit: 2,
            ..Written::default()
        };
        let dead = |id| {
            change(Change::Dead {
                topic: 0,
                id,
                letter: vec![id as u8],
            })
        };
        commit(&db, &[dead(1), dead(2)], true, &mut written).unwrap();
        commit(&db, &[dead(3)], true, &mut written).unwrap();
        commit(&db, &[dead(4), dead(5), dead(6)], true, &mut written).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(DEAD).unwrap();
        let kept: Vec<JobId> = table
            .iter()
            .unwrap()
            .map(|entry| entry.unwrap().0.value())
            .collect();
        assert_eq!(kept, vec![5, 6]);
        assert_eq!(written.dead_letters[&0], VecDeque::from([5, 6]));
    }

    #[tokio::test]
    async fn a_record_under_a_key_that_is_not_its_id_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 10).await.unwrap();
            store
                .publish("t", Pair { x: 1, y: 2 }.into(), later())
                .await
                .unwrap();
        }
        {
            // Job 0's record, copied under key 7.
            let db = redb::Database::create(dir.path().join(DATABASE_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut jobs = txn.open_table(JOBS).unwrap();
                let record = jobs.get(0).unwrap().unwrap().value().to_vec();
                jobs.insert(7, record.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        assert_eq!(
            store.stats("t").await.unwrap().ready,
            1,
            "job 0 once, not twice"
        );
    }

    #[tokio::test]
    async fn a_topic_is_on_disk_before_a_job_can_be_published_to_it() {
        let (store, pending) = store_with_a_stalled_writer().await;
        let store = Arc::new(store);
        let create = tokio::spawn({
            let store = store.clone();
            async move { store.create_topic("t", 10).await }
        });
        let write = loop {
            match pending.try_recv() {
                Ok(Write {
                    change: Change::Topic { .. },
                    done: Some(done),
                }) => break done,
                Ok(_) => {}
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let refused = store
            .publish("t", Pair { x: 1, y: 2 }.into(), later())
            .await;
        assert_eq!(refused, Err(QueueError::NoSuchTopic("t".into())));
        write.send(Ok(())).unwrap();
        assert_eq!(create.await.unwrap(), Ok(TopicCreation::Created));
        assert!(store.has_topic("t").await);
    }

    #[tokio::test]
    async fn a_publish_dropped_while_it_waits_for_room_still_writes_the_jobs_it_queued() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(
                DiskStore::open(dir.path(), Fsync::Always, 10)
                    .await
                    .unwrap(),
            );
            store.create_topic("t", 1).await.unwrap();
            let publish = tokio::spawn({
                let store = store.clone();
                async move {
                    let jobs = vec![Pair { x: 1, y: 2 }.into(), Pair { x: 3, y: 4 }.into()];
                    store.publish_many("t", jobs, later()).await
                }
            });
            // The first job is queued; the second waits for room.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store.stats("t").await.unwrap().ready < 1 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the first job never queued"
                );
                tokio::task::yield_now().await;
            }
            publish.abort();
            assert!(publish.await.unwrap_err().is_cancelled());
            Arc::into_inner(store).expect("the task let go of the store");
        }
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        assert_eq!(store.stats("t").await.unwrap().ready, 1);
    }

    #[tokio::test]
    async fn a_damaged_data_dir_is_refused_with_its_reason() {
        // A file that is not a database at all.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DATABASE_FILE), vec![0x5a; 64 * 1024]).unwrap();
        match DiskStore::open(dir.path(), Fsync::Always, 10).await {
            Err(DiskError::Unusable { reason, .. }) => assert!(reason.contains("invalid data")),
            other => panic!("a file of garbage was opened: {other:?}"),
        }
        // A database that lost its tail after it was written (redb asserts on it).
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 100_000).await.unwrap();
            let (ids, _) = store.publish_many("t", pairs(0, 20_000), later()).await;
            assert_eq!(ids.len(), 20_000);
        }
        let bytes = std::fs::read(dir.path().join(DATABASE_FILE)).unwrap();
        for keep in [bytes.len() / 2, 4096] {
            let cut = tempfile::tempdir().unwrap();
            std::fs::write(cut.path().join(DATABASE_FILE), &bytes[..keep]).unwrap();
            match DiskStore::open(cut.path(), Fsync::Always, 10).await {
                Err(DiskError::Unusable { reason, .. }) => assert!(reason.contains("is damaged")),
                other => panic!("cut to {keep} of {} bytes: {other:?}", bytes.len()),
            }
        }
    }

    fn pairs(from: i64, count: i64) -> Vec<Job> {
        (from..from + count)
            .map(|x| Pair { x, y: 1 }.into())
            .collect()
    }

    #[tokio::test]
    async fn a_commit_torn_by_a_crash_is_dropped_whole_and_the_commits_before_it_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DATABASE_FILE);
        let (before, after) = {
            let store = DiskStore::open(dir.path(), Fsync::Always, 10)
                .await
                .unwrap();
            store.create_topic("t", 100_000).await.unwrap();
            let (ids, _) = store.publish_many("t", pairs(0, 1_000), later()).await;
            assert_eq!(ids.len(), 1_000);
            let before = std::fs::read(&file).unwrap();
            let (ids, _) = store.publish_many("t", pairs(1_000, 5_000), later()).await;
            assert_eq!(ids.len(), 5_000);
            (before, std::fs::read(&file).unwrap())
        };
        // A crash in the second commit's sync: its header reached the disk, its pages did not.
        let mut torn = before;
        torn.resize(after.len(), 0);
        torn[..4096].copy_from_slice(&after[..4096]);
        std::fs::write(&file, &torn).unwrap();
        let store = DiskStore::open(dir.path(), Fsync::Always, 10)
            .await
            .unwrap();
        assert_eq!(
            store.stats("t").await.unwrap().ready,
            1_000,
            "the first commit's jobs, none of the second's"
        );
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
        assert_eq!(
            dead_letter_from(&dead_letter_record(&letter)),
            Some(letter.clone())
        );
        let other = DeadLetter {
            error: JobError::not_written("Multiply", "return x * y"),
            ..letter
        };
        assert_eq!(
            dead_letter_from(&dead_letter_record(&other)),
            Some(other.clone())
        );
        let undeliverable = DeadLetter {
            error: JobError::Undeliverable {
                deliveries: 5,
                reason: "connection reset".into(),
            },
            ..other
        };
        assert_eq!(
            dead_letter_from(&dead_letter_record(&undeliverable)),
            Some(undeliverable)
        );
        assert_eq!(dead_letter_from(&[3, 1, 2]), None);
    }
}
