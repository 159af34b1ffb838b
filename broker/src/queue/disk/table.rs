//! How the disk store lays out its redb database: three tables, and marks kept among the jobs.
//!
//! Bytes already written by a broker must stay readable: change none of this.

use redb::TableDefinition;

use super::super::codec::{put_varint, read_varint};
use super::super::JobId;

/// A topic's number, given in order of creation: stored jobs name their topic by it.
pub type TopicId = u32;

/// Topic name → (its number, its capacity).
pub const TOPICS: TableDefinition<&str, (TopicId, u64)> = TableDefinition::new("topics");
/// Job id → the topic's number (a varint) and the job's record; and, at keys from
/// [`MARKS`] up, two kinds of marks that change with nearly every commit. Kept at the top of
/// the jobs' own key space they sit in the leaf that new jobs dirty anyway: a table of their
/// own would cost a page more to sync per commit.
pub const JOBS: TableDefinition<JobId, &[u8]> = TableDefinition::new("jobs");
/// The first key that is a mark, not a job (ids count up from 0 and never get near it).
/// `MARKS + topic`: the highest job id taken from that topic, as 8 bytes, little-endian.
pub const MARKS: JobId = 1 << 63;
/// Above every id given so far, so that ids are never given twice, even across restarts.
pub const NEXT_ID: JobId = JobId::MAX;
/// Job id → the topic's number (a varint) and the dead letter.
pub const DEAD: TableDefinition<JobId, &[u8]> = TableDefinition::new("dead_letters");

/// The file in the data dir.
pub const DATABASE_FILE: &str = "pairbroker.redb";

/// A stored value: the topic's number as a varint, then `bytes`.
pub fn with_topic(topic: TopicId, bytes: &[u8]) -> Vec<u8> {
    let mut number = [0u8; 5];
    let length = put_varint(u64::from(topic), &mut number);
    let mut value = Vec::with_capacity(length + bytes.len());
    value.extend_from_slice(&number[..length]);
    value.extend_from_slice(bytes);
    value
}

/// Splits a value written by [`with_topic`].
pub fn split_topic(value: &[u8]) -> Option<(TopicId, &[u8])> {
    let mut bytes = value.iter();
    let topic = TopicId::try_from(read_varint(&mut bytes)?).ok()?;
    Some((topic, bytes.as_slice()))
}

/// A mark's value, as [`MARKS`] and [`NEXT_ID`] keep it.
pub fn mark_from(value: &[u8]) -> Option<JobId> {
    Some(JobId::from_le_bytes(value.try_into().ok()?))
}

/// A mark as [`MARKS`] and [`NEXT_ID`] keep it.
pub fn mark(id: JobId) -> [u8; 8] {
    id.to_le_bytes()
}
