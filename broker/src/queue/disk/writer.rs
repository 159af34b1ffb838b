//! The writer thread: applies the store's changes to the database in transactions.
//!
//! The changes that arrive while a transaction commits go into the next one (group commit). A
//! job settled before its transaction began is never written at all.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::super::dead_letters::Bounded;
use super::super::JobId;
use super::table::{mark, with_topic, TopicId, DEAD, JOBS, MARKS, NEXT_ID, TOPICS};
use super::Fsync;

/// How long settlements (completions, takes, dead letters), which nobody waits for, may wait
/// for a publish to share its commit. A crash in this window delivers their jobs again.
const SETTLEMENTS_WAIT: Duration = Duration::from_millis(10);

/// How far ahead of the highest id in use ids are reserved on disk (rewritten once half of
/// it is used): a publish answered because its jobs were completed, before they were written,
/// must not see its ids given again after a crash.
pub(super) const ID_RESERVATION: JobId = 1 << 16;

/// The most changes one transaction carries.
const MAX_GROUP: usize = 4_096;

/// One change to the database.
pub enum Change {
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
pub type Settlements = Arc<Mutex<Vec<Change>>>;

/// A change, and where to say whether it is on disk, for a caller that waits for it.
pub struct Write {
    pub change: Change,
    pub done: Option<oneshot::Sender<Result<(), String>>>,
}

/// An error of redb as the text the store reports.
pub(super) fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// When the writer last synced, and whether it has committed without a sync since.
struct Clock {
    fsync: Fsync,
    last_sync: Instant,
    unsynced: bool,
}

impl Clock {
    /// Whether the next commit is synced.
    fn durable(&self) -> bool {
        match self.fsync {
            Fsync::Always => true,
            Fsync::Never => false,
            Fsync::Interval(every) => self.last_sync.elapsed() >= every,
        }
    }

    fn committed(&mut self, durable: bool) {
        if durable {
            self.synced();
        } else {
            self.unsynced = true;
        }
    }

    fn synced(&mut self) {
        (self.last_sync, self.unsynced) = (Instant::now(), false);
    }
}

/// The writer thread's loop: until the store is dropped, commits what it is sent, and answers.
pub fn write_loop(
    db: redb::Database,
    pending: mpsc::Receiver<Write>,
    settlements: Settlements,
    fsync: Fsync,
    mut written: Written,
) {
    let mut clock = Clock {
        fsync,
        last_sync: Instant::now(),
        unsynced: false,
    };
    while let Some(first) = next_write(&db, &pending, &mut clock) {
        let mut group = gather(first, &pending);
        group.extend(take_settlements(&settlements));
        if group
            .iter()
            .all(|write| write.done.is_none() && matches!(write.change, Change::Settlements))
        {
            // A wake-up whose settlements an earlier commit took: nothing to write.
            continue;
        }
        let durable = clock.durable();
        let result = commit(&db, &group, durable, &mut written).inspect_err(|error| {
            tracing::error!("cannot write to the data dir: {error}");
        });
        clock.committed(durable);
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
            Ok(()) => clock.synced(),
            Err(error) => tracing::error!("cannot write to the data dir: {error}"),
        }
    }
    if clock.unsynced {
        if let Err(error) = sync(&db) {
            tracing::error!("cannot sync the data dir: {error}");
        }
    }
}

