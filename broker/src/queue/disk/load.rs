//! Recovery: what a data dir holds, loaded into the queue when the store opens.
//!
//! Every stored job is ready again, in the order of its id. Each topic also keeps the highest id
//! ever taken from it: a stored job at or below that mark had been handed to a factory, so it
//! comes back counted as requeued, and at the head, where ids put it.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::super::codec::{dead_letter_from, from_record};
use super::super::dead_letters::Bounded;
use super::super::{JobId, JobStore, MemoryStore};
use super::table::{mark_from, split_topic, TopicId, DEAD, JOBS, MARKS, NEXT_ID, TOPICS};
use super::writer::text;

/// What a data dir held when it was opened.
#[derive(Default)]
pub struct Loaded {
    pub topic_ids: HashMap<Arc<str>, TopicId>,
    /// Each topic's highest id taken.
    pub taken: HashMap<TopicId, JobId>,
    /// Ids below it were reserved: the next one given is at least this.
    pub reserved: JobId,
    /// Each topic's dead letters, oldest first.
    pub dead_letters: HashMap<TopicId, Bounded<JobId>>,
    /// Dead letters beyond the limit, the oldest of their topic.
    pub stale_dead_letters: Vec<JobId>,
    /// Records that could not be read, left out.
    unreadable: u64,
}

/// Each topic's name, by its number.
type Names = HashMap<TopicId, Arc<str>>;

/// Loads every topic, job and dead letter of `db` into `memory`.
pub async fn load(
    db: &redb::Database,
    memory: &MemoryStore,
    dead_letter_limit: usize,
) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    let txn = db.begin_read().map_err(text)?;
    let topics = match txn.open_table(TOPICS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(loaded),
        Err(error) => return Err(error.to_string()),
    };
    let mut names = Names::new();
    for entry in topics.iter().map_err(text)? {
        let (name, value) = entry.map_err(text)?;
        let (topic, capacity) = value.value();
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let name: Arc<str> = Arc::from(name.value());
        let _ = memory.create_topic(&name, capacity).await;
        names.insert(topic, name.clone());
        loaded.topic_ids.insert(name, topic);
    }
    let (mut jobs, mut requeued) = (0u64, 0u64);
    match txn.open_table(JOBS) {
        Ok(table) => {
            load_marks(&table, memory, &mut loaded)?;
            (jobs, requeued) = load_jobs(&table, &names, memory, &mut loaded)?;
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(error) => return Err(error.to_string()),
    }
    if let Ok(table) = txn.open_table(DEAD) {
        load_dead_letters(&table, &names, memory, dead_letter_limit, &mut loaded)?;
    }
    if loaded.unreadable > 0 {
        tracing::warn!(
            "the data dir holds {} records that cannot be read: they were left out",
            loaded.unreadable
        );
    }
    tracing::info!(
        "loaded the data dir: {} topics and {jobs} jobs, of which {requeued} were in flight and \
         go back to their topics",
        loaded.topic_ids.len()
    );
    Ok(loaded)
}

/// Reads the marks: each topic's highest id taken, and the ids reserved.
fn load_marks(
    table: &redb::ReadOnlyTable<JobId, &[u8]>,
    memory: &MemoryStore,
    loaded: &mut Loaded,
) -> Result<(), String> {
    for entry in table.range(MARKS..).map_err(text)? {
        let (key, value) = entry.map_err(text)?;
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
    Ok(())
}

/// Puts every stored job back in its topic: how many, and how many of them were in flight.
fn load_jobs(
    table: &redb::ReadOnlyTable<JobId, &[u8]>,
    names: &Names,
    memory: &MemoryStore,
    loaded: &mut Loaded,
) -> Result<(u64, u64), String> {
    let (mut jobs, mut requeued) = (0u64, 0u64);
    for entry in table.range(..MARKS).map_err(text)? {
        let (key, value) = entry.map_err(text)?;
        let restored = split_topic(value.value()).and_then(|(topic, record)| {
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
            None => loaded.unreadable += 1,
        }
    }
    Ok((jobs, requeued))
}

/// Puts every stored dead letter back in its topic's list.
fn load_dead_letters(
    table: &redb::ReadOnlyTable<JobId, &[u8]>,
    names: &Names,
    memory: &MemoryStore,
    dead_letter_limit: usize,
    loaded: &mut Loaded,
) -> Result<(), String> {
    let mut letters = Vec::new();
    for entry in table.iter().map_err(text)? {
        let (key, value) = entry.map_err(text)?;
        let read = split_topic(value.value()).and_then(|(topic, letter)| {
            let letter = dead_letter_from(letter).filter(|letter| letter.job_id == key.value())?;
            names.contains_key(&topic).then_some((topic, letter))
        });
        match read {
            Some(read) => letters.push(read),
            None => loaded.unreadable += 1,
        }
    }
    // The table is in the order of job ids; the list is in the order the jobs failed, to
    // the millisecond their letters keep.
    letters.sort_by_key(|(_, letter)| (letter.failed_at_unix_ms, letter.job_id));
    for (topic, letter) in letters {
        let id = letter.job_id;
        match memory.restore_dead_letter(&names[&topic], letter) {
            Ok(()) => {
                let kept = loaded
                    .dead_letters
                    .entry(topic)
                    .or_insert_with(|| Bounded::new(dead_letter_limit));
                loaded.stale_dead_letters.extend(kept.push(id));
            }
            Err(_) => loaded.unreadable += 1,
        }
    }
    Ok(())
}