/// The next write to commit, syncing meanwhile when an interval is due; `None` once the store
/// is gone.
fn next_write(
    db: &redb::Database,
    pending: &mpsc::Receiver<Write>,
    clock: &mut Clock,
) -> Option<Write> {
    loop {
        let Fsync::Interval(every) = clock.fsync else {
            return pending.recv().ok();
        };
        if !clock.unsynced {
            return pending.recv().ok();
        }
        match pending.recv_timeout(every.saturating_sub(clock.last_sync.elapsed())) {
            Ok(write) => return Some(write),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(error) = sync(db) {
                    tracing::error!("cannot sync the data dir: {error}");
                }
                clock.synced();
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// `first` and the writes that follow it at once, up to [`MAX_GROUP`].
fn gather(first: Write, pending: &mpsc::Receiver<Write>) -> Vec<Write> {
    let settle_by = Instant::now() + SETTLEMENTS_WAIT;
    let mut someone_waits = first.done.is_some();
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        let next = match pending.try_recv() {
            Ok(write) => Some(write),
            Err(mpsc::TryRecvError::Empty) if !someone_waits => {
                // Only settlements so far, which nobody waits for: they wait for a change
                // that somebody does, so that a commit of settlements alone never holds up
                // a publish behind its sync.
                let left = settle_by.saturating_duration_since(Instant::now());
                pending.recv_timeout(left).ok()
            }
            Err(_) => None,
        };
        let Some(write) = next else { break };
        someone_waits |= write.done.is_some();
        group.push(write);
    }
    group
}

/// The settlements handed over so far, as writes nobody waits for.
fn take_settlements(settlements: &Settlements) -> Vec<Write> {
    std::mem::take(&mut *settlements.lock())
        .into_iter()
        .map(|change| Write { change, done: None })
        .collect()
}

/// Makes every commit so far durable: an empty transaction, synced.
pub fn sync(db: &redb::Database) -> Result<(), String> {
    let txn = db.begin_write().map_err(text)?;
    txn.commit().map_err(text)
}

/// What the writer remembers between transactions.
#[derive(Default)]
pub struct Written {
    /// Each topic's highest id taken, as on disk.
    pub taken: HashMap<TopicId, JobId>,
    /// Ids below this are reserved on disk ([`NEXT_ID`]): never given again, even after a
    /// crash. Shared with the store, which answers a publish on completion only below it.
    pub reserved: Arc<AtomicU64>,
    /// Jobs settled before their own insert reached the writer (a publisher whose batch waited
    /// for room part-way): their insert is skipped when it comes.
    pub settled_early: HashSet<JobId>,
    /// Each topic's dead letters on disk, oldest first, as many as memory keeps.
    pub dead_letters: HashMap<TopicId, Bounded<JobId>>,
    /// How many dead letters a topic keeps, on disk as in memory.
    pub dead_letter_limit: usize,
    /// Dead letters found on disk beyond the limit (it was lowered since they were written):
    /// removed by the next commit.
    pub stale_dead_letters: Vec<JobId>,
}

/// What one transaction changes of [`Written`], kept apart until it commits.
struct Changed {
    marks: HashMap<TopicId, JobId>,
    settled_early: HashSet<JobId>,
    dead_letters: HashMap<TopicId, Bounded<JobId>>,
    /// The highest id written or taken.
    highest: Option<JobId>,
    /// The ids reserved anew, if the highest came near the last reservation.
    reservation: Option<JobId>,
}

/// The tables one transaction writes.
struct Tables<'txn> {
    topics: redb::Table<'txn, &'static str, (TopicId, u64)>,
    jobs: redb::Table<'txn, JobId, &'static [u8]>,
    dead: redb::Table<'txn, JobId, &'static [u8]>,
}

/// Writes `group` in one transaction. What the writer remembers changes only once it holds.
pub fn commit(
    db: &redb::Database,
    group: &[Write],
    durable: bool,
    written: &mut Written,
) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(text)?;
    txn.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(text)?;
    let changed = {
        let mut tables = Tables {
            topics: txn.open_table(TOPICS).map_err(text)?,
            jobs: txn.open_table(JOBS).map_err(text)?,
            dead: txn.open_table(DEAD).map_err(text)?,
        };
        let mut changed = apply(group, &mut tables, written)?;
        write_marks(&mut tables, &mut changed, written)?;
        for id in &written.stale_dead_letters {
            tables.dead.remove(id).map_err(text)?;
        }
        changed
    };
    txn.commit().map_err(text)?;
    written.taken.extend(changed.marks);
    written.settled_early = changed.settled_early;
    written.dead_letters.extend(changed.dead_letters);
    written.stale_dead_letters.clear();
    if let Some(reservation) = changed.reservation {
        written.reserved.store(reservation, Ordering::Release);
    }
    Ok(())
}

/// Writes each change of `group`.
fn apply(group: &[Write], tables: &mut Tables, written: &Written) -> Result<Changed, String> {
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
    let mut changed = Changed {
        marks: HashMap::new(),
        settled_early: written.settled_early.clone(),
        dead_letters: HashMap::new(),
        highest: None,
        reservation: None,
    };
    for write in group {
        match &write.change {
            Change::Topic {
                name,
                topic,
                capacity,
            } => {
                tables
                    .topics
                    .insert(&**name, (*topic, *capacity))
                    .map_err(text)?;
            }
            Change::Jobs { topic, jobs } => {
                for (id, record) in jobs {
                    changed.highest = changed.highest.max(Some(*id));
                    if changed.settled_early.remove(id) {
                        continue;
                    }
                    if settled_here.contains(id) {
                        never_written.insert(*id);
                        continue;
                    }
                    tables
                        .jobs
                        .insert(id, with_topic(*topic, record).as_slice())
                        .map_err(text)?;
                }
            }
            Change::Taken { topic, id } => {
                changed.highest = changed.highest.max(Some(*id));
                let mark = changed.marks.entry(*topic).or_default();
                *mark = (*mark).max(*id);
            }
            Change::Settlements => {}
            Change::Settled { id } => {
                forget(*id, tables, &mut never_written, &mut changed)?;
            }
            Change::Dead { topic, id, letter } => {
                forget(*id, tables, &mut never_written, &mut changed)?;
                bury(*topic, *id, letter, tables, &mut changed, written)?;
            }
        }
    }
    Ok(changed)
}

/// Removes a settled job from the table, unless it was never written; remembers one whose
/// insert is still to come.
fn forget(
    id: JobId,
    tables: &mut Tables,
    never_written: &mut HashSet<JobId>,
    changed: &mut Changed,
) -> Result<(), String> {
    if !never_written.remove(&id) && tables.jobs.remove(id).map_err(text)?.is_none() {
        changed.settled_early.insert(id);
    }
    Ok(())
}

/// Keeps a dead letter; the disk keeps as many as memory does, the oldest go first.
fn bury(
    topic: TopicId,
    id: JobId,
    letter: &[u8],
    tables: &mut Tables,
    changed: &mut Changed,
    written: &Written,
) -> Result<(), String> {
    if written.dead_letter_limit == 0 {
        return Ok(());
    }
    let kept = changed.dead_letters.entry(topic).or_insert_with(|| {
        written
            .dead_letters
            .get(&topic)
            .cloned()
            .unwrap_or_else(|| Bounded::new(written.dead_letter_limit))
    });
    tables
        .dead
        .insert(id, with_topic(topic, letter).as_slice())
        .map_err(text)?;
    if let Some(oldest) = kept.push(id) {
        tables.dead.remove(oldest).map_err(text)?;
    }
    Ok(())
}

/// Writes the marks that grew, and a new reservation of ids if the highest id written or taken
/// came near the last one.
fn write_marks(
    tables: &mut Tables,
    changed: &mut Changed,
    written: &Written,
) -> Result<(), String> {
    changed
        .marks
        .retain(|topic, id| written.taken.get(topic).is_none_or(|mark| *id > *mark));
    for (topic, id) in &changed.marks {
        tables
            .jobs
            .insert(MARKS + JobId::from(*topic), mark(*id).as_slice())
            .map_err(text)?;
    }
    let needed = changed
        .highest
        .map(|id| id.saturating_add(1 + ID_RESERVATION / 2));
    changed.reservation = match needed {
        Some(needed) if needed > written.reserved.load(Ordering::Acquire) => {
            let reservation = needed.saturating_add(ID_RESERVATION / 2);
            tables
                .jobs
                .insert(NEXT_ID, mark(reservation).as_slice())
                .map_err(text)?;
            Some(reservation)
        }
        _ => None,
    };
    Ok(())
}
